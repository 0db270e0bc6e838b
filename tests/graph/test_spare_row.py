"""The spare attention row (DecoderOptions.exact_speculation): a verify pass over n tokens gives the bits of n
one-token decode steps.

The facts it relies on, checked on onnxruntime itself: MatMulNBits at accuracy_level 4 gives every row the
same bits whatever the number of rows; GroupQueryAttention does not (its probs x V takes MLAS's M == 1
kernel for one new token), and at accuracy_level 4 that difference reaches the logits. With one spare row
after the new tokens no pass has M == 1."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qwen_edge.build import BuildRequest, build
from qwen_edge.errors import ConfigError
from qwen_edge.graph.decoder import DecoderOptions
from qwen_edge.precision import Precision
from qwen_edge.runtime import Generator, Model, SamplingParams
from qwen_edge.runtime.speculative import _Passes


def _matmulnbits(k: int, n: int) -> bytes:
    rng = np.random.default_rng(0)
    blocks = k // 32
    q = rng.integers(0, 256, size=(n, blocks, 16), dtype=np.uint8)
    scales = (rng.random(n * blocks, dtype=np.float32) * 0.02 + 0.001).astype(np.float32)
    node = helper.make_node("MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft", K=k, N=n, bits=4,
                            block_size=32, accuracy_level=4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, "S", k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, "S", n])],
                              [numpy_helper.from_array(q, "B"), numpy_helper.from_array(scales, "S")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    return model.SerializeToString()


def test_matmulnbits_level4_rows_do_not_depend_on_the_row_count():
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(_matmulnbits(512, 768), so, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(1).standard_normal((1, 16, 512)).astype(np.float32)
    one = np.concatenate([s.run(None, {"A": a[:, i:i + 1]})[0] for i in range(16)], axis=1)
    for m in (2, 3, 8, 16):
        assert np.array_equal(s.run(None, {"A": a[:, :m]})[0], one[:, :m]), m


def _pass_and_steps(model: Model, prompt: np.ndarray, n: int):
    """Logits of one pass over prompt's last n tokens (through the runtime's speculative passes) and of n
    one-token steps, after the same prefix."""
    cache = model.acquire_cache()
    try:
        mask = np.ones((1, cache.capacity), np.int64)
        model.step(cache, prompt[:-n], mask)
        saved = [a.copy() for a in cache._arrays]
        steps = np.stack([model.step(cache, prompt[len(prompt) - n + i:len(prompt) - n + i + 1], mask)[0]
                          for i in range(n)])
        for array, copy in zip(cache._arrays, saved):
            np.copyto(array, copy)
        cache.length = len(prompt) - n
        passes = _Passes(model, cache)  # kept alive while its logits buffer is read
        rows = passes.run([int(t) for t in prompt[-n:]]).copy()
        return rows, steps
    finally:
        model.release_cache(cache)


@pytest.mark.parametrize("arch", ["qwen2", "qwen35"])
def test_verify_pass_is_bit_identical_to_one_token_steps(bundles, arch):
    plain = Model(bundles(arch, "int4"))
    prompt = np.random.default_rng(0).integers(3, plain.vocab_size - 8, size=40)
    batched = [_pass_and_steps(plain, prompt, n) for n in (2, 5)]
    # without the spare row a pass differs from the steps somewhere: the reason it exists
    assert any(not np.array_equal(rows, steps) for rows, steps in batched)
    exact = Model(bundles(arch, "int4", exact_speculation=True))
    assert exact.exact_speculation and not plain.exact_speculation
    for n in (2, 3, 5, 8):
        rows, steps = _pass_and_steps(exact, prompt, n)
        assert np.array_equal(rows, steps), (n, float(np.abs(rows - steps).max()))


@pytest.mark.parametrize("arch", ["qwen2", "qwen35"])
def test_spare_row_costs_one_position_of_context_and_generation_fills_the_rest(bundles, arch):
    """The spare key/value lands one past the sequence: the runtime keeps a position for it in every buffer
    and offers one token less of context, up to which generation runs (onnxruntime would refuse a write past
    the buffer)."""
    plain, exact = Model(bundles(arch, "int4")), Model(bundles(arch, "int4", exact_speculation=True))
    assert exact.manifest["io"]["attention_spare_rows"] == 1 and "attention_spare_rows" not in plain.manifest["io"]
    assert exact.context_length == plain.context_length - 1
    cache = exact.acquire_cache()
    assert cache.capacity == exact.context_length and cache._arrays[0].shape[2] == plain.context_length
    exact.release_cache(cache)
    prompt = np.random.default_rng(1).integers(3, exact.vocab_size - 8, size=exact.context_length - 6)
    result = Generator(exact).generate(prompt, max_new_tokens=6, sampling=SamplingParams.greedy(),
                                       stop_token_ids=())
    assert len(prompt) + len(result.token_ids) == exact.context_length


def test_exact_speculation_is_refused_off_the_cpu_target(qwen2_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="target 'openvino': exact speculation"):
        build(BuildRequest(qwen2_ckpt, tmp_path / "b", Precision.preset("int4"), target="openvino",
                           options=DecoderOptions(exact_speculation=True)))
    assert not (tmp_path / "b").exists()


def test_exact_speculation_is_refused_for_vision_language(qwen25vl_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="vision-language bundles: exact speculation"):
        build(BuildRequest(qwen25vl_ckpt, tmp_path / "b", Precision.preset("int4"),
                           options=DecoderOptions(exact_speculation=True)))


def test_exact_speculation_is_refused_with_genai_speculation(qwen2_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="genai_speculative with exact speculation"):
        build(BuildRequest(qwen2_ckpt, tmp_path / "b", Precision.preset("int4"), genai_speculative="ngram",
                           options=DecoderOptions(exact_speculation=True)))
