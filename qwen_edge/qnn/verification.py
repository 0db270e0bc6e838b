"""`qwen-edge verify` for npu-qnn bundles: the HTP-run bundle against the reference checkpoint.

Same report shape as qwen_edge.verification. Perplexity windows are scored through the prefill
graph in chunks; on the x86 HTP emulator a chunk takes seconds, so callers pick `max_tokens`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..reference import make_reference
from ..verify import Progress, encode_prompts, log_softmax, windows
from .bundle_runner import load_qnn_bundle
from .parity import gate, measure, tolerance


def run_qnn_verification(bundle: Path, reference_dir: Path, *, reference_kind: str = "auto",
                         text_file: Path | None = None, context: int = 1024, max_tokens: int | None = 65536,
                         progress: Progress | None = None, max_ppl_increase: float | None = None,
                         backend: str = "htp", decode_tokens: int = 4) -> dict[str, Any]:
    qb = load_qnn_bundle(bundle, backend=backend)
    ref = make_reference(reference_kind, reference_dir)
    q = qb.manifest["qnn"]["options"]
    tol = tolerance(qb.manifest["precision"]["name"], q.get("min_top1"), q.get("max_kl"))
    prompts = [p[:qb.context_length] for p in encode_prompts(qb.encode) if len(p) >= 2]
    if progress:
        progress("parity", 0, 2)
    t0 = time.perf_counter()
    both = measure(qb.runner, ref, prompts, decode_tokens=decode_tokens)
    if progress:
        progress("parity", 2, 2)
    report: dict[str, Any] = {
        "bundle": str(bundle), "reference": ref.name, "precision": qb.manifest["precision"]["name"],
        "backend": backend, "placement": qb.placement,
        "parity": both["prefill"], "parity_kv_cache": both["decode"], "parity_perplexity": both["perplexity"],
        "tolerance": tol, "seconds": {"parity": round(time.perf_counter() - t0, 2)},
    }
    failure = gate(both, tol, False, Path(bundle).name)
    if text_file is not None:
        if not text_file.is_file():
            raise ConfigError(f"{text_file}: text file not found")
        ids = qb.encode(text_file.read_text(encoding="utf-8", errors="replace"))
        ctx = min(context, qb.context_length)
        text_report, seconds = text_parity(qb.runner.logits, ref.logits, ids, ctx, max_tokens, progress)
        report["seconds"]["text"] = seconds
        report["text_parity"] = {"text": text_file.name, **text_report["parity"]}
        ppl_bundle, ppl_ref = text_report["bundle"], text_report["reference"]
        increase = 100.0 * (ppl_bundle["perplexity"] / ppl_ref["perplexity"] - 1.0)
        report["perplexity"] = {"text": text_file.name, "bundle": ppl_bundle, "reference": ppl_ref,
                                "increase_percent": increase}
        if max_ppl_increase is not None and increase > max_ppl_increase:
            failure = failure or f"perplexity increase {increase:.3f}% exceeds {max_ppl_increase}%"
    report["passed"] = failure is None
    report["failure"] = failure
    ref.close()
    return report


def text_parity(bundle_logits, reference_logits, ids, context: int, max_tokens: int | None,
                progress: Progress | None = None) -> tuple[dict[str, Any], float]:
    """Perplexity of both, and top-1 agreement / KL(reference || bundle), over the same windows.

    One forward of each per window (the HTP emulator is the slow part), accumulated per window
    so memory stays at one window of logits.
    """
    chunks = windows(ids, context, max_tokens)
    nll = {"bundle": 0.0, "reference": 0.0}
    agree, kl_sum, kl_max, count = 0, 0.0, 0.0, 0
    t0 = time.perf_counter()
    for k, chunk in enumerate(chunks):
        if progress:
            progress("text parity", k, len(chunks))
        lp_b = log_softmax(bundle_logits(chunk))
        lp_r = log_softmax(reference_logits(chunk))
        rows, targets = np.arange(len(chunk) - 1), chunk[1:]
        nll["bundle"] -= float(lp_b[rows, targets].sum())
        nll["reference"] -= float(lp_r[rows, targets].sum())
        kl = (np.exp(lp_r) * (lp_r - lp_b)).sum(-1)
        agree += int((lp_b.argmax(-1) == lp_r.argmax(-1)).sum())
        kl_sum += float(kl.sum())
        kl_max = max(kl_max, float(kl.max()))
        count += len(chunk) - 1
    if progress:
        progress("text parity", len(chunks), len(chunks))
    positions = sum(len(c) for c in chunks)
    out = {name: {"tokens_scored": count, "windows": len(chunks), "context": context,
                  "perplexity": math.exp(total / max(count, 1)), "mean_nll": total / max(count, 1)}
           for name, total in nll.items()}
    out["parity"] = {"positions": positions, "windows": len(chunks), "context": context,
                     "top1_agreement": agree / max(positions, 1), "kl_divergence_mean": kl_sum / max(positions, 1),
                     "kl_divergence_max": kl_max}
    return out, round(time.perf_counter() - t0, 2)
