"""`qwen-edge verify`: a bundle against the reference it was built from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .reference import make_reference
from .verify import Progress, compare_logits, encode_prompts, perplexity

# What "matches" means per storage format when no explicit budget is given.
TOLERANCES = {
    "fp32": {"min_top1": 0.99, "max_kl": 1e-4},
    "fp16": {"min_top1": 0.97, "max_kl": 5e-3},
    "int8": {"min_top1": 0.90, "max_kl": 5e-2},
    "int4": {"min_top1": 0.75, "max_kl": 0.25},
}


def cached_path_logits(model, ids: np.ndarray, prefill: int) -> np.ndarray:
    """Logits through the KV cache: a prefill of `prefill` tokens, then one token per step."""
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


def run_verification(bundle: Path, reference_dir: Path, *, reference_kind: str = "auto",
                     text_file: Path | None = None, context: int = 1024, max_tokens: int | None = 65536,
                     threads: int | None = None, progress: Progress | None = None,
                     max_ppl_increase: float | None = None) -> dict[str, Any]:
    from .runtime import Model, RuntimeOptions

    model = Model(bundle, RuntimeOptions(intra_op_threads=threads))
    ref = make_reference(reference_kind, reference_dir)
    weights = model.manifest["precision"]["weights"]
    dtype = model.manifest["precision"]["dtype"]
    tol = TOLERANCES["fp16" if weights == "float" and dtype == "fp16" else ("fp32" if weights == "float" else weights)]
    prompts = [p for p in encode_prompts(model.encode) if len(p) >= 2]
    if progress:
        progress("parity", 0, 2)
    parity = compare_logits(model.logits, ref.logits, prompts)
    decode = compare_logits(lambda ids: cached_path_logits(model, ids, prefill=max(1, len(ids) // 2)), ref.logits,
                            prompts)
    if progress:
        progress("parity", 2, 2)
    report: dict[str, Any] = {
        "bundle": str(bundle),
        "reference": ref.name,
        "precision": model.manifest["precision"]["name"],
        "parity": parity.to_dict(),
        "parity_kv_cache": decode.to_dict(),
        "tolerance": tol,
    }
    failure = None
    if parity.top1_agreement < tol["min_top1"] or parity.kl_divergence_mean > tol["max_kl"]:
        failure = (f"top-1 agreement {parity.top1_agreement:.4f} / KL {parity.kl_divergence_mean:.3g} outside "
                   f"tolerance {tol}")
    if decode.top1_agreement < tol["min_top1"] or decode.kl_divergence_mean > tol["max_kl"]:
        failure = failure or f"KV-cache path: top-1 {decode.top1_agreement:.4f} / KL {decode.kl_divergence_mean:.3g}"
    if text_file is not None:
        if not text_file.is_file():
            raise ConfigError(f"{text_file}: text file not found")
        text = text_file.read_text(encoding="utf-8", errors="replace")
        ids = model.encode(text)
        ctx = min(context, model.context_length)
        ppl_bundle = perplexity(model.logits, ids, ctx, max_tokens, progress)
        ppl_ref = perplexity(ref.logits, ids, ctx, max_tokens, progress)
        increase = 100.0 * (ppl_bundle.perplexity / ppl_ref.perplexity - 1.0)
        report["perplexity"] = {"text": text_file.name, "bundle": ppl_bundle.to_dict(),
                                "reference": ppl_ref.to_dict(), "increase_percent": increase}
        if max_ppl_increase is not None and increase > max_ppl_increase:
            failure = failure or f"perplexity increase {increase:.3f}% exceeds {max_ppl_increase}%"
    report["passed"] = failure is None
    report["failure"] = failure
    ref.close()
    return report
