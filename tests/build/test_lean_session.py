"""The build's smoke test loads expert-heavy MoE graphs without onnxruntime's pre-packing (whose
copies of every expert made an 8-layer 30B-A3B-layout build peak at 5.0 GB), and still catches a
broken graph that way."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from qwen_edge.arch import adapter_for
from qwen_edge.build import BuildRequest, build
from qwen_edge.build.smoke_test import smoke_test as _smoke_test
from qwen_edge.errors import GraphError
from qwen_edge.build.lean_session import DISABLE_PREPACKING, expert_bytes, head_dequant_bytes, loads_lean
from qwen_edge.precision import Precision
from qwen_edge.runtime import Model
from qwen_edge.checkpoint.tiny import TINY_QWEN3, TINY_QWEN3_MOE

from tests.conftest import make_hf_checkpoint

# 32 experts instead of 8: the experts (2 sparse layers) outweigh the float32 head, as in real MoEs.
EXPERT_HEAVY = dict(TINY_QWEN3_MOE, num_experts=32)

# The Qwen3-30B-A3B layer shape (benchmarks/moe_decode.py), by layer count.
A3B = dict(TINY_QWEN3_MOE, hidden_size=2048, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
           intermediate_size=6144, moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8,
           mlp_only_layers=[], vocab_size=151936)


def _spec(config: dict, **overrides):
    name = config["architectures"][0]
    return adapter_for(name).spec(dict(config, **overrides), name)


def _prepacking_disabled(opts: ort.SessionOptions) -> bool:
    try:
        return opts.get_session_config_entry(DISABLE_PREPACKING) == "1"
    except RuntimeError:  # onnxruntime raises for a key that was never set
        return False


def test_lean_only_when_experts_outweigh_the_float_head():
    int4, fp16 = Precision.preset("int4"), Precision.preset("fp16")
    one, eight = _spec(A3B, num_hidden_layers=1), _spec(A3B, num_hidden_layers=8)
    # 128 experts x 3 x 2048 x 768 at 0.625 bytes (int4 + a float32 scale per 32) per layer.
    assert expert_bytes(one, int4) == 128 * 3 * 2048 * 768 * 5 // 8
    assert expert_bytes(eight, int4) == 8 * expert_bytes(one, int4)
    int8_fp16 = Precision.preset("int8", dtype="fp16")  # fp16 scales: 1 + 2/32 bytes per weight
    assert expert_bytes(one, int8_fp16) == 128 * 3 * 2048 * 768 * 17 // 16
    assert head_dequant_bytes(one, int4) == 151936 * 2048 * 4
    assert not loads_lean(one, int4)  # measured: 1058 MiB pre-packed vs 1553 MiB lean
    assert loads_lean(eight, int4)
    assert not loads_lean(_spec(TINY_QWEN3), int4)
    assert not loads_lean(_spec(TINY_QWEN3_MOE), int4)
    assert loads_lean(_spec(EXPERT_HEAVY), int4)
    assert head_dequant_bytes(one, fp16) == 0 and loads_lean(one, fp16)  # a float head is never dequantized
    assert not loads_lean(_spec(A3B, num_hidden_layers=2, mlp_only_layers=[0, 1]), fp16)  # no sparse layer


@pytest.fixture(scope="module")
def heavy_bundle(tmp_path_factory):
    ckpt = make_hf_checkpoint(tmp_path_factory.mktemp("heavy-moe") / "ckpt", EXPERT_HEAVY, seed=7)
    return ckpt, tmp_path_factory.mktemp("heavy-moe-int4") / "bundle"


def test_build_smoke_test_disables_prepacking_for_expert_heavy_moe(heavy_bundle, monkeypatch):
    ckpt, out = heavy_bundle
    seen: list[tuple[str, bool]] = []
    real = ort.InferenceSession

    def recording(path, sess_options=None, *args, **kwargs):
        seen.append((str(path), _prepacking_disabled(sess_options) if sess_options is not None else False))
        return real(path, sess_options, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    build(BuildRequest(ckpt, out, Precision.preset("int4")))
    monkeypatch.undo()
    assert seen and seen[0][0].endswith("model.onnx") and seen[0][1], seen
    # The bundle itself is unchanged: the runtime loads it with pre-packing and agrees with the lean load.
    model = Model(out)
    ids = np.array([5, 17, 42, 99], np.int64)
    runtime_logits = model.logits(ids)
    opts = ort.SessionOptions()
    opts.add_session_config_entry(DISABLE_PREPACKING, "1")
    lean = real(str(out / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids[None], "attention_mask": np.ones((1, 4), np.int64)}
    for i in range(model.num_layers):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, model.num_kv_heads, 0, model.head_dim), np.float32)
    lean_logits = lean.run(["logits"], feeds)[0][0]
    assert np.array_equal(lean_logits.argmax(-1), runtime_logits.argmax(-1))
    assert np.abs(lean_logits - runtime_logits).max() < 0.05 * np.abs(runtime_logits).max()


def test_lean_smoke_test_still_rejects_a_broken_moe_graph(heavy_bundle, tmp_path):
    ckpt, out = heavy_bundle
    if not (out / "model.onnx").is_file():
        build(BuildRequest(ckpt, out, Precision.preset("int4")))
    spec = _spec(json.loads((ckpt / "config.json").read_text()))
    precision = Precision.preset("int4")
    assert loads_lean(spec, precision)
    _smoke_test(out / "model.onnx", spec, precision)  # intact: passes

    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    node = next(n for n in model.graph.node if n.op_type == "QMoE")
    node.input[2], node.input[5] = node.input[5], node.input[2]  # fc1 and fc2 weights swapped
    shutil.copy(out / "model.onnx.data", tmp_path / "model.onnx.data")
    onnx.save(model, str(tmp_path / "model.onnx"))
    with pytest.raises(GraphError, match="onnxruntime could not run the built graph"):
        _smoke_test(tmp_path / "model.onnx", spec, precision)
