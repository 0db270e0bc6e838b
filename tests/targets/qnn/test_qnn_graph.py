"""The npu-qnn float static graphs against transformers, and their structure (CPU only, fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from qwen_edge.arch import adapter_for
from qwen_edge.checkpoint import Checkpoint
from qwen_edge.errors import ConfigError
from qwen_edge.graph.static_pair import write_float_pair
from qwen_edge.targets.qnn.options import QnnOptions
from qwen_edge.targets.qnn.runner import StaticGeometry, StaticRunner, session_runner
from qwen_edge.targets.qnn.session import cpu_session
from qwen_edge.verify.reference import TransformersReference
from qwen_edge.runtime.errors import ContextOverflowError
from qwen_edge.targets import get_target

CONTEXT, CHUNK = 32, 8


def float_runner(ckpt: Path, directory: Path, norm_style: str = "rms_op"):
    with Checkpoint.open(ckpt) as c:
        adapter = adapter_for(c.architecture)
        spec = adapter.spec(c.config, c.architecture)
        pair = write_float_pair(c, adapter, spec, directory, context=CONTEXT, chunk=CHUNK, norm_style=norm_style)
    geo = StaticGeometry(spec.num_layers, spec.num_kv_heads, spec.head_dim, spec.vocab_size, CONTEXT, CHUNK)
    return pair, StaticRunner(geo, session_runner(cpu_session(pair.prefill)), session_runner(cpu_session(pair.decode)))


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
@pytest.mark.parametrize("norm_style", ["rms_op", "decomposed"])
def test_static_graphs_match_transformers(arch, norm_style, qwen2_ckpt, qwen3_ckpt, tmp_path):
    ckpt = {"qwen2": qwen2_ckpt, "qwen3": qwen3_ckpt}[arch]
    _, runner = float_runner(ckpt, tmp_path, norm_style)
    ids = np.random.default_rng(0).integers(0, 384, size=2 * CHUNK + 3)  # two full chunks and a padded one
    ref = TransformersReference(ckpt).logits(ids)
    np.testing.assert_allclose(runner.logits(ids), ref, atol=2e-4, rtol=1e-4)
    # prefill of 11 tokens (a full and a padded chunk), then 8 tokens through the decode graph
    np.testing.assert_allclose(runner.logits_with_decode(ids, 11), ref, atol=2e-4, rtol=1e-4)


def test_graphs_are_standard_static_and_share_weights(qwen2_ckpt, tmp_path):
    pair, _ = float_runner(qwen2_ckpt, tmp_path)
    locations = []
    for path in (pair.prefill, pair.decode):
        model = onnx.load(str(path), load_external_data=False)
        assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
        assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
        for value in list(model.graph.input) + list(model.graph.output):
            dims = value.type.tensor_type.shape.dim
            assert all(d.HasField("dim_value") for d in dims), value.name
            assert value.type.tensor_type.elem_type != onnx.TensorProto.INT64, value.name
        locations.append({t.name: tuple((e.key, e.value) for e in t.external_data)
                          for t in model.graph.initializer if t.external_data})
    weights = [name for name in locations[0] if name.endswith("/weight")]
    assert weights and all(locations[0][n] == locations[1][n] for n in weights)
    stored = (tmp_path / "weights.onnx.data").stat().st_size
    assert stored < 1.05 * sum(int(dict(v)["length"]) for v in locations[0].values())


def test_prompt_longer_than_static_context_raises_our_error(qwen2_ckpt, tmp_path):
    _, runner = float_runner(qwen2_ckpt, tmp_path)
    with pytest.raises(ContextOverflowError, match="static context of 32"):
        runner.logits(np.zeros(CONTEXT + 1, np.int64))
    with pytest.raises(ContextOverflowError):
        runner.generate(np.zeros(30, np.int64), max_new_tokens=3)
    assert runner.calls == {"prefill": 0, "decode": 0}  # refused before any graph ran
    cache = runner.new_cache()
    runner.step(cache, np.zeros(CONTEXT, np.int64))  # exactly full is fine
    with pytest.raises(ContextOverflowError):
        runner.step(cache, [1])


def test_options_are_closed_and_validated(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'chunks'"):
        QnnOptions.from_dict({"chunks": 4})
    with pytest.raises(ConfigError, match="chunk"):
        QnnOptions(context=16, chunk=32)
    with pytest.raises(ConfigError, match="precision"):
        QnnOptions(precision="int4")
    with pytest.raises(ConfigError, match="not found"):
        QnnOptions(calibration_text=tmp_path / "missing.txt")


def test_target_file_validates():
    target = get_target("npu-qnn")
    assert target.execution_provider == "QNNExecutionProvider" and target.fallback == "none"
    assert target.default_precision == "w8a16"
