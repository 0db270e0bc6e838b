"""qwen-edge: Qwen checkpoints to verified, self-contained edge bundles.

This package root stays import-light on purpose: `qwen_edge.runtime` is imported in apps
that ship only onnxruntime, numpy, tokenizers and jinja2, and importing it imports this file.
"""

__version__ = "0.1.0"
