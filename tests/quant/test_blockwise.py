"""Block quantization kernels, checked against onnxruntime's own MatMulNBits / GatherBlockQuantized."""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

from qwen_edge.errors import QuantizationError
from qwen_edge.quant import BlockQuantized, QuantSpec, pack_codes, quantize_blockwise, unpack_codes

ONNX_TYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16}
ALL_SPECS = [QuantSpec(bits, bs, sym, method) for bits, bs, sym, method in
             itertools.product((4, 8), (32, 64, 128), (True, False), ("rtn", "search"))]


def _spec_id(spec: QuantSpec) -> str:
    return f"int{spec.bits}-b{spec.block_size}-{'sym' if spec.symmetric else 'asym'}-{spec.method}"


def _session(node, inputs, output_dtype, initializers) -> ort.InferenceSession:
    output = helper.make_tensor_value_info(node.output[0], ONNX_TYPE[np.dtype(output_dtype)], None)
    graph = helper.make_graph([node], "g", inputs, [output],
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run_matmul_nbits(bq: BlockQuantized, a: np.ndarray, accuracy_level: int) -> np.ndarray:
    tensors = bq.matmul_nbits_tensors(a.dtype)
    names = ["A", "B", "scales"] + (["zero_points"] if "zero_points" in tensors else [])
    node = helper.make_node("MatMulNBits", names, ["Y"], domain="com.microsoft", K=bq.k, N=bq.n,
                            bits=bq.spec.bits, block_size=bq.spec.block_size, accuracy_level=accuracy_level)
    a_info = helper.make_tensor_value_info("A", ONNX_TYPE[a.dtype], list(a.shape))
    return _session(node, [a_info], a.dtype, tensors).run(None, {"A": a})[0]


def run_gather_block_quantized(bq: BlockQuantized, ids: np.ndarray, float_dtype) -> np.ndarray:
    tensors = bq.gather_block_quantized_tensors(float_dtype)
    names = ["data", "ids", "scales"] + (["zero_points"] if "zero_points" in tensors else [])
    node = helper.make_node("GatherBlockQuantized", names, ["Y"], domain="com.microsoft", gather_axis=0,
                            quantize_axis=1, block_size=bq.spec.block_size, bits=bq.spec.bits)
    ids_info = helper.make_tensor_value_info("ids", TensorProto.INT64, list(ids.shape))
    return _session(node, [ids_info], float_dtype, tensors).run(None, {"ids": ids})[0]


def weighted_block_error(w: np.ndarray, bq: BlockQuantized, importance=None) -> np.ndarray:
    """sum of importance * (w - dequant)^2 per block, [n, k_blocks] (float64)."""
    n, k = w.shape
    bs = bq.spec.block_size
    d = (w.astype(np.float64) - bq.dequantize()) ** 2
    if importance is not None:
        d = d * importance
    pad = (-k) % bs
    return np.pad(d, ((0, 0), (0, pad))).reshape(n, -1, bs).sum(-1)


# ------------------------------------------------------------------------ onnxruntime parity


@pytest.mark.parametrize("spec", ALL_SPECS, ids=_spec_id)
def test_matmul_nbits_matches_dequantize(spec):
    rng = np.random.default_rng(spec.bits * 1000 + spec.block_size)
    n, k = 48, 200  # k not a multiple of any block size: exercises the padding
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    w[3, :] = 0.0  # an all-zero row
    w[5, :40] = 0.125  # a constant stretch
    bq = quantize_blockwise(w, spec, name="proj")
    a = rng.standard_normal((5, k)).astype(np.float32)
    ref = a @ bq.dequantize().T
    scale = np.abs(ref).max()

    y0 = run_matmul_nbits(bq, a, accuracy_level=0)
    assert y0.shape == (5, n)
    np.testing.assert_allclose(y0, ref, rtol=1e-4, atol=1e-4 * scale)

    y4 = run_matmul_nbits(bq, a, accuracy_level=4)  # A quantized to int8 per block inside
    assert np.linalg.norm(y4 - ref) <= 2e-2 * np.linalg.norm(ref)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=_spec_id)
def test_gather_block_quantized_matches_dequantize(spec):
    rng = np.random.default_rng(7 + spec.bits + spec.block_size)
    vocab, hidden = 37, 200
    table = rng.standard_normal((vocab, hidden)).astype(np.float32)
    bq = quantize_blockwise(table, spec, name="embed")
    ids = np.array([[0, 36, 5, 5], [17, 1, 2, 30]], np.int64)
    y = run_gather_block_quantized(bq, ids, np.float32)
    assert y.shape == (2, 4, hidden)
    np.testing.assert_allclose(y, bq.dequantize()[ids], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [4, 8])
def test_float16_tensors_match_dequantize_with_float16_scales(bits, symmetric):
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((40, 256)) * 0.05).astype(np.float16)
    bq = quantize_blockwise(w, QuantSpec(bits, 32, symmetric, "search"), name="proj")
    assert bq.matmul_nbits_tensors(np.float16)["scales"].dtype == np.float16
    a = rng.standard_normal((4, 256)).astype(np.float16)
    ref = a.astype(np.float32) @ bq.dequantize(np.float16).T
    y = run_matmul_nbits(bq, a, accuracy_level=0)
    assert y.dtype == np.float16
    assert np.linalg.norm(y.astype(np.float32) - ref) <= 2e-3 * np.linalg.norm(ref)
    ids = np.array([1, 39, 0], np.int64)
    g = run_gather_block_quantized(bq, ids, np.float16)
    np.testing.assert_allclose(g.astype(np.float32), bq.dequantize(np.float16)[ids], rtol=1e-3, atol=1e-6)


def test_nibble_order_and_default_zero_point_as_onnxruntime_reads_them():
    """Hand-packed codes pin the layout facts independently of the quantizer."""
    n, k, bs = 2, 64, 32
    codes = np.arange(n * k).reshape(n, k) % 16
    scales = np.array([[1.0, 0.5], [2.0, 0.25]], np.float32)
    spec = QuantSpec(4, bs, symmetric=True)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8).reshape(n, 2, bs // 2)
    bq = BlockQuantized(n=n, k=k, spec=spec, packed=packed, scales=scales, zero_points=None)
    expect = (codes.reshape(n, 2, bs) - 8) * scales[..., None]
    np.testing.assert_array_equal(bq.dequantize(), expect.reshape(n, k))
    a = np.eye(k, dtype=np.float32)
    np.testing.assert_allclose(run_matmul_nbits(bq, a, 0), expect.reshape(n, k).T, atol=1e-6)
    np.testing.assert_allclose(run_gather_block_quantized(bq, np.array([1, 0]), np.float32),
                               expect.reshape(n, k)[[1, 0]], atol=1e-6)
    # Three blocks of asymmetric zero points pack into two bytes per row, low nibble first.
    bq3 = quantize_blockwise(np.random.default_rng(0).standard_normal((2, 96)).astype(np.float32),
                             QuantSpec(4, 32, symmetric=False))
    zp = bq3.zero_point_codes()
    assert bq3.zero_points.shape == (2, 2)
    np.testing.assert_array_equal(bq3.zero_points[:, 0], zp[:, 0] | (zp[:, 1] << 4))
    np.testing.assert_array_equal(bq3.zero_points[:, 1], zp[:, 2])


# ------------------------------------------------------------------------- layout and errors


@pytest.mark.parametrize("spec", [s for s in ALL_SPECS if s.method == "rtn"], ids=_spec_id)
def test_rtn_error_is_bounded_by_half_a_step(spec):
    rng = np.random.default_rng(11)
    w = rng.standard_t(3, (64, 320)).astype(np.float32)
    w[:8] = np.abs(w[:8]) + 0.5  # blocks of one sign: 0 must stay in range without wasting it
    w[8:16] = -np.abs(w[8:16]) - 0.5
    bq = quantize_blockwise(w, spec)
    n, k, bs = 64, 320, spec.block_size
    err = np.abs(w - bq.dequantize())
    step = np.repeat(np.abs(bq.scales), bs, axis=1)[:, :k]
    eps = 1e-5 * np.abs(w).max()
    if spec.symmetric:
        # Values -2**(bits-1)..2**(bits-1)-1 around the largest magnitude: only elements of the
        # opposite sign beyond (2**(bits-1) - 1/2) steps are clipped, by at most one step.
        half = 1 << (spec.bits - 1)
        inside = np.abs(w) <= (half - 0.5) * step
        assert np.all(err[inside] <= step[inside] / 2 + eps)
        assert np.all(err <= step + eps)
    else:
        assert np.all(err <= step / 2 + eps)


@pytest.mark.parametrize("bits", [4, 8])
def test_symmetric_rtn_uses_the_full_range_like_q4_0(bits):
    """The signed largest-magnitude element maps to code 0 (-2**(bits-1) steps), so it is exact
    whichever its sign; a positive-only convention would clip negative extremes."""
    rng = np.random.default_rng(12)
    w = rng.standard_normal((32, 64)).astype(np.float32)
    w[::2] *= -1
    bq = quantize_blockwise(w, QuantSpec(bits, 32, True, "rtn"))
    blocks = w.reshape(32, 2, 32)
    extreme = np.take_along_axis(blocks, np.abs(blocks).argmax(-1)[..., None], -1)[..., 0]
    codes = bq.codes()
    assert np.all(np.take_along_axis(codes, np.abs(blocks).argmax(-1)[..., None], -1) == 0)
    deq = bq.dequantize().reshape(32, 2, 32)
    got = np.take_along_axis(deq, np.abs(blocks).argmax(-1)[..., None], -1)[..., 0]
    np.testing.assert_allclose(got, extreme, rtol=1e-6)
    assert (np.sign(bq.scales) == -np.sign(extreme)).all()


def test_shapes_dtypes_and_padding():
    w = np.random.default_rng(0).standard_normal((10, 100)).astype(np.float32)
    for bits in (4, 8):
        bq = quantize_blockwise(w, QuantSpec(bits, 32, symmetric=False, method="search"))
        assert bq.packed.shape == (10, 4, 32 * bits // 8) and bq.packed.dtype == np.uint8
        assert bq.scales.shape == (10, 4) and bq.scales.dtype == np.float32
        assert bq.zero_points.shape == ((10, 2) if bits == 4 else (10, 4))
        assert bq.dequantize().shape == (10, 100)
        # Positions past K hold the zero point, i.e. dequantize to exactly 0.
        codes = bq.codes().reshape(10, -1)
        np.testing.assert_array_equal(codes[:, 100:], np.repeat(bq.zero_point_codes()[:, -1:], 28, axis=1))
        t = bq.matmul_nbits_tensors(np.float16)
        assert bq.nbytes(np.float16) == sum(v.nbytes for v in t.values())
        assert bq.nbytes() == bq.packed.nbytes + bq.scales.nbytes + bq.zero_points.nbytes
        g = bq.gather_block_quantized_tensors(np.float32)
        assert g["data"].shape == (10, 100 * bits // 8)
    sym = quantize_blockwise(w, QuantSpec(4, 32, symmetric=True))
    assert sym.zero_points is None
    assert set(sym.matmul_nbits_tensors(np.float32)) == {"B", "scales"}
    assert set(sym.gather_block_quantized_tensors(np.float32)) == {"data", "scales"}


def test_odd_k_cannot_be_gathered_at_4_bits():
    w = np.ones((3, 33), np.float32)
    bq = quantize_blockwise(w, QuantSpec(4, 32, True), name="embed")
    with pytest.raises(QuantizationError, match="embed"):
        bq.gather_block_quantized_tensors(np.float32)
    int8 = quantize_blockwise(w, QuantSpec(8, 32, True))
    assert int8.gather_block_quantized_tensors(np.float32)["data"].shape == (3, 33)


@pytest.mark.parametrize("kwargs", [
    dict(bits=3, block_size=32, symmetric=True), dict(bits=2, block_size=32, symmetric=True),
    dict(bits=16, block_size=32, symmetric=True), dict(bits=True, block_size=32, symmetric=True),
    dict(bits=4.0, block_size=32, symmetric=True), dict(bits=4, block_size=8, symmetric=True),
    dict(bits=4, block_size=48, symmetric=True), dict(bits=4, block_size=512, symmetric=True),
    dict(bits=4, block_size=0, symmetric=True), dict(bits=4, block_size=-32, symmetric=True),
    dict(bits=4, block_size=32.0, symmetric=True), dict(bits=4, block_size=32, symmetric="yes"),
    dict(bits=4, block_size=32, symmetric=True, method="gptq"),
])
def test_quant_spec_rejects_bad_values(kwargs):
    with pytest.raises(QuantizationError):
        QuantSpec(**kwargs)


def test_quant_spec_accepts_supported_values():
    for bits, bs in itertools.product((4, 8), (16, 32, 64, 128, 256)):
        QuantSpec(bits, bs, True, "search")


@pytest.mark.parametrize("w, importance, needle", [
    (np.zeros(32, np.float32), None, "2-D"),
    (np.zeros((2, 2, 32), np.float32), None, "2-D"),
    (np.zeros((2, 32), np.int32), None, "dtype"),
    (np.zeros((0, 32), np.float32), None, "empty"),
    (np.array([[np.nan] + [0.0] * 31], np.float32), None, "NaN"),
    (np.array([[np.inf] + [0.0] * 31], np.float32), None, "NaN"),
    (np.full((1, 32), 1e35, np.float32), None, "NaN"),
    (np.full((1, 32), 1e300, np.float64), None, "NaN"),
    (np.zeros((2, 32), np.float32), np.ones(31), "importance"),
    (np.zeros((2, 32), np.float32), -np.ones(32), "negative"),
    (np.zeros((2, 32), np.float32), np.full(32, np.nan), "importance"),
])
def test_quantize_rejects_bad_inputs_naming_the_tensor(w, importance, needle):
    for method in ("rtn", "search"):
        with pytest.raises(QuantizationError, match=needle) as info:
            quantize_blockwise(w, QuantSpec(4, 32, False, method), name="layers.0.mlp.up_proj",
                               importance=importance)
        assert "layers.0.mlp.up_proj" in str(info.value) and "\n" not in str(info.value)


def test_pack_rejects_out_of_range_codes():
    with pytest.raises(QuantizationError):
        pack_codes(np.array([16]), 4)
    with pytest.raises(QuantizationError):
        pack_codes(np.array([-1]), 8)
    with pytest.raises(QuantizationError):
        pack_codes(np.array([1.0]), 8)


# -------------------------------------------------------------------------------- quality


# Squared-error ratio search / rtn the search must beat: measured values + ~0.008 (grid -0.8, +0.8).
# Each bound is below what a least-squares refit of the rtn codes' scale alone reaches (0.937-0.953
# Gaussian, 0.913-0.956 t3; the third number below), so the candidate grid must contribute.
SEARCH_RATIO_BOUND = {
    # (dist, block_size, symmetric): (bound, measured, refit alone)
    ("gaussian", 32, True): (0.905, 0.896, 0.937), ("gaussian", 32, False): (0.92, 0.910, 0.944),
    ("gaussian", 128, True): (0.90, 0.891, 0.952), ("gaussian", 128, False): (0.93, 0.922, 0.953),
    ("student_t3", 32, True): (0.945, 0.937, 0.952), ("student_t3", 32, False): (0.948, 0.940, 0.956),
    ("student_t3", 128, True): (0.897, 0.887, 0.913), ("student_t3", 128, False): (0.935, 0.927, 0.939),
}


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block_size", [32, 128])
@pytest.mark.parametrize("dist", ["gaussian", "student_t3"])
def test_search_beats_rtn_at_4_bits(dist, block_size, symmetric):
    rng = np.random.default_rng(5)
    shape = (256, 1024)
    w = rng.standard_normal(shape) if dist == "gaussian" else rng.standard_t(3, shape)
    w = (w * 0.02).astype(np.float32)
    rtn = quantize_blockwise(w, QuantSpec(4, block_size, symmetric, "rtn"))
    search = quantize_blockwise(w, QuantSpec(4, block_size, symmetric, "search"))
    e_rtn, e_search = weighted_block_error(w, rtn), weighted_block_error(w, search)
    # Never worse block by block (rtn is the search's first candidate) ...
    assert np.all(e_search <= e_rtn * (1 + 1e-4) + 1e-12)
    # ... and clearly better overall.
    bound = SEARCH_RATIO_BOUND[(dist, block_size, symmetric)][0]
    assert e_search.sum() < bound * e_rtn.sum()


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_search_is_never_worse_on_nearly_constant_weighted_blocks(bits, symmetric):
    """Where a block's error is at float32's rounding level the candidate scores are noise;
    the final guard must still never return something worse than rtn."""
    rng = np.random.default_rng(1)
    for _ in range(12):
        c = rng.uniform(-1e6, 1e6)
        w = np.full((64, 64), c) * (1 + 1e-6 * rng.standard_normal((64, 64)))
        w[np.arange(64), rng.integers(0, 64, 64)] = c * rng.uniform(-1, 1, 64)
        w = w.astype(np.float32)
        importance = rng.exponential(size=64)
        e = weighted_block_error(w, quantize_blockwise(w, QuantSpec(bits, 64, symmetric, "search"),
                                                       importance=importance), importance)
        e_rtn = weighted_block_error(w, quantize_blockwise(w, QuantSpec(bits, 64, symmetric, "rtn")), importance)
        assert np.all(e <= e_rtn * (1 + 1e-4) + 1e-7 * np.abs(w).max() ** 2)


@pytest.mark.parametrize("symmetric", [True, False])
def test_search_beats_rtn_at_8_bits(symmetric):
    rng = np.random.default_rng(6)
    w = rng.standard_t(4, (128, 512)).astype(np.float32)
    e_rtn = weighted_block_error(w, quantize_blockwise(w, QuantSpec(8, 64, symmetric, "rtn")))
    e_search = weighted_block_error(w, quantize_blockwise(w, QuantSpec(8, 64, symmetric, "search")))
    assert np.all(e_search <= e_rtn * (1 + 1e-3) + 1e-12)
    assert e_search.sum() < 0.99 * e_rtn.sum()


@pytest.mark.parametrize("symmetric", [True, False])
def test_importance_steers_the_search(symmetric):
    rng = np.random.default_rng(8)
    w = rng.standard_normal((128, 512)).astype(np.float32)
    importance = np.exp(2.0 * rng.standard_normal(512))
    spec = QuantSpec(4, 32, symmetric, "search")
    plain = weighted_block_error(w, quantize_blockwise(w, spec), importance).sum()
    aware = weighted_block_error(w, quantize_blockwise(w, spec, importance=importance), importance).sum()
    rtn = weighted_block_error(w, quantize_blockwise(w, QuantSpec(4, 32, symmetric, "rtn")), importance).sum()
    assert aware < 0.95 * plain < rtn
    # importance scaled by a constant changes nothing; all-zero importance falls back to rtn
    scaled = quantize_blockwise(w, spec, importance=importance * 1e6)
    np.testing.assert_array_equal(scaled.packed, quantize_blockwise(w, spec, importance=importance).packed)
    zero = quantize_blockwise(w, spec, importance=np.zeros(512))
    np.testing.assert_array_equal(zero.packed, quantize_blockwise(w, QuantSpec(4, 32, symmetric, "rtn")).packed)


def test_chunking_and_threads_do_not_change_results(monkeypatch):
    from qwen_edge.quant import blockwise

    rng = np.random.default_rng(9)
    w = rng.standard_normal((300, 96)).astype(np.float32)
    spec = QuantSpec(4, 32, False, "search")
    whole = quantize_blockwise(w, spec)
    monkeypatch.setattr(blockwise, "_CHUNK_ELEMENTS", 96 * 7)
    chunked = quantize_blockwise(w, spec)
    np.testing.assert_array_equal(whole.packed, chunked.packed)
    np.testing.assert_array_equal(whole.scales, chunked.scales)
    np.testing.assert_array_equal(whole.zero_points, chunked.zero_points)
    # A matrix split into rows quantizes like its parts.
    top = quantize_blockwise(w[:100], spec)
    np.testing.assert_array_equal(top.packed, whole.packed[:100])


# ------------------------------------------------------------------------------ properties


@settings(max_examples=60, deadline=None)
@given(bits=st.sampled_from([4, 8]), data=st.data())
def test_pack_unpack_round_trip(bits, data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9))
    codes = data.draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, (1 << bits) - 1)))
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8
    assert packed.shape == shape[:-1] + ((shape[-1] + 1) // 2 if bits == 4 else shape[-1],)
    np.testing.assert_array_equal(unpack_codes(packed, bits, shape[-1]), codes)


def _matrices():
    """Random small matrices, some with all-zero, constant, tiny or huge blocks."""

    @st.composite
    def build(draw):
        n = draw(st.integers(1, 5))
        k = draw(st.integers(1, 300))
        pattern = draw(st.sampled_from(["random", "zeros", "constant", "mixed", "tiny"]))
        if pattern == "zeros":
            return np.zeros((n, k), np.float32)
        if pattern == "constant":
            return np.full((n, k), draw(st.floats(-1e4, 1e4, width=32)), np.float32)
        elements = st.floats(-1e6, 1e6, width=32, allow_subnormal=True)
        if pattern == "tiny":
            tiny = float(np.float32(1e-36))
            elements = st.floats(-tiny, tiny, width=32, allow_subnormal=True)
        w = draw(hnp.arrays(np.float32, (n, k), elements=elements))
        if pattern == "mixed":
            w[:, : k // 2] = 0.0
            w[0, :] = w[0, 0]
        return w

    return build()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=_matrices(), bits=st.sampled_from([4, 8]), block_size=st.sampled_from([16, 32, 64, 256]),
       symmetric=st.booleans(), method=st.sampled_from(["rtn", "search"]),
       weighted=st.booleans(), seed=st.integers(0, 2**16))
def test_quantize_never_produces_bad_codes_or_scales(w, bits, block_size, symmetric, method, weighted, seed):
    n, k = w.shape
    importance = np.random.default_rng(seed).exponential(size=k) if weighted else None
    spec = QuantSpec(bits, block_size, symmetric, method)
    bq = quantize_blockwise(w, spec, importance=importance)
    kb = -(-k // block_size)
    qmax = (1 << bits) - 1
    assert bq.packed.shape == (n, kb, block_size * bits // 8)
    assert np.isfinite(bq.scales).all()
    codes, zp = bq.codes(), bq.zero_point_codes()
    assert codes.max() <= qmax and zp.max() <= qmax
    deq = bq.dequantize()
    assert np.isfinite(deq).all()
    # padding dequantizes to exactly 0
    pad = codes.reshape(n, -1)[:, k:]
    assert np.all(pad == zp[:, -1:])
    assert np.all(deq[w == 0] == 0)  # 0 is always exactly representable
    # every block is reproduced within its own (weighted) rtn error
    rtn = quantize_blockwise(w, QuantSpec(bits, block_size, symmetric, "rtn"))
    imp = None if importance is None else importance
    e_rtn = weighted_block_error(w, rtn, imp)
    e = weighted_block_error(w, bq, imp)
    assert np.all(e <= e_rtn * (1 + 1e-3) + 1e-30 + 1e-6 * np.abs(w).max() ** 2)
    if method == "rtn":  # within half a step (a whole one for symmetric's clipped side)
        step = np.repeat(np.abs(bq.scales.astype(np.float64)), block_size, axis=1)[:, :k]
        bound = step if symmetric else step / 2
        assert np.all(np.abs(w - deq) <= bound * (1 + 1e-5) + 1e-6 * np.abs(w) + 1e-27)
    # constant blocks are exact
    if np.ptp(w) == 0:
        np.testing.assert_allclose(deq, w, rtol=1e-6, atol=1e-27)


@pytest.mark.parametrize("method, symmetric, bits", [("rtn", False, 4), ("search", False, 4), ("search", True, 4),
                                                     ("search", True, 8)])
def test_row_ranges_of_a_quantized_matrix_are_the_rows_quantized_alone(method, symmetric, bits):
    """graph/linear.linear_parts cuts fused projections (qkv | z, gate | up) out of one quantized
    matrix: that is only exact because every row's blocks, scales and zero points are its own."""
    w = np.random.default_rng(3).normal(size=(24, 96)).astype(np.float32)
    spec = QuantSpec(bits=bits, block_size=32, symmetric=symmetric, method=method)
    whole = quantize_blockwise(w, spec)
    for lo, hi in ((0, 16), (16, 24), (5, 6)):
        alone, part = quantize_blockwise(w[lo:hi], spec), whole.rows(lo, hi)
        assert part.n == hi - lo and part.k == whole.k
        for a, b in zip(alone.matmul_nbits_tensors(np.float32).values(), part.matmul_nbits_tensors(np.float32).values()):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(QuantizationError, match="rows"):
        whole.rows(20, 30)
