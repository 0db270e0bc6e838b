"""`qwen-edge verify` for npu-qnn bundles: the HTP-run bundle against the reference checkpoint.

Same report shape as qwen_edge.verification. Perplexity windows are scored through the prefill
graph in chunks; on the x86 HTP emulator a chunk takes seconds, so callers pick `max_tokens`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..reference import make_reference
from ..verify import Progress, encode_prompts, perplexity
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
        t0 = time.perf_counter()
        ppl_bundle = perplexity(qb.runner.logits, ids, ctx, max_tokens, progress)
        report["seconds"]["perplexity_bundle"] = round(time.perf_counter() - t0, 2)
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
