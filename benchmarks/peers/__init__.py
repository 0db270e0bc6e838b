"""One script per peer tool; each runs in its own process (see common.py)."""
