"""Which cells a CI job runs: `--cell NAME` and `--shard I/N`.

A shard's cells are a pure function of the cell names and N: the names are ordered by the sha256 of
the name and dealt round-robin to the N shards. So every job of a CI matrix computes the same split
without talking to the others, shard sizes differ by at most one, and reordering the entries of
PIPELINE.toml moves no cell. Adding a cell may move others to another shard; with a shared cache
that costs nothing (a moved cell is a cache hit in its new shard).
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Sequence

from ..errors import ConfigError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (1-based, as CI matrices count) -> (I, N)."""
    m = _SHARD.match(text)
    if not m:
        raise ConfigError(f"--shard: expected I/N (for example 2/3), got {text!r}")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ConfigError(f"--shard: {text!r} needs 1 <= I <= N")
    return index, count


def _order(name: str) -> tuple[str, str]:
    return hashlib.sha256(name.encode("utf-8")).hexdigest(), name


def shard_of(names: Iterable[str], count: int) -> dict[str, int]:
    """Each name's shard, 1-based."""
    ordered = sorted(set(names), key=_order)
    return {name: i % count + 1 for i, name in enumerate(ordered)}


def select(names: Sequence[str], cells: Sequence[str] = (), shard: tuple[int, int] | None = None) -> list[str]:
    """The names to run, in their given (matrix) order: those named by `cells` (all when empty), then
    those of `shard`."""
    chosen = list(names)
    if cells:
        unknown = [c for c in cells if c not in names]
        if unknown:
            raise ConfigError(f"--cell: no cell named {unknown[0]!r} (cells: {', '.join(names)})")
        wanted = set(cells)
        chosen = [n for n in chosen if n in wanted]
    if shard is not None:
        index, count = shard
        owner = shard_of(names, count)  # by the whole matrix, so --cell and --shard compose
        chosen = [n for n in chosen if owner[n] == index]
    return chosen
