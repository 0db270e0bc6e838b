"""The scale search compiled with numba (see `scale_search` for the method and its numerics).

The numpy form of the search (kept as `tests/quant/search_reference.py`, the reference the tests
compare with) made about 34 passes over a chunk plus dozens of small per-block array operations:
26 to 44 ns per weight on one core of the 2-core dev machine, most of a build's time. Here each
pass fuses what numpy did in four or five operations, the normalised values ``xn = x / s0`` are
recomputed in each pass instead of stored, and the per-block steps are plain loops: 5 to 7 ns per
weight. The passes run over the rows of ``x [block_size, blocks]`` (one column per block) with
per-block accumulators, so they vectorise across blocks without reordering any sum: each block
adds its own elements in order whatever the vector width, and the bytes come out the same on every
machine. Every step computes in the same types and order as the numpy form, and the tests hold the
two to the same bits.

numba compiles on first use (this module is imported only when a search runs: numba's import takes
a few tenths of a second) and caches the machine code on disk (``cache=True``), so only the first
build on a machine pays for the compile. ``w`` is None (every element counts the same; numba drops
the weighted branches when it compiles for None) or float32 like ``x``. Codes are
u = clip(rint(xn * f), lo, hi) with the inverse scale f and the bounds lo, hi per block.
"""

from __future__ import annotations

import numba
import numpy as np

F32 = np.float32
ONE = np.float32(1.0)

# nogil: the quantizer's worker threads run the searches side by side.
_jit = numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")


@_jit
def reciprocal(s, tiny):
    """1 / s computed in float64 and rounded to float32; 0 where |s| < tiny."""
    s64 = np.float64(s)
    if abs(s64) < tiny:
        return F32(0.0)
    return F32(1.0 / s64)


@_jit
def min_max(x):
    bs, nb = x.shape
    lo = x[0].copy()
    hi = x[0].copy()
    for b in range(1, bs):
        for k in range(nb):
            lo[k] = min(lo[k], x[b, k])
            hi[k] = max(hi[k], x[b, k])
    return lo, hi


@_jit
def fit_pass(x, inv0, w, f, lo, hi):
    """suu = sum w u u and sxu = sum w xn u per block (the 4-bit form's sums)."""
    bs, nb = x.shape
    suu = np.zeros(nb, F32)
    sxu = np.zeros(nb, F32)
    for b in range(bs):
        for k in range(nb):
            xn = x[b, k] * inv0[k]
            u = min(max(np.rint(xn * f[k]), lo[k]), hi[k])
            if w is None:
                sxu[k] += xn * u
                suu[k] += u * u
            else:
                sxu[k] += (xn * w[b, k]) * u
                suu[k] += u * u * w[b, k]
    return suu, sxu


@_jit
def residual_pass(x, inv0, w, f, lo, hi):
    """With the rounding residual t = xn f - u: suu = sum w u u, seu = sum w t u and
    stt = sum w t t per block (the 8-bit form, where sum w xn^2 - a sum w xn u would cancel)."""
    bs, nb = x.shape
    suu = np.zeros(nb, F32)
    seu = np.zeros(nb, F32)
    stt = np.zeros(nb, F32)
    for b in range(bs):
        for k in range(nb):
            v = (x[b, k] * inv0[k]) * f[k]
            u = min(max(np.rint(v), lo[k]), hi[k])
            t = v - u
            if w is None:
                suu[k] += u * u
                seu[k] += t * u
                stt[k] += t * t
            else:
                suu[k] += u * u * w[b, k]
                seu[k] += t * u * w[b, k]
                stt[k] += t * t * w[b, k]
    return suu, seu, stt


@_jit
def square_pass(x, inv0, w):
    """sum w xn^2 per block."""
    bs, nb = x.shape
    out = np.zeros(nb, F32)
    for b in range(bs):
        for k in range(nb):
            xn = x[b, k] * inv0[k]
            if w is None:
                out[k] += xn * xn
            else:
                out[k] += xn * (xn * w[b, k])
    return out


@_jit
def error_pass(x, inv0, w, f, a, lo, hi):
    """sum w (xn - a u)^2 per block, computed directly (no cancellation)."""
    bs, nb = x.shape
    err = np.zeros(nb, F32)
    for b in range(bs):
        for k in range(nb):
            xn = x[b, k] * inv0[k]
            u = min(max(np.rint(xn * f[k]), lo[k]), hi[k])
            e = xn - u * a[k]
            if w is None:
                err[k] += e * e
            else:
                err[k] += e * e * w[b, k]
    return err


@_jit
def codes_pass(x, inv0, f, lo, hi, offset, out):
    """out = u + offset as uint8: the stored codes."""
    bs, nb = x.shape
    for b in range(bs):
        for k in range(nb):
            u = min(max(np.rint((x[b, k] * inv0[k]) * f[k]), lo[k]), hi[k])
            out[b, k] = np.uint8(u + offset[k])


@_jit
def candidate(x, inv0, w, sxx, residual, f, lo, hi):
    """(scale, error) per block of the codes at inverse scale f, the scale fitted by weighted least
    squares; blocks whose codes are all zero get scale 1/f and error +inf, so that they never win."""
    nb = f.shape[0]
    a = np.empty(nb, F32)
    err = np.empty(nb, F32)
    if residual:
        suu, seu, stt = residual_pass(x, inv0, w, f, lo, hi)
        for k in range(nb):
            ratio = seu[k] / suu[k] if suu[k] > 0 else F32(0.0)
            a[k] = (ONE + ratio) / f[k]
            err[k] = (stt[k] - ratio * seu[k]) / (f[k] * f[k]) if suu[k] > 0 else F32(np.inf)
    else:
        suu, sxu = fit_pass(x, inv0, w, f, lo, hi)
        for k in range(nb):
            if suu[k] > 0:
                a[k] = sxu[k] / suu[k]
                err[k] = sxx[k] - a[k] * sxu[k]
            else:
                a[k] = ONE / f[k]
                err[k] = F32(np.inf)
    return a, err


@_jit
def refine(x, inv0, w, a, lo, hi, rtn_err, tiny):
    """Re-round at the winning scales, refit them, re-round: (inverse scale, scale, worse) of the
    final codes. The candidate errors can lose their last digits to float32 rounding where a block
    is nearly constant, so where the result's actual error exceeds rtn's, rtn is kept: inverse
    scale and scale 1 (the caller restores rtn's bounds where `worse`)."""
    nb = a.shape[0]
    f = np.empty(nb, F32)
    for k in range(nb):
        f[k] = reciprocal(a[k], tiny)
    suu, sxu = fit_pass(x, inv0, w, f, lo, hi)
    a = a.copy()
    for k in range(nb):
        if suu[k] > 0:
            a[k] = sxu[k] / suu[k]
        f[k] = reciprocal(a[k], tiny)
    err = error_pass(x, inv0, w, f, a, lo, hi)
    worse = err > rtn_err
    for k in range(nb):
        if worse[k]:
            f[k] = ONE
            a[k] = ONE
    return f, a, worse


@_jit
def search_symmetric(x, w, bits, deltas, tiny, codes):
    """Fills codes (uint8 like x); returns the scales (float32 [blocks]). Blocks whose rtn scale is
    below `tiny` (scale_search.TINY_SCALE) are stored as zeros."""
    nb = x.shape[1]
    half = 1 << (bits - 1)
    mn, mx = min_max(x)
    s0 = np.empty(nb, np.float64)
    inv0 = np.empty(nb, F32)
    for k in range(nb):
        lo, hi = np.float64(mn[k]), np.float64(mx[k])
        s = (lo if -lo > hi else hi) / -half  # the largest magnitude -> code 0 (-half)
        s0[k] = s if abs(s) >= tiny else 0.0
        inv0[k] = reciprocal(s0[k], tiny)
    lo = np.full(nb, F32(-half))
    hi = np.full(nb, F32(half - 1))
    ones = np.ones(nb, F32)
    residual = bits > 4
    sxx = ones if residual else square_pass(x, inv0, w)
    rtn_err = error_pass(x, inv0, w, ones, ones, lo, hi)
    best_a, best_err = candidate(x, inv0, w, sxx, residual, ones, lo, hi)
    for delta in deltas:
        a, err = candidate(x, inv0, w, sxx, residual, np.full(nb, F32((half + delta) / half)), lo, hi)
        for k in range(nb):
            if err[k] < best_err[k]:
                best_err[k] = err[k]
                best_a[k] = a[k]
    f, a, _ = refine(x, inv0, w, best_a, lo, hi, rtn_err, tiny)
    codes_pass(x, inv0, f, lo, hi, np.full(nb, F32(half)), codes)
    scales = np.empty(nb, F32)
    for k in range(nb):
        scales[k] = F32(a[k] * s0[k])
    return scales


@_jit
def search_asymmetric(x, w, bits, deltas, tiny, codes):
    """Fills codes (uint8 like x); returns the scales (float32) and zero points (uint8), [blocks]."""
    nb = x.shape[1]
    qmax = (1 << bits) - 1
    mn, mx = min_max(x)
    s0 = np.empty(nb, np.float64)
    inv0 = np.empty(nb, F32)
    lo_n = np.empty(nb, np.float64)
    z0 = np.empty(nb, F32)
    for k in range(nb):
        lo, hi = min(np.float64(mn[k]), 0.0), max(np.float64(mx[k]), 0.0)
        s = (hi - lo) / qmax
        s0[k] = s if s >= tiny else 0.0
        inv0[k] = reciprocal(s0[k], tiny)
        z0[k] = F32(min(max(np.rint(-lo * inv0[k]), 0.0), qmax))
        lo_n[k] = lo * inv0[k]
    fq = F32(qmax)
    lo_b, hi_b = -z0, fq - z0
    ones = np.ones(nb, F32)
    residual = bits > 4
    sxx = ones if residual else square_pass(x, inv0, w)
    rtn_err = error_pass(x, inv0, w, ones, ones, lo_b, hi_b)
    best_a, best_err = candidate(x, inv0, w, sxx, residual, ones, lo_b, hi_b)
    best_z = z0.copy()
    zc = np.empty(nb, F32)
    for delta in deltas:
        f = F32((qmax + delta) / qmax)
        for k in range(nb):
            zc[k] = F32(min(max(np.rint(-lo_n[k] * f), 0.0), qmax))
        a, err = candidate(x, inv0, w, sxx, residual, np.full(nb, f), -zc, fq - zc)
        for k in range(nb):
            if err[k] < best_err[k]:
                best_err[k] = err[k]
                best_a[k] = a[k]
                best_z[k] = zc[k]
    f, a, worse = refine(x, inv0, w, best_a, -best_z, fq - best_z, rtn_err, tiny)
    for k in range(nb):
        if worse[k]:
            best_z[k] = z0[k]
    codes_pass(x, inv0, f, -best_z, fq - best_z, best_z, codes)
    scales = np.empty(nb, F32)
    zero_points = np.empty(nb, np.uint8)
    for k in range(nb):
        scales[k] = F32(a[k] * s0[k])
        zero_points[k] = np.uint8(best_z[k])
    return scales, zero_points
