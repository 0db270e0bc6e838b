"""Block-wise weight quantization in numpy, laid out for onnxruntime's com.microsoft kernels.

Facts checked by experiment against onnxruntime 1.32 (CPU provider; tests/quant/test_blockwise.py
keeps checking them):

MatMulNBits (com.microsoft, since 1): Y = A @ dequant(B).T, A [..., K] float32/float16.
  * attributes K, N, bits, block_size (power of two >= 16; 16..256 run), accuracy_level
    (0 = compute in A's type: matches A @ dequant(B).T to ~1e-6 relative; 4 = quantize A to
    int8 per block inside: ~7e-3 relative error on random data).
  * B: uint8 [N, k_blocks, block_size * bits / 8], k_blocks = ceil(K / block_size). Codes run
    along K; for 4 bits element 2i is the LOW nibble and 2i+1 the HIGH nibble of byte i.
    When K is not a multiple of block_size the last block is padded; codes past K are ignored
    (we store the zero point there, i.e. the value 0).
  * scales: [N, k_blocks] (a flat [N * k_blocks] is accepted too) in A's type; any sign works.
  * zero_points (optional): uint8 packed like B along k_blocks, i.e. [N, ceil(k_blocks/2)] for
    4 bits (low nibble first, the spare nibble of an odd count is 0) and [N, k_blocks] for 8 bits.
    A float zero point of A's type, [N, k_blocks], works too (unused here). Without it the
    zero point is 2**(bits-1) (8 for 4 bits, 128 for 8 bits).
  * bits=8 IS supported by the CPU provider (accuracy_level 0 and 4, with and without zero points).
  * dequant = (code - zero_point) * scale.

GatherBlockQuantized (com.microsoft, since 1) with uint8 data, gather_axis=0, quantize_axis=1:
  * data: uint8 [n, k * bits / 8], codes packed along k exactly like B (low nibble first) but
    NOT padded per block: the output width is data.shape[1] * 8 / bits, so a padded table would
    silently return padded rows. An odd k cannot be expressed with bits=4.
  * scales: [n, ceil(k / block_size)] in the output type (float32 or float16).
  * zero_points (optional): uint8, packed like MatMulNBits' ([n, ceil(k_blocks/2)] for 4 bits,
    [n, k_blocks] for 8 bits); an unpacked [n, k_blocks] uint8 tensor is rejected for 4 bits.
  * default zero point when absent (uint8 data): 2**(bits-1), i.e. 8 for 4 bits, 128 for 8 bits,
    the same as MatMulNBits. (The schema gives 0 for int4/uint4-*typed* data, unused here.)
  * out-of-range indices give zero rows (no error); negative indices count from the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import QuantizationError
from ..worker_threads import usable_cpus, worker_pool
from .scale_search import KERNELS

SUPPORTED_BITS = (4, 8)
MIN_BLOCK_SIZE = 16
MAX_BLOCK_SIZE = 256
METHODS = ("rtn", "search")

# Row chunks hold about this many elements (float32): large enough that numpy's per-call cost
# vanishes, small enough that the search's working set (a few arrays per thread) stays in cache.
_CHUNK_ELEMENTS = 1 << 18
# Weights beyond this magnitude are refused: a block's scaled codes would risk overflowing
# float32 on dequantization, and no real checkpoint comes near it.
MAX_ABS_WEIGHT = 1e30


def _label(name: str) -> str:
    return f"tensor '{name}'" if name else "tensor"


@dataclass(frozen=True)
class QuantSpec:
    """How one matrix is quantized: bits, block size along K, zero points or not, and method."""

    bits: int
    block_size: int
    symmetric: bool
    method: str = "rtn"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) \
                or self.bits not in SUPPORTED_BITS:
            raise QuantizationError(f"quant spec: bits {self.bits!r} is not one of {SUPPORTED_BITS}")
        bs = self.block_size
        if isinstance(bs, bool) or not isinstance(bs, (int, np.integer)) or bs < MIN_BLOCK_SIZE \
                or bs > MAX_BLOCK_SIZE or bs & (bs - 1):
            raise QuantizationError(
                f"quant spec: block_size {bs!r} is not a power of two in {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}")
        if not isinstance(self.symmetric, (bool, np.bool_)):
            raise QuantizationError(f"quant spec: symmetric {self.symmetric!r} is not a bool")
        if self.method not in METHODS:
            raise QuantizationError(f"quant spec: method {self.method!r} is not one of {', '.join(METHODS)}")

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    @property
    def default_zero_point(self) -> int:
        return 1 << (self.bits - 1)


# --------------------------------------------------------------------------------- packing


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes [..., m] -> packed bytes along the last axis (4 bits: low nibble first; an odd
    m is padded with a zero nibble). 8 bits is the identity."""
    if bits not in SUPPORTED_BITS:
        raise QuantizationError(f"pack: bits {bits} is not one of {SUPPORTED_BITS}")
    codes = np.asarray(codes)
    if codes.dtype.kind not in "ui":
        raise QuantizationError(f"pack: codes have dtype {codes.dtype}, expected integers")
    if codes.size and (codes.min() < 0 or codes.max() > (1 << bits) - 1):
        raise QuantizationError(f"pack: codes fall outside 0..{(1 << bits) - 1}")
    codes = codes.astype(np.uint8)
    if bits == 8:
        return codes
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (1,), np.uint8)], axis=-1)
    return (codes[..., 0::2] & 0x0F) | (codes[..., 1::2] << 4)


def unpack_codes(packed: np.ndarray, bits: int, count: int | None = None) -> np.ndarray:
    """Inverse of pack_codes: packed bytes [..., p] -> uint8 codes [..., count] (default all)."""
    packed = np.asarray(packed, dtype=np.uint8)
    if bits == 8:
        out = packed
    elif bits == 4:
        out = np.empty(packed.shape[:-1] + (2 * packed.shape[-1],), np.uint8)
        out[..., 0::2] = packed & 0x0F
        out[..., 1::2] = packed >> 4
    else:
        raise QuantizationError(f"unpack: bits {bits} is not one of {SUPPORTED_BITS}")
    return out if count is None else out[..., :count]


# ------------------------------------------------------------------------------ the result


@dataclass(frozen=True, eq=False)
class BlockQuantized:
    """A [n, k] matrix quantized in blocks of `spec.block_size` along k, in MatMulNBits' layout."""

    n: int
    k: int
    spec: QuantSpec
    packed: np.ndarray  # uint8 [n, k_blocks, block_size * bits // 8]
    scales: np.ndarray  # float32 [n, k_blocks]
    zero_points: np.ndarray | None  # uint8 packed [n, ceil(k_blocks*bits/8)]; None when symmetric
    name: str = ""

    @property
    def k_blocks(self) -> int:
        return -(-self.k // self.spec.block_size)

    def rows(self, start: int, stop: int, name: str = "") -> "BlockQuantized":
        """Output rows [start, stop): each row's blocks, scales and zero points are its own, so a
        matrix quantized whole splits into the exact parts quantized alone."""
        if not 0 <= start < stop <= self.n:
            raise QuantizationError(f"{_label(self.name)}: rows [{start}, {stop}) outside [0, {self.n})")
        zps = None if self.zero_points is None else self.zero_points[start:stop]
        return BlockQuantized(stop - start, self.k, self.spec, self.packed[start:stop], self.scales[start:stop], zps,
                              name or self.name)

    def codes(self) -> np.ndarray:
        """Unpacked codes, uint8 [n, k_blocks, block_size] (positions past k hold the zero point)."""
        return unpack_codes(self.packed, self.spec.bits)

    def zero_point_codes(self) -> np.ndarray:
        """Per-block zero points, uint8 [n, k_blocks] (the default 2**(bits-1) when symmetric)."""
        if self.zero_points is None:
            return np.full((self.n, self.k_blocks), self.spec.default_zero_point, np.uint8)
        return unpack_codes(self.zero_points, self.spec.bits, self.k_blocks)

    def _scales_as(self, float_dtype) -> np.ndarray:
        dtype = np.dtype(float_dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise QuantizationError(f"{_label(self.name)}: float dtype {dtype} is not float32 or float16")
        if dtype == np.float32:
            return self.scales.copy()
        if np.abs(self.scales).max(initial=0.0) > np.finfo(np.float16).max:
            raise QuantizationError(f"{_label(self.name)}: a block scale overflows float16")
        return self.scales.astype(np.float16)

    def dequantize(self, float_dtype=np.float32) -> np.ndarray:
        """float32 [n, k]: (code - zero_point) * scale, with the scales as stored in `float_dtype`."""
        scales = self._scales_as(float_dtype).astype(np.float32)
        values = self.codes().astype(np.float32)
        values -= self.zero_point_codes().astype(np.float32)[..., None]
        values *= scales[..., None]
        return values.reshape(self.n, -1)[:, : self.k]

    def matmul_nbits_tensors(self, float_dtype) -> dict[str, np.ndarray]:
        """Initializers for com.microsoft MatMulNBits(A, B, scales[, zero_points]) with
        K=k, N=n, bits=spec.bits, block_size=spec.block_size."""
        out = {"B": self.packed.copy(), "scales": self._scales_as(float_dtype)}
        if self.zero_points is not None:
            out["zero_points"] = self.zero_points.copy()
        return out

    def gather_block_quantized_tensors(self, float_dtype) -> dict[str, np.ndarray]:
        """Initializers for com.microsoft GatherBlockQuantized(data, indices, scales[, zero_points])
        with gather_axis=0, quantize_axis=1, block_size=spec.block_size, bits=spec.bits over [n, k]."""
        if (self.k * self.spec.bits) % 8:
            raise QuantizationError(
                f"{_label(self.name)}: k={self.k} codes of {self.spec.bits} bits do not fill whole bytes, "
                "which GatherBlockQuantized cannot express")
        data = self.packed.reshape(self.n, -1)[:, : self.k * self.spec.bits // 8]
        out = {"data": np.ascontiguousarray(data), "scales": self._scales_as(float_dtype)}
        if self.zero_points is not None:
            out["zero_points"] = self.zero_points.copy()
        return out

    def nbytes(self, float_dtype=np.float32) -> int:
        """Bytes of the stored tensors (packed codes, scales in `float_dtype`, zero points)."""
        size = self.packed.nbytes + self.scales.size * np.dtype(float_dtype).itemsize
        if self.zero_points is not None:
            size += self.zero_points.nbytes
        return int(size)


# ---------------------------------------------------------------------------- quantization


def _check_matrix(w, name: str) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2:
        raise QuantizationError(f"{_label(name)}: expected a 2-D [n, k] matrix, got shape {w.shape}")
    if w.dtype not in (np.float16, np.float32, np.float64):
        raise QuantizationError(f"{_label(name)}: dtype {w.dtype} is not float16, float32 or float64")
    if w.shape[0] == 0 or w.shape[1] == 0:
        raise QuantizationError(f"{_label(name)}: empty matrix of shape {w.shape}")
    if w.dtype == np.float64 and not np.abs(w).max() <= MAX_ABS_WEIGHT:  # before any float32 cast
        raise QuantizationError(f"{_label(name)}: contains NaN, Inf or |values| > {MAX_ABS_WEIGHT:g}")
    return w


def _importance_weights(importance, k: int, k_pad: int, name: str) -> np.ndarray | None:
    """Per-position weights [k_pad] (max 1, 0 on padding), or None for uniform without padding."""
    if importance is None:
        if k == k_pad:
            return None
        weight = np.ones(k_pad, np.float32)
    else:
        imp = np.asarray(importance)
        if imp.shape != (k,):
            raise QuantizationError(f"{_label(name)}: importance has shape {imp.shape}, expected ({k},)")
        if not np.issubdtype(imp.dtype, np.number) or np.iscomplexobj(imp):
            raise QuantizationError(f"{_label(name)}: importance has dtype {imp.dtype}, expected real numbers")
        imp = imp.astype(np.float64)
        if not np.isfinite(imp).all():
            raise QuantizationError(f"{_label(name)}: importance contains NaN or Inf")
        if (imp < 0).any():
            raise QuantizationError(f"{_label(name)}: importance has negative entries")
        top = imp.max()
        weight = np.zeros(k_pad, np.float32)
        if top > 0:
            weight[:k] = imp / top
    weight[k:] = 0.0
    return weight


def _workers() -> int:
    return usable_cpus()


def quantize_blockwise(w: np.ndarray, spec: QuantSpec, *, name: str = "",
                       importance: np.ndarray | None = None) -> BlockQuantized:
    """Quantize w [n, k] (HF nn.Linear layout [out, in]) in blocks of spec.block_size along k.

    `importance` ([k], non-negative) weights each input channel's squared error in the "search"
    method (activation-aware / imatrix hook); rtn ignores it. K is padded with zeros to whole blocks.
    """
    if not isinstance(spec, QuantSpec):
        raise QuantizationError(f"{_label(name)}: spec must be a QuantSpec, got {type(spec).__name__}")
    w = _check_matrix(w, name)
    n, k = w.shape
    bs, bits = spec.block_size, spec.bits
    kb = -(-k // bs)
    k_pad = kb * bs
    weight = _importance_weights(importance, k, k_pad, name)  # validated even where rtn ignores it
    if spec.method == "rtn":
        weight = None
    kernel = KERNELS[(spec.method, spec.symmetric)]

    packed = np.empty((n, kb, bs * bits // 8), np.uint8)
    scales = np.empty((n, kb), np.float32)
    zps = None if spec.symmetric else np.empty((n, kb), np.uint8)

    rows = max(1, _CHUNK_ELEMENTS // k_pad)
    starts = range(0, n, rows)
    # The kernels see a chunk transposed: [block_size, rows * k_blocks], one column per block.
    weight_t = None if weight is None else np.ascontiguousarray(np.tile(weight.reshape(kb, bs), (rows, 1)).T)

    def work(r0: int) -> int | None:
        r1 = min(n, r0 + rows)
        chunk = w[r0:r1].astype(np.float32, copy=False)  # float16 converts faster contiguous
        if not (float(chunk.max()) <= MAX_ABS_WEIGHT and float(chunk.min()) >= -MAX_ABS_WEIGHT):  # NaN too
            return r0
        m = r1 - r0
        xt = np.zeros((bs, m, kb), np.float32)
        view = xt.transpose(1, 2, 0)  # [m, kb, bs] view of the transposed buffer
        full = k // bs
        if full:
            view[:, :full, :] = chunk[:, : full * bs].reshape(m, full, bs)
        if full < kb:
            view[:, full, : k - full * bs] = chunk[:, full * bs:]
        wt = None if weight_t is None else weight_t[:, : m * kb]
        codes_t, s, z = kernel(xt.reshape(bs, m * kb), bits, wt)
        if bits == 4:
            codes_t = codes_t[0::2] | (codes_t[1::2] << 4)
        packed[r0:r1] = codes_t.T.reshape(m, kb, -1)
        scales[r0:r1] = s.reshape(m, kb)
        if zps is not None:
            zps[r0:r1] = z.reshape(m, kb)
        return None

    workers = min(_workers(), len(starts))
    if workers > 1:
        with worker_pool(workers, "qwen-edge-quantize") as pool:
            bad = [r for r in pool.map(work, starts) if r is not None]
    else:
        bad = [r for r in map(work, starts) if r is not None]
    if bad:
        raise QuantizationError(
            f"{_label(name)}: contains NaN, Inf or |values| > {MAX_ABS_WEIGHT:g} (in rows from {min(bad)})")

    zero_points = None if zps is None else pack_codes(zps, bits)
    return BlockQuantized(n=n, k=k, spec=spec, packed=packed, scales=scales,
                          zero_points=zero_points, name=name)
