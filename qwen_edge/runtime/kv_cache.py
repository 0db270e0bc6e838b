"""Per-sequence caches that onnxruntime updates in place.

GroupQueryAttention treats a past and present tensor that are the same buffer as a shared
cache of fixed capacity: each step writes only the new positions. A hybrid decoder's
linear-attention layers keep instead a fixed-size convolution state and recurrent state, which
their operators read whole and then overwrite (they may alias too). We allocate every buffer once
per cache and bind it as both input and output, so no step copies or reallocates the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

_DTYPES = {"fp32": np.float32, "fp16": np.float16}


@dataclass(frozen=True)
class CacheLayout:
    """Which layers have a key/value cache and which a state, from the manifest's `io` section."""

    num_kv_heads: int
    head_dim: int
    kv_dtype: Any
    kv_layers: tuple[int, ...]
    state_layers: tuple[int, ...] = ()
    states: tuple[tuple[str, tuple[int, ...], Any], ...] = ()  # (kind, shape without batch, dtype)

    @classmethod
    def from_io(cls, io: dict[str, Any]) -> "CacheLayout":
        kv_layers = tuple(io.get("kv_layers", range(int(io["num_layers"]))))
        states = tuple((kind, tuple(s["shape"]), _DTYPES[s["dtype"]]) for kind, s in io.get("states", {}).items())
        return cls(int(io["num_kv_heads"]), int(io["head_dim"]), _DTYPES[io["kv_dtype"]], kv_layers,
                   tuple(io.get("state_layers", ())), states)

    def pairs(self) -> list[tuple[str, str]]:
        """(input, output) names of every cache, in the graph's output order."""
        out = [(f"past_key_values.{i}.{kind}", f"present.{i}.{kind}") for i in self.kv_layers
               for kind in ("key", "value")]
        return out + [(f"past.{i}.{kind}", f"present.{i}.{kind}") for i in self.state_layers
                      for kind, _, _ in self.states]

    def first_call_feeds(self) -> dict[str, np.ndarray]:
        """The cache inputs of a call that starts a sequence: empty key/values, zero states."""
        empty = np.zeros((1, self.num_kv_heads, 0, self.head_dim), self.kv_dtype)
        feeds = {f"past_key_values.{i}.{kind}": empty for i in self.kv_layers for kind in ("key", "value")}
        for kind, shape, dtype in self.states:
            zeros = np.zeros((1, *shape), dtype)
            feeds |= {f"past.{i}.{kind}": zeros for i in self.state_layers}
        return feeds


class KVCache:
    def __init__(self, layout: CacheLayout, capacity: int, spare_rows: int = 0):
        self.capacity = capacity  # tokens it holds; its key/value buffers hold `spare_rows` positions more
        self.length = 0
        self.position_delta = 0  # M-RoPE decoders: a token's position is its index + this (set at prefill)
        shape = (1, layout.num_kv_heads, capacity + spare_rows, layout.head_dim)
        self._names = layout.pairs()
        self._num_kv = 2 * len(layout.kv_layers)
        self._arrays = [np.zeros(shape, layout.kv_dtype) for _ in range(self._num_kv)]
        self._states = [np.zeros((1, *shape), dtype) for _ in layout.state_layers for _, shape, dtype in layout.states]
        self._arrays += self._states
        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self._arrays]

    def bind(self, binding: ort.IOBinding) -> None:
        for (past, present), value in zip(self._names, self.values):
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)

    def load_prefix(self, presents) -> None:
        """Copy caches computed outside this one (in output order) to its start."""
        for k, (array, present) in enumerate(zip(self._arrays, presents)):
            if k < self._num_kv:
                array[:, :, :present.shape[2]] = present  # key/value: the prefix of the capacity
            else:
                array[...] = present  # a state: whole

    @property
    def has_states(self) -> bool:
        return bool(self._states)

    def state_arrays(self) -> list[np.ndarray]:
        """The linear-attention state buffers (bound in place), for a copy before a pass that may be undone."""
        return list(self._states)

    def reset(self) -> None:
        # Key/value positions past `length` are never read (GQA masks by seqlens_k); states are read whole.
        self.length = 0
        self.position_delta = 0
        for state in self._states:
            state.fill(0)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays)
