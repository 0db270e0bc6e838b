"""The build pipeline: bundle contents, manifest, reproducibility and atomic output."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from qwen_edge.bundle import manifest as manifest_mod
from qwen_edge.build import BuildRequest, build
from qwen_edge.errors import CheckpointError, ConfigError
from qwen_edge.precision import Precision

from tests.conftest import make_hf_checkpoint


def _hashes(bundle):
    return {name: entry["sha256"] for name, entry in manifest_mod.load(bundle)["files"].items()} | {
        "manifest.json": manifest_mod.sha256_file(bundle / "manifest.json")}


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_two_builds_are_byte_identical(precision, qwen2_ckpt, tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    build(BuildRequest(qwen2_ckpt, a, Precision.preset(precision)))
    build(BuildRequest(qwen2_ckpt, b, Precision.preset(precision)))
    assert _hashes(a) == _hashes(b)
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())


def test_bundle_layout_and_manifest(bundles):
    bundle = bundles("qwen2", "int4")
    names = {p.name for p in bundle.iterdir()}
    assert {"model.onnx", "model.onnx.data", "tokenizer.json", "tokenizer_config.json", "genai_config.json",
            "chat_template.jinja", "manifest.json"} <= names
    m = manifest_mod.load(bundle)
    assert m["schema_version"] == manifest_mod.SCHEMA_VERSION
    assert set(m["files"]) == names - {"manifest.json"}
    assert manifest_mod.check_integrity(bundle) == []
    assert m["precision"]["weights"] == "int4" and m["precision"]["block_size"] == 32
    assert m["source"]["fingerprint"]["files"]["model.safetensors"]
    assert m["tool"]["dependencies"]["onnxruntime"]
    assert m["architecture"]["architecture"] == "Qwen2ForCausalLM"
    assert 4.0 < m["weights"]["bits_per_weight"] < 6.5
    assert m["graph"]["op_counts"]["com.microsoft.MatMulNBits"] == 2 * 4 + 1  # qkv, o, gate_up, down per layer; + lm_head
    assert m["graph"]["op_counts"]["com.microsoft.GroupQueryAttention"] == 2


def test_graph_uses_fused_ops_external_data_and_genai_names(bundles):
    bundle = bundles("qwen3", "int4")
    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    assert {"GroupQueryAttention", "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization",
            "MatMulNBits", "GatherBlockQuantized"} <= ops
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    assert inputs[:2] == ["input_ids", "attention_mask"] and "past_key_values.1.value" in inputs
    assert outputs[0] == "logits" and "present.1.key" in outputs
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and all(e.external_data[0].value == "model.onnx.data" for e in external)
    assert len({n.name for n in model.graph.node}) == len(model.graph.node)
    assert all(n.name.startswith("/") for n in model.graph.node)
    genai = json.loads((bundle / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["head_size"] == 32 and genai["model"]["type"] == "qwen3"


def test_failed_build_leaves_previous_output_and_no_temporary_files(qwen2_ckpt, tmp_path):
    out = tmp_path / "bundle"
    build(BuildRequest(qwen2_ckpt, out, Precision.preset("fp32")))
    before = _hashes(out)
    broken = tmp_path / "broken"
    shutil.copytree(qwen2_ckpt, broken)
    cfg = json.loads((broken / "config.json").read_text())
    cfg["intermediate_size"] += 1  # weights no longer match the config
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="gate_proj"):
        build(BuildRequest(broken, out, Precision.preset("fp32")))
    assert _hashes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "bundle"]


def test_unused_tensor_is_an_error_naming_it(qwen2_ckpt, tmp_path):
    from qwen_edge.checkpoint.tiny import write_safetensors
    from safetensors.numpy import load_file

    ckpt = tmp_path / "ckpt"
    shutil.copytree(qwen2_ckpt, ckpt)
    tensors = load_file(str(ckpt / "model.safetensors"))
    tensors["model.layers.0.mlp.extra_proj.weight"] = np.ones((4, 4), np.float32)
    write_safetensors(ckpt / "model.safetensors", tensors)
    with pytest.raises(CheckpointError, match="model.layers.0.mlp.extra_proj.weight"):
        build(BuildRequest(ckpt, tmp_path / "out", Precision.preset("fp32")))
    assert not (tmp_path / "out").exists()


def test_sharded_bf16_checkpoint_builds_and_matches_unsharded(tmp_path):
    from qwen_edge.runtime import Model
    from qwen_edge.checkpoint.tiny import TINY_QWEN2

    one = make_hf_checkpoint(tmp_path / "one", TINY_QWEN2, seed=5, dtype="bfloat16")
    many = make_hf_checkpoint(tmp_path / "many", TINY_QWEN2, seed=5, dtype="bfloat16", max_shard_size="40KB")
    assert (many / "model.safetensors.index.json").is_file()
    build(BuildRequest(one, tmp_path / "b1", Precision.preset("fp32")))
    build(BuildRequest(many, tmp_path / "b2", Precision.preset("fp32")))
    ids = np.arange(1, 12, dtype=np.int64)
    np.testing.assert_array_equal(Model(tmp_path / "b1").logits(ids), Model(tmp_path / "b2").logits(ids))


def test_precision_config_is_closed_and_validated():
    with pytest.raises(ConfigError, match="block_size"):
        Precision(block_size=48)
    with pytest.raises(ConfigError, match="colour"):
        Precision.from_dict({"colour": "blue"})
    with pytest.raises(ConfigError, match="int3"):
        Precision.preset("int3")


def test_unknown_target_lists_available(qwen2_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="cpu"):
        build(BuildRequest(qwen2_ckpt, tmp_path / "o", Precision(), target="toaster"))
