"""Per-block scale / zero-point kernels: round-to-nearest and an error-minimising search.

Every kernel takes a chunk of blocks *transposed*, ``x`` float32 ``[block_size, blocks]``
(one column per block: reductions over axis 0 and per-block broadcasts then run on contiguous
rows, several times faster than over a short last axis, and the compiled loops vectorise across
blocks), and returns ``(codes uint8
[block_size, blocks], scales float32 [blocks], zero_points uint8 [blocks] or None)``. A value is represented as
``(code - zero_point) * scale`` with ``code`` in ``0 .. 2**bits - 1``; the symmetric kernels use
the fixed zero point ``2**(bits-1)`` and return None for it.

``weight`` is None (every element counts the same) or float32 like ``x``, non-negative with
maximum 1: the per-input-channel importance, 0 on the padding past K.

Numerics. The search works in units of the round-to-nearest scale ``s0``, so elements are at
most ``2**bits`` in magnitude whatever the weights' range, and keeps everything in float32.
At 4 bits a candidate's error is ``sum(w x^2) - sum(w x q)^2 / sum(w q^2)``; at 8 bits that
difference would cancel catastrophically in float32, so it is computed from the rounding
residual ``e = x*f - q`` instead (``|e| <= 1/2``), at the price of one more pass per candidate.

The rtn kernels are numpy; the searches run compiled, in `search_kernels` (imported on first use).
"""

from __future__ import annotations

import numpy as np

# A block whose round-to-nearest scale is below this is stored as all zeros (scale 0): its
# largest element is < 2**8 * 1e-37, near float32's smallest normal number (fp16 cannot even
# hold it), and the reciprocal of any larger scale stays finite in float32.
TINY_SCALE = 1e-37

# Candidate stretches of the code range, as codes added at the block's extreme: the candidate
# inverse scale is f = (range + delta) / range times the rtn one. delta > 0 clips the extremes
# to get finer steps, delta < 0 widens the steps. rtn (delta 0) is always the first candidate.
# Each candidate is a pass over the weights, so the grid is short: on qwen2-code-30m's matrices
# (int4, block 32) these two keep 94.3% (asymmetric) and 97.5% (symmetric) of the squared-error
# reduction over rtn of the grid (0, +-0.4, +-1.2), which kept ~95% of an eleven-step grid's.
DELTAS = (-0.8, 0.8)


def _block_min_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-block min and max as float64."""
    return x.min(axis=0).astype(np.float64), x.max(axis=0).astype(np.float64)


def _safe_reciprocal(s: np.ndarray) -> np.ndarray:
    """1 / s as float32, 0 where |s| is below TINY_SCALE (all-zero blocks)."""
    s = np.asarray(s, dtype=np.float64)
    out = np.zeros_like(s)
    np.divide(1.0, s, out=out, where=np.abs(s) >= TINY_SCALE)
    return out.astype(np.float32)


def _round(x: np.ndarray, inv_scale: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = round(x * inv_scale), inv_scale per block."""
    np.multiply(x, inv_scale, out=out)
    return np.rint(out, out=out)


# ----------------------------------------------------------------------------------- symmetric


def _rtn_symmetric_scale(x: np.ndarray, bits: int) -> np.ndarray:
    """llama.cpp Q4_0 style: the signed largest-magnitude element maps to code 0, i.e. to
    -2**(bits-1) times the scale, so the whole range -2**(bits-1) .. 2**(bits-1)-1 is used; the
    scale is negative when that element is positive. float64 [blocks]."""
    lo, hi = _block_min_max(x)
    m = np.where(-lo > hi, lo, hi)
    s = m / -(1 << (bits - 1))
    s[np.abs(s) < TINY_SCALE] = 0.0
    return s


def rtn_symmetric(x: np.ndarray, bits: int, weight: np.ndarray | None = None):
    half = 1 << (bits - 1)
    s = _rtn_symmetric_scale(x, bits)
    q = _round(x, _safe_reciprocal(s), np.empty_like(x))
    np.clip(q, -half, half - 1, out=q)
    q += half
    return q.astype(np.uint8), s.astype(np.float32), None


def search_symmetric(x: np.ndarray, bits: int, weight: np.ndarray | None = None):
    """Grid search of the scale around amax / 2**(bits-1) (llama.cpp make_qx_quants): each
    candidate's codes get a weighted least-squares scale and the least weighted squared error
    wins; then the codes are re-rounded, the scale refit and the codes re-rounded once more.
    Candidate 0 is rtn and every step can only lower the error; a final guard keeps rtn in any
    block where float32 rounding made that untrue, so the result is never worse than rtn."""
    from .search_kernels import search_symmetric as kernel

    codes = np.empty(x.shape, np.uint8)
    scales = kernel(np.ascontiguousarray(x, np.float32), weight, bits, np.array(DELTAS), TINY_SCALE, codes)
    return codes, scales, None


# ---------------------------------------------------------------------------------- asymmetric


def _rtn_asymmetric_params(x: np.ndarray, bits: int):
    """Range [min(lo, 0), max(hi, 0)] in 2**bits - 1 steps with an integer zero point (so that
    0 is exact). Returns float64 scale, zero point and range minimum, each [blocks]."""
    qmax = (1 << bits) - 1
    lo, hi = _block_min_max(x)
    lo = np.minimum(lo, 0.0)
    hi = np.maximum(hi, 0.0)
    s = (hi - lo) / qmax
    s[s < TINY_SCALE] = 0.0
    z = np.clip(np.rint(-lo * _safe_reciprocal(s)), 0, qmax)
    return s, z, lo


def rtn_asymmetric(x: np.ndarray, bits: int, weight: np.ndarray | None = None):
    qmax = (1 << bits) - 1
    s, z, _ = _rtn_asymmetric_params(x, bits)
    q = _round(x, _safe_reciprocal(s), np.empty_like(x))
    q += z.astype(np.float32)
    np.clip(q, 0, qmax, out=q)
    return q.astype(np.uint8), s.astype(np.float32), z.astype(np.uint8)


def search_asymmetric(x: np.ndarray, bits: int, weight: np.ndarray | None = None):
    """make_qkx2_quants-style search with an integer zero point: for each candidate inverse
    scale the zero point and the codes are rounded, the scale is refit by weighted least
    squares on those codes and the least weighted squared error wins; then re-round, refit the
    scale (zero point kept) and re-round. Candidate 0 is rtn, every step can only lower the
    error, and a final guard keeps rtn wherever float32 rounding made that untrue. (Refitting
    the zero point by least squares as well was measured to gain nothing once it has to be
    rounded to an integer again.) The codes are fitted relative to the zero point,
    u = code - z = clip(rint(x*f), -z, qmax-z), so the fit needs no per-block code sums."""
    from .search_kernels import search_asymmetric as kernel

    codes = np.empty(x.shape, np.uint8)
    scales, zero_points = kernel(np.ascontiguousarray(x, np.float32), weight, bits, np.array(DELTAS), TINY_SCALE,
                                 codes)
    return codes, scales, zero_points


KERNELS = {
    ("rtn", True): rtn_symmetric,
    ("rtn", False): rtn_asymmetric,
    ("search", True): search_symmetric,
    ("search", False): search_asymmetric,
}
