"""Row-attention verify graphs: a verify pass over n tokens gives the bits of n one-token decode steps.

The facts it relies on, checked on onnxruntime itself: MatMulNBits at accuracy_level 4 gives every row the
same bits whatever the number of rows; GroupQueryAttention does not (its probs x V takes MLAS's M == 1
kernel for one new token), and at accuracy_level 4 that difference reaches the logits."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qwen_edge.build.row_graphs import add_row_graphs
from qwen_edge.graph.row_attention import row_attention_model
from qwen_edge.runtime import Model
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
def test_verify_pass_with_row_graphs_is_bit_identical_to_one_token_steps(bundles, tmp_path, arch):
    src = bundles(arch, "int4")
    plain = Model(src)
    prompt = np.random.default_rng(0).integers(3, plain.vocab_size - 8, size=40)
    batched = [_pass_and_steps(plain, prompt, n) for n in (2, 5)]
    # without row graphs a pass differs from the steps somewhere: the reason they exist
    assert any(not np.array_equal(rows, steps) for rows, steps in batched)
    out = tmp_path / "bundle"
    shutil.copytree(src, out)
    add_row_graphs(out, [2, 3, 4, 5])
    model = Model(out)
    assert sorted(model.row_graphs) == [2, 3, 4, 5]
    for n in (2, 3, 5):
        rows, steps = _pass_and_steps(model, prompt, n)
        assert np.array_equal(rows, steps), (n, float(np.abs(rows - steps).max()))


def test_row_attention_needs_two_rows_and_an_attention_node(bundles):
    import onnx

    model = onnx.load(str(bundles("qwen2", "int4") / "model.onnx"), load_external_data=False)
    with pytest.raises(ValueError, match="rows >= 2"):
        row_attention_model(model, 1)
    empty = helper.make_model(helper.make_graph([], "g", [], []))
    with pytest.raises(ValueError, match="no GroupQueryAttention"):
        row_attention_model(empty, 2)
