"""The decoder graphs' inputs and outputs, as the manifest records them and as a first call feeds them."""

from __future__ import annotations

from typing import Any

import numpy as np

STATE_KINDS = ("conv", "recurrent")


def io_names(spec) -> dict[str, list[str]]:
    """Input and output names in the graph's order (caches in and out, layer by layer)."""
    past = [f"past_key_values.{i}.{kind}" for i in spec.kv_layers for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in spec.kv_layers for kind in ("key", "value")]
    if spec.hybrid is not None:
        past += [f"past.{i}.{kind}" for i in spec.hybrid.linear_layers for kind in STATE_KINDS]
        present += [f"present.{i}.{kind}" for i in spec.hybrid.linear_layers for kind in STATE_KINDS]
    return {"inputs": ["input_ids", "attention_mask", *past], "outputs": ["logits", *present]}


def state_shapes(spec, kv_dtype: str) -> dict[str, dict[str, Any]]:
    """A hybrid decoder's per-layer states (batch axis left out): shape and storage type."""
    lin = spec.hybrid.linear
    return {"conv": {"shape": [lin.conv_dim, lin.conv_kernel - 1], "dtype": kv_dtype},
            "recurrent": {"shape": [lin.num_value_heads, lin.key_head_dim, lin.value_head_dim], "dtype": "fp32"}}


def cache_io(spec, kv_dtype: str) -> dict[str, Any]:
    """The manifest `io` keys that describe the caches (the runtime allocates from them)."""
    io: dict[str, Any] = io_names(spec)
    if spec.hybrid is not None:  # classic decoders keep the keys they always had: a cache in every layer
        io["kv_layers"] = list(spec.kv_layers)
        io["state_layers"] = list(spec.hybrid.linear_layers)
        io["states"] = state_shapes(spec, kv_dtype)
    return io


def spare_row_io(options) -> dict[str, Any]:
    """The manifest `io` key of a decoder built with DecoderOptions.exact_speculation: its attention writes one
    position past the tokens it is given, so the runtime keeps that many positions of every key/value buffer
    beyond the context it uses."""
    return {"attention_spare_rows": 1} if options.exact_speculation else {}


_DTYPES = {"fp32": np.float32, "fp16": np.float16}


def empty_feeds(spec, kv_dtype: str, length: int) -> dict[str, np.ndarray]:
    """Feeds for a first call of `length` tokens (zeros): empty caches, zero states."""
    feeds: dict[str, np.ndarray] = {"input_ids": np.zeros((1, length), np.int64),
                                    "attention_mask": np.ones((1, length), np.int64)}
    empty = np.zeros((1, spec.num_kv_heads, 0, spec.head_dim), _DTYPES[kv_dtype])
    for i in spec.kv_layers:
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = empty
    if spec.hybrid is not None:
        for kind, state in state_shapes(spec, kv_dtype).items():
            zeros = np.zeros((1, *state["shape"]), _DTYPES[state["dtype"]])
            for i in spec.hybrid.linear_layers:
                feeds[f"past.{i}.{kind}"] = zeros
    return feeds
