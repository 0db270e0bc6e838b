"""The scale search in numpy, as it was before `qwen_edge.quant.search_kernels` compiled it: the
reference that `test_search_kernels.py` holds the compiled search to, bit for bit.

Every kernel takes a chunk of blocks transposed, ``x`` float32 ``[block_size, blocks]`` (one column
per block), and returns ``(codes uint8 [block_size, blocks], scales float32 [blocks], zero_points
uint8 [blocks] or None)``; ``weight`` is None or float32 like ``x``. See `qwen_edge.quant.scale_search`
for the method and its numerics.
"""

from __future__ import annotations

import numpy as np

# The rtn parameters are the package's own (its rtn kernels use them); only the search is kept here.
from qwen_edge.quant.scale_search import (
    DELTAS,
    _rtn_asymmetric_params,
    _rtn_symmetric_scale,
    _safe_reciprocal,
)


def _dot(a: np.ndarray, b: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    """sum over each block of weight * a * b: float32 [blocks]."""
    if weight is None:
        return np.einsum("bk,bk->k", a, b)
    return np.einsum("bk,bk,bk->k", a, b, weight)


def _safe_div(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """num / den where den > 0 (else 0), and that mask."""
    ok = den > 0
    return np.where(ok, num, 0) / np.where(ok, den, 1), ok


# ----------------------------------------------------------------------------------- symmetric


def search_symmetric(x: np.ndarray, bits: int, weight: np.ndarray | None = None):
    """numpy form of qwen_edge.quant.scale_search.search_symmetric (the algorithm is described there)."""
    half = 1 << (bits - 1)
    lo_code, hi_code = -half, half - 1
    s0 = _rtn_symmetric_scale(x, bits)
    xn = x * _safe_reciprocal(s0)  # the largest element -> -half
    fit = _LeastSquares(xn, weight, bits)
    t = np.empty_like(xn)

    def codes(f, out):
        np.rint(xn if f is None else np.multiply(xn, f, out=out), out=out)
        return np.clip(out, lo_code, hi_code, out=out)

    q0 = codes(None, np.empty_like(xn))  # rtn
    rtn_err = fit.actual_error(q0, 1.0, t)
    best_a, best_err = fit.candidate(q0, np.float32(1), t)
    q = np.empty_like(xn)
    for delta in DELTAS:
        f = np.float32((half + delta) / half)
        a, err = fit.candidate(codes(f, q), f, t)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_a = np.where(better, a, best_a)
    for final in (False, True):
        codes(_safe_reciprocal(best_a), q)
        if final:
            break
        best_a = fit.refit(q, best_a)
    best_a = _keep_rtn_where_worse(fit, q, best_a, q0, rtn_err, t)[0]
    q += half
    return q.astype(np.uint8), (best_a * s0).astype(np.float32), None


# ---------------------------------------------------------------------------------- asymmetric


def search_asymmetric(x: np.ndarray, bits: int, weight: np.ndarray | None = None):
    """numpy form of qwen_edge.quant.scale_search.search_asymmetric (the algorithm, codes relative to the
    zero point included, is described there)."""
    qmax = (1 << bits) - 1
    s0, z0, lo = _rtn_asymmetric_params(x, bits)
    inv0 = _safe_reciprocal(s0)
    xn = x * inv0  # range width qmax
    lo_n = lo * inv0  # in [-qmax, 0]
    fit = _LeastSquares(xn, weight, bits)
    t = np.empty_like(xn)

    def codes(f, z, out):
        np.rint(xn if f is None else np.multiply(xn, f, out=out), out=out)
        np.maximum(out, -z, out=out)  # with array bounds, maximum/minimum are much faster than clip
        return np.minimum(out, qmax - z, out=out)

    z0 = z0.astype(np.float32)
    u0 = codes(None, z0, np.empty_like(xn))  # rtn
    rtn_err = fit.actual_error(u0, 1.0, t)
    best_a, best_err = fit.candidate(u0, np.float32(1), t)
    best_z = z0
    u = np.empty_like(xn)
    for delta in DELTAS:
        f = np.float32((qmax + delta) / qmax)
        zc = np.clip(np.rint(-lo_n * f), 0, qmax).astype(np.float32)
        a, err = fit.candidate(codes(f, zc, u), f, t)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_a = np.where(better, a, best_a)
        best_z = np.where(better, zc, best_z)
    for final in (False, True):
        codes(_safe_reciprocal(best_a), best_z, u)
        if final:
            break
        best_a = fit.refit(u, best_a)
    best_a, worse = _keep_rtn_where_worse(fit, u, best_a, u0, rtn_err, t)
    best_z = np.where(worse, z0, best_z)
    u += best_z
    return u.astype(np.uint8), (best_a * s0).astype(np.float32), best_z.astype(np.uint8)


class _LeastSquares:
    """Weighted least-squares scale fits of codes u to the normalised block values xn (x / s0):
    a minimises sum w (xn - a u)^2. At 4 bits a candidate's error is sum(w xn^2) - a sum(w xn u);
    at 8 bits that difference cancels catastrophically in float32, so it is computed from the
    rounding residual e = xn*f - u (|e| <= 1/2) instead, at two more passes per candidate."""

    def __init__(self, xn: np.ndarray, weight: np.ndarray | None, bits: int):
        self.xn, self.weight = xn, weight
        self.xw = xn if weight is None else xn * weight
        self.residual_form = bits > 4
        self.sxx = None if self.residual_form else _dot(xn, self.xw, None)

    def candidate(self, u: np.ndarray, f: np.float32, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scale, error) per block for codes u = rint(xn * f) (clipped); blocks whose codes are
        all zero get scale 1/f and error +inf, so that they never win. Uses t as scratch."""
        suu = _dot(u, u, self.weight)
        if self.residual_form:
            np.multiply(self.xn, f, out=t)
            t -= u
            seu = _dot(t, u, self.weight)
            ratio, ok = _safe_div(seu, suu)
            err = (_dot(t, t, self.weight) - ratio * seu) / (f * f)
            a = (1 + ratio) / f
        else:
            sxu = _dot(self.xw, u, None)
            a, ok = _safe_div(sxu, suu)
            err = self.sxx - a * sxu
            a = np.where(ok, a, np.float32(1) / f)
        return a, np.where(ok, err, np.float32(np.inf))

    def refit(self, u: np.ndarray, a: np.ndarray) -> np.ndarray:
        new, ok = _safe_div(_dot(self.xw, u, None), _dot(u, u, self.weight))
        return np.where(ok, new, a)

    def actual_error(self, u: np.ndarray, a, t: np.ndarray) -> np.ndarray:
        """sum w (xn - a u)^2 per block, computed directly (no cancellation)."""
        np.multiply(u, a, out=t)
        np.subtract(self.xn, t, out=t)
        return _dot(t, t, self.weight)


def _keep_rtn_where_worse(fit: _LeastSquares, u: np.ndarray, a: np.ndarray, u0: np.ndarray,
                          rtn_err: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The candidate errors can lose their last digits to float32 rounding where a block is
    nearly constant, so compare the result's actual error with rtn's and keep rtn (codes u0,
    scale 1) where the search came out worse. Updates u in place; returns (a, worse)."""
    worse = fit.actual_error(u, a, t) > rtn_err
    if worse.any():
        np.copyto(u, u0, where=worse)
        a = np.where(worse, np.float32(1), a)
    return a, worse
