"""The npu-qnn build's own parity check: the built QDQ pair on the HTP against the float pair it was
quantized from, and the gate that can fail the build."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import VerificationError
from ...verify.metrics import compare_rows, log_softmax
from ...verify.tolerances import DEFAULTS


def tolerance(precision: str, min_top1: float | None = None, max_kl: float | None = None) -> dict[str, float]:
    base = dict(DEFAULTS[precision])
    if min_top1 is not None:
        base["min_top1"] = float(min_top1)
    if max_kl is not None:
        base["max_kl"] = float(max_kl)
    return base


def _stats(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """top-1 agreement, KL(reference || candidate) and logits differences over (candidate, reference) rows."""
    if not pairs:
        return {"positions": 0}
    return compare_rows(pairs).to_dict()


def _nll(logits: np.ndarray, ids: np.ndarray) -> float:
    lp = log_softmax(logits[:-1])
    return -float(lp[np.arange(len(ids) - 1), ids[1:]].sum())


def measure(candidate, reference, sequences: list[np.ndarray], decode_tokens: int = 4) -> dict[str, Any]:
    """One pass per sequence through the candidate: a prefill of all but the last `decode_tokens`
    tokens, then the decode graph token by token; the reference (float, full sequence) once.

    `candidate` has `logits_with_decode(ids, prefill)` (a StaticRunner); `reference` has `logits(ids)`.
    `prefill` scores the prefill rows, `decode` the decode-graph rows, `perplexity` the whole
    sequences (candidate and reference on the same tokens).
    """
    pre, dec = [], []
    nll_c = nll_r = 0.0
    count = 0
    for ids in sequences:
        k = min(decode_tokens, len(ids) - 1)
        cand = candidate.logits_with_decode(ids, len(ids) - k)
        ref = reference.logits(ids)
        pre.append((cand[:len(ids) - k], ref[:len(ids) - k]))
        if k:
            dec.append((cand[len(ids) - k:], ref[len(ids) - k:]))
        nll_c += _nll(cand, ids)
        nll_r += _nll(ref, ids)
        count += len(ids) - 1
    ppl_c, ppl_r = math.exp(nll_c / max(count, 1)), math.exp(nll_r / max(count, 1))
    return {"prefill": _stats(pre), "decode": _stats(dec),
            "perplexity": {"tokens_scored": count, "candidate": ppl_c, "reference": ppl_r,
                           "increase_percent": 100.0 * (ppl_c / ppl_r - 1.0)}}


def gate(report: dict[str, Any], tol: dict[str, float], enforce: bool, where: str) -> str | None:
    """The failure (None when inside tolerance); raises VerificationError when enforced."""
    failure = None
    for path in ("prefill", "decode"):
        r = report[path]
        if not r.get("positions"):
            continue
        if r["top1_agreement"] < tol["min_top1"] or r["kl_divergence_mean"] > tol["max_kl"]:
            failure = (f"{where}: {path} top-1 agreement {r['top1_agreement']:.4f} / KL "
                       f"{r['kl_divergence_mean']:.3g} outside tolerance (min_top1 {tol['min_top1']}, "
                       f"max_kl {tol['max_kl']})")
            break
    if failure and enforce:
        raise VerificationError(failure + " (disable the parity gate to keep the bundle anyway)")
    return failure
