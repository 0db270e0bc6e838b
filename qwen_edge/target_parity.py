"""Parity per target: the CPU bundle's verification (top-1, KL, perplexity against the reference),
run on whatever executes the target here (onnxruntime for .onnx / .ort, openvino for IR).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ConfigError, VerificationError
from .reference import make_reference
from .verify import compare_logits, encode_prompts, perplexity


@dataclass(frozen=True)
class ParityRequest:
    reference_kind: str = "numpy"     # numpy needs no torch; transformers is the real reference
    text_file: Path | None = None     # perplexity text; None = top-1 / KL only
    context: int = 1024
    max_tokens: int | None = 65536
    gate: bool = True                 # False: record the numbers, never fail the build
    threads: int | None = None


def load_executor(bundle: Path, threads: int | None = None):
    """(logits_fn, cached_logits_fn, encode, context_length) for the bundle's model file."""
    from . import manifest as manifest_mod

    manifest = manifest_mod.load(bundle)
    if manifest["io"]["model_file"].endswith(".xml"):
        from .openvino_runner import OpenVINOModel

        model = OpenVINOModel(bundle, threads=threads)
        return model.logits, model.cached_logits, model.encode, model.context_length
    from .runtime import Model, RuntimeOptions
    from .verification import cached_path_logits

    model = Model(bundle, RuntimeOptions(intra_op_threads=threads))
    return (model.logits, lambda ids, prefill: cached_path_logits(model, ids, prefill), model.encode,
            model.context_length)


def run_parity(bundle: Path, checkpoint: Path, tolerance, request: ParityRequest,
               progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    logits, cached, encode, context_length = load_executor(bundle, request.threads)
    ref = make_reference(request.reference_kind, checkpoint)
    try:
        prompts = [p for p in encode_prompts(encode) if len(p) >= 2]
        parity = compare_logits(logits, ref.logits, prompts)
        decode = compare_logits(lambda ids: cached(ids, max(1, len(ids) // 2)), ref.logits, prompts)
        report: dict[str, Any] = {"reference": ref.name, "parity": parity.to_dict(),
                                  "parity_kv_cache": decode.to_dict(), "tolerance": tolerance.to_dict()}
        failures = []
        for label, r in (("prefill", parity), ("KV-cache", decode)):
            if r.top1_agreement < tolerance.min_top1 or r.kl_divergence_mean > tolerance.max_kl:
                failures.append(f"{label} top-1 {r.top1_agreement:.4f} / KL {r.kl_divergence_mean:.3g} outside "
                                f"min_top1 {tolerance.min_top1} / max_kl {tolerance.max_kl}")
        if request.text_file is not None:
            if not Path(request.text_file).is_file():
                raise ConfigError(f"{request.text_file}: text file not found")
            ids = encode(Path(request.text_file).read_text(encoding="utf-8", errors="replace"))
            ctx = min(request.context, context_length)
            mine = perplexity(logits, ids, ctx, request.max_tokens, progress)
            theirs = perplexity(ref.logits, ids, ctx, request.max_tokens, progress)
            increase = 100.0 * (mine.perplexity / theirs.perplexity - 1.0)
            report["perplexity"] = {"text": Path(request.text_file).name, "bundle": mine.to_dict(),
                                    "reference": theirs.to_dict(), "increase_percent": increase}
            limit = tolerance.max_ppl_increase_percent
            if limit is not None and increase > limit:
                failures.append(f"perplexity {mine.perplexity:.4f} is {increase:.2f}% above the reference "
                                f"{theirs.perplexity:.4f} (limit {limit}%)")
    finally:
        ref.close()
    report["passed"] = not failures
    report["failures"] = failures
    report["gated"] = request.gate
    return report


def enforce(report: dict[str, Any], target_name: str) -> None:
    if report["gated"] and not report["passed"]:
        raise VerificationError(f"target '{target_name}': parity outside tolerance: {report['failures'][0]}")


def greedy_tokens_ort(bundle: Path, ids: np.ndarray, new_tokens: int) -> list[int]:
    """Greedy continuation with our onnxruntime Model (works for .onnx and .ort bundles)."""
    from .runtime import Model

    model = Model(bundle)
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
