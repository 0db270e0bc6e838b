"""A key/value cache that onnxruntime updates in place.

GroupQueryAttention treats a past and present tensor that are the same buffer as a shared
cache of fixed capacity: each step writes only the new positions. We allocate the buffers once
per cache and bind them as both input and output, so no step copies or reallocates the cache.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


class KVCache:
    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, capacity: int, dtype: np.dtype):
        self.capacity = capacity
        self.length = 0
        shape = (1, num_kv_heads, capacity, head_dim)
        self._arrays = [np.zeros(shape, dtype) for _ in range(2 * num_layers)]
        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self._arrays]
        self.num_layers = num_layers

    def bind(self, binding: ort.IOBinding) -> None:
        for i in range(self.num_layers):
            for j, kind in enumerate(("key", "value")):
                value = self.values[2 * i + j]
                binding.bind_ortvalue_input(f"past_key_values.{i}.{kind}", value)
                binding.bind_ortvalue_output(f"present.{i}.{kind}", value)

    def load_prefix(self, presents) -> None:
        """Copy keys and values computed outside the cache (layer-major, key then value) to its start."""
        for array, present in zip(self._arrays, presents):
            array[:, :, :present.shape[2]] = present

    def reset(self) -> None:
        # Positions past `length` are never read (GQA masks by seqlens_k), so no zeroing needed.
        self.length = 0

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays)
