"""What verification runs a built bundle through.

An executor gives logits for a sequence of token ids, two ways: a full prefill from an empty
cache (`logits`), and through the bundle's cache (`cached_logits`: a prefill, then one token per
step). Every kind of bundle has one (qwen_edge.targets.executors picks it from the manifest):
onnxruntime's, here, for .onnx and .ort bundles; OpenVINO's and the QNN HTP's with their backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from .metrics import compare_logits

LogitsFn = Callable[[np.ndarray], np.ndarray]


class BundleExecutor:
    """Subclasses set `manifest`, `context_length` and `executed_with`, and implement `encode`,
    `logits` and `cached_logits`."""

    manifest: dict[str, Any]
    context_length: int
    executed_with: str  # one line for reports: what ran the bundle here

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def logits(self, ids) -> np.ndarray:
        """Logits [len(ids), vocab] of a full prefill from an empty cache."""
        raise NotImplementedError

    def cached_logits(self, ids, prefill: int) -> np.ndarray:
        """Logits [len(ids), vocab]: a prefill of `prefill` tokens, then one token per step."""
        raise NotImplementedError

    def greedy(self, ids, new_tokens: int) -> list[int]:
        """The greedy continuation of `ids` through the cache (stop tokens not applied)."""
        raise NotImplementedError

    def details(self) -> dict[str, Any]:
        """Extra report fields (where the nodes ran, the backend)."""
        return {}

    def tolerance_overrides(self) -> dict[str, float]:
        """min_top1 / max_kl the bundle was built to (recorded in its manifest), if any."""
        return {}

    def prompt_parity(self, reference: LogitsFn, prompts: list[np.ndarray]) -> dict[str, Any]:
        """`parity`: every prompt through a full prefill; `parity_kv_cache`: again through the cache,
        a prefill of half the prompt, then one token per step."""
        parity = compare_logits(self.logits, reference, prompts)
        cached = compare_logits(lambda ids: self.cached_logits(ids, max(1, len(ids) // 2)), reference, prompts)
        return {"parity": parity.to_dict(), "parity_kv_cache": cached.to_dict()}

    def close(self) -> None:
        pass


def cached_path_logits(model, ids: np.ndarray, prefill: int) -> np.ndarray:
    """Logits through a runtime Model's KV cache: a prefill of `prefill` tokens, then one token per step."""
    ids = model.check_ids(ids)
    cache = model.acquire_cache()
    try:
        mask = np.ones((1, cache.capacity), np.int64)
        rows = [model.step(cache, ids[:prefill], mask)]
        for k in range(prefill, len(ids)):
            rows.append(model.step(cache, ids[k:k + 1], mask))
        return np.concatenate(rows, axis=0)
    finally:
        model.release_cache(cache)


class OnnxRuntimeExecutor(BundleExecutor):
    """A .onnx or .ort bundle in the runtime's Model (onnxruntime's CPU execution provider)."""

    def __init__(self, bundle: Path, threads: int | None = None):
        from ..runtime import Model, RuntimeOptions

        self.model = Model(bundle, RuntimeOptions(intra_op_threads=threads))
        self.manifest = self.model.manifest
        self.context_length = self.model.context_length
        self.executed_with = f"onnxruntime CPUExecutionProvider from {self.manifest['io']['model_file']}"

    def encode(self, text: str) -> np.ndarray:
        return self.model.encode(text)

    def logits(self, ids) -> np.ndarray:
        return self.model.logits(ids)

    def cached_logits(self, ids, prefill: int) -> np.ndarray:
        return cached_path_logits(self.model, ids, prefill)

    def greedy(self, ids, new_tokens: int) -> list[int]:
        model = self.model
        cache = model.acquire_cache()
        try:
            mask = np.ones((1, cache.capacity), np.int64)
            logits = model.step(cache, np.asarray(ids, np.int64), mask)
            out = []
            for _ in range(new_tokens):
                token = int(logits[-1].argmax())
                out.append(token)
                logits = model.step(cache, np.array([token], np.int64), mask)
            return out
        finally:
            model.release_cache(cache)
