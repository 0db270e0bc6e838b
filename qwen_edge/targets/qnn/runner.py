"""Runs a static prefill/decode pair: fixed-size KV cache, chunked prefill, one-token decode.

The graphs return only the new keys/values; the runner writes them into its cache at the
sequence's position and builds the additive attention mask. Prompts that do not fit in the
static context raise ContextOverflowError before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...runtime.errors import ContextOverflowError, InvalidRequestError

# The additive attention mask's value for hidden positions: exp(-80) vanishes, and a small range keeps
# the 16-bit QDQ grid of the mask input precise.
MASK_VALUE = -80.0


@dataclass(frozen=True)
class StaticGeometry:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    context: int
    chunk: int

    @classmethod
    def from_manifest(cls, manifest: dict) -> "StaticGeometry":
        io = manifest["io"]
        return cls(int(io["num_layers"]), int(io["num_kv_heads"]), int(io["head_dim"]), int(io["vocab_size"]),
                   int(io["context_length"]), int(io["prefill_chunk"]))


class StaticCache:
    def __init__(self, geo: StaticGeometry):
        shape_k = (1, geo.num_kv_heads, geo.head_dim, geo.context)
        shape_v = (1, geo.num_kv_heads, geo.context, geo.head_dim)
        self.keys = [np.zeros(shape_k, np.float32) for _ in range(geo.num_layers)]
        self.values = [np.zeros(shape_v, np.float32) for _ in range(geo.num_layers)]
        self.length = 0


class StaticRunner:
    """`prefill` and `decode` are callables `feeds -> {name: array}` (an onnxruntime session's run)."""

    def __init__(self, geo: StaticGeometry, prefill: Callable[[dict], dict], decode: Callable[[dict], dict]):
        self.geo = geo
        self._graphs = {geo.chunk: prefill, 1: decode}
        self.calls = {"prefill": 0, "decode": 0}

    def graph(self, tokens: int) -> Callable[[dict], dict]:
        """The callable that runs the graph of `tokens` tokens (the chunk, or 1 for decode)."""
        return self._graphs[tokens]

    def new_cache(self) -> StaticCache:
        return StaticCache(self.geo)

    def check_ids(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.size == 0:
            raise InvalidRequestError("input ids must be a non-empty 1-D sequence")
        if ids.dtype.kind not in "iu":
            raise InvalidRequestError(f"input ids must be integers, got dtype {ids.dtype}")
        bad = (ids < 0) | (ids >= self.geo.vocab_size)
        if bad.any():
            raise InvalidRequestError(f"token id {int(ids[bad][0])} at position {int(np.argmax(bad))} is outside "
                                      f"the vocabulary [0, {self.geo.vocab_size})")
        return ids.astype(np.int32)

    def _mask(self, start: int, n: int, tokens: int) -> np.ndarray:
        S = self.geo.context
        mask = np.full((1, 1, tokens, S + tokens), MASK_VALUE, np.float32)
        mask[0, 0, :, :start] = 0.0
        rows = np.arange(tokens)
        causal = rows[None, :] <= rows[:, None]
        causal[n:, :] = np.eye(tokens, dtype=bool)[n:, :]  # padding rows see only themselves
        mask[0, 0, :, S:][causal] = 0.0
        return mask

    def _call(self, cache: StaticCache, ids: np.ndarray, tokens: int) -> np.ndarray:
        n, start = len(ids), cache.length
        padded = np.zeros((1, tokens), np.int32)
        padded[0, :n] = ids
        positions = np.minimum(np.arange(start, start + tokens), self.geo.context - 1).astype(np.int32)[None]
        feeds = {"input_ids": padded, "position_ids": positions, "attention_mask": self._mask(start, n, tokens)}
        for i in range(self.geo.num_layers):
            feeds[f"past_key.{i}"] = cache.keys[i]
            feeds[f"past_value.{i}"] = cache.values[i]
        out = self._graphs[tokens](feeds)
        self.calls["decode" if tokens == 1 and self.geo.chunk != 1 else "prefill"] += 1
        for i in range(self.geo.num_layers):
            cache.keys[i][..., start:start + n] = out[f"new_key.{i}"][..., :n]
            cache.values[i][:, :, start:start + n] = out[f"new_value.{i}"][:, :, :n]
        cache.length = start + n
        return out["logits"][0, :n]

    def step(self, cache: StaticCache, ids) -> np.ndarray:
        """Logits [len(ids), vocab] for `ids` after the cache's contents (decode graph for one token)."""
        ids = self.check_ids(ids)
        total = cache.length + len(ids)
        if total > self.geo.context:
            raise ContextOverflowError(f"sequence of {total} tokens exceeds the bundle's static context of "
                                       f"{self.geo.context} tokens (npu-qnn graphs have fixed shapes)",
                                       n_prompt_tokens=total, n_ctx=self.geo.context)
        if len(ids) == 1:
            return self._call(cache, ids, 1)
        rows = [self._call(cache, ids[k:k + self.geo.chunk], self.geo.chunk) for k in range(0, len(ids), self.geo.chunk)]
        return np.concatenate(rows, axis=0)

    def logits(self, ids) -> np.ndarray:
        """Logits for every position of one sequence from an empty cache (prefill chunks only)."""
        return self.step(self.new_cache(), ids)

    def logits_with_decode(self, ids, prefill: int) -> np.ndarray:
        """A prefill of `prefill` tokens, then the decode graph one token at a time."""
        ids = self.check_ids(ids)
        cache = self.new_cache()
        rows = [self.step(cache, ids[:prefill])]
        rows += [self.step(cache, ids[k:k + 1]) for k in range(prefill, len(ids))]
        return np.concatenate(rows, axis=0)

    def generate(self, ids, max_new_tokens: int, eos_token_ids: tuple[int, ...] = ()) -> list[int]:
        """Greedy continuation (for smoke tests and the CLI)."""
        ids = self.check_ids(ids)
        if len(ids) + max_new_tokens > self.geo.context:
            raise ContextOverflowError(f"prompt of {len(ids)} tokens plus {max_new_tokens} new tokens exceeds the "
                                       f"bundle's static context of {self.geo.context} tokens",
                                       n_prompt_tokens=len(ids), n_ctx=self.geo.context)
        cache = self.new_cache()
        logits = self.step(cache, ids)[-1]
        out: list[int] = []
        for _ in range(max_new_tokens):
            token = int(np.argmax(logits))
            out.append(token)
            if token in eos_token_ids:
                break
            logits = self.step(cache, [token])[-1]
        return out


def session_runner(session) -> Callable[[dict], dict]:
    names = [o.name for o in session.get_outputs()]

    def run(feeds: dict) -> dict:
        return dict(zip(names, session.run(names, feeds)))

    return run
