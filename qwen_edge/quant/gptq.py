"""GPTQ in numpy: column-by-column rounding with second-order error feedback (Frantar et al.).

For a linear layer y = x @ W.T with calibration inputs X, the objective is ||X W.T - X Q.T||^2,
i.e. a quadratic form in each row of W with Hessian H = X^T X. Columns (input channels) are
quantized in order; the rounding error of each one is spread over the columns not yet quantized
through the upper Cholesky factor of H^-1. Block scales and zero points are fitted per group of
`block_size` columns when the group is reached, on the weights as updated so far, with the
error-minimising search (importance = diag(H) of the group), so the grid matches MatMulNBits'.
"""

from __future__ import annotations

import numpy as np

from ..errors import QuantizationError
from .blockwise import BlockQuantized, QuantSpec, pack_codes
from .scale_search import KERNELS

# Dampening added to H's diagonal, as a fraction of its mean (the reference implementation's 1%).
DEFAULT_DAMP = 0.01
# Columns updated together before the lazy batch update of the remaining ones.
_COLUMN_BLOCK = 128


def _inverse_cholesky_upper(h: np.ndarray, name: str) -> np.ndarray:
    """Upper Cholesky factor U of H^-1 (H^-1 = U^T U), in float64."""
    try:
        lower = np.linalg.cholesky(h)
        inv = np.linalg.inv(lower)
        h_inv = inv.T @ inv
        return np.linalg.cholesky(h_inv).T
    except np.linalg.LinAlgError as exc:
        raise QuantizationError(f"tensor '{name}': GPTQ Hessian is not positive definite ({exc})") from None


def gptq_quantize(w: np.ndarray, hessian: np.ndarray, spec: QuantSpec, *, name: str = "",
                  damp: float = DEFAULT_DAMP) -> BlockQuantized:
    """Quantize w [n, k] (HF [out, in] layout) against the input Hessian [k, k] (X^T X / tokens)."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or not np.isfinite(w).all():
        raise QuantizationError(f"tensor '{name}': GPTQ needs a finite 2-D matrix, got shape {w.shape}")
    n, k = w.shape
    h = np.asarray(hessian, dtype=np.float64)
    if h.shape != (k, k) or not np.isfinite(h).all():
        raise QuantizationError(f"tensor '{name}': Hessian has shape {h.shape}, expected ({k}, {k})")
    bs, bits, qmax = spec.block_size, spec.bits, spec.qmax
    kb = -(-k // bs)
    k_pad = kb * bs
    # Pad K to whole blocks: zero weights, unit Hessian (they cost nothing and store the zero point).
    wp = np.zeros((n, k_pad))
    wp[:, :k] = w
    hp = np.eye(k_pad)
    hp[:k, :k] = h
    diag = np.diag(hp).copy()
    dead = diag <= 0
    hp[dead, dead] = 1.0
    wp[:, dead] = 0.0
    hp[np.diag_indices(k_pad)] += damp * float(np.mean(np.diag(hp)))
    importance = np.where(dead, 0.0, np.diag(hp))
    importance[k:] = 0.0
    u = _inverse_cholesky_upper(hp, name)

    kernel = KERNELS[("search" if spec.method != "rtn" else "rtn", spec.symmetric)]
    codes = np.empty((n, k_pad), np.uint8)
    scales = np.empty((n, kb), np.float32)
    zeros = np.empty((n, kb), np.uint8)
    zero_default = spec.default_zero_point
    for c0 in range(0, k_pad, _COLUMN_BLOCK):
        c1 = min(k_pad, c0 + _COLUMN_BLOCK)
        block = wp[:, c0:c1].copy()
        errors = np.zeros_like(block)
        u_block = u[c0:c1, c0:c1]
        for j in range(c1 - c0):
            col = c0 + j
            if col % bs == 0:
                g = col // bs
                group = block[:, j:j + bs].T.astype(np.float32)  # [bs, n]: one kernel column per row
                imp = importance[col:col + bs]
                weight = None
                if spec.method != "rtn" and imp.max() > 0:
                    weight = np.ascontiguousarray(np.repeat((imp / imp.max())[:, None], n, axis=1), np.float32)
                _, s, z = kernel(np.ascontiguousarray(group), bits, weight)
                scales[:, g] = s
                zeros[:, g] = zero_default if z is None else z
                scale = s.astype(np.float64)
                inv_scale = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
                zero = zeros[:, g].astype(np.float64)
            x = block[:, j]
            q = np.clip(np.rint(x * inv_scale) + zero, 0, qmax)
            codes[:, col] = q
            deq = (q - zero) * scale
            err = (x - deq) / u_block[j, j]
            block[:, j:] -= np.outer(err, u_block[j, j:])
            errors[:, j] = err
        wp[:, c1:] -= errors @ u[c0:c1, c1:]

    packed = pack_codes(codes.reshape(n, kb, bs), bits)
    zero_points = None if spec.symmetric else pack_codes(zeros, bits)
    return BlockQuantized(n=n, k=k, spec=spec, packed=packed, scales=scales, zero_points=zero_points, name=name)
