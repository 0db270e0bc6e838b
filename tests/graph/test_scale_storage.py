"""Block scales stored as fp16 in fp32 graphs: smaller bundles, the same kernels at run time."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from qwen_edge.build import BuildRequest, build
from qwen_edge.errors import ConfigError
from qwen_edge.precision import Precision


def _scale_initializers(model: onnx.ModelProto) -> dict[str, int]:
    return {t.name: t.data_type for t in model.graph.initializer if "weight.scales" in t.name}


def _logits(bundle, ids: np.ndarray, spec_layers: int, kv_heads: int, head_dim: int) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(str(bundle / "model.onnx"), so, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids[None], "attention_mask": np.ones((1, len(ids)), np.int64)}
    for i in range(spec_layers):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, kv_heads, 0, head_dim), np.float32)
    return session.run(["logits"], feeds)[0][0]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, qwen2_ckpt):
    out = tmp_path_factory.mktemp("scales")
    half = build(BuildRequest(qwen2_ckpt, out / "fp16", Precision.preset("int4")))
    full = build(BuildRequest(qwen2_ckpt, out / "fp32", Precision.preset("int4", scale_dtype="fp32")))
    return out / "fp16", half, out / "fp32", full


def test_int4_preset_stores_fp16_scales_and_casts_them_in_the_graph(pair):
    half_dir, half, full_dir, full = pair
    model = onnx.load(half_dir / "model.onnx", load_external_data=False)
    scales = _scale_initializers(model)
    assert scales and set(scales.values()) == {onnx.TensorProto.FLOAT16}
    casts = [n for n in model.graph.node if n.op_type == "Cast" and "weight.scales" in n.name]
    assert sorted(n.input[0] for n in casts) == sorted(scales)
    assert all(n.attribute[0].i == onnx.TensorProto.FLOAT for n in casts)
    assert half["precision"]["scale_dtype"] == "fp16"

    plain = onnx.load(full_dir / "model.onnx", load_external_data=False)
    assert set(_scale_initializers(plain).values()) == {onnx.TensorProto.FLOAT}
    assert not [n for n in plain.graph.node if n.op_type == "Cast" and "scales" in n.name]


def test_fp16_scales_save_two_bytes_per_block_and_the_manifest_counts_them(pair):
    half_dir, half, full_dir, full = pair
    model = onnx.load(full_dir / "model.onnx", load_external_data=False)
    blocks = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer if t.name.endswith("weight.scales")}
    if half["architecture"]["tie_word_embeddings"]:  # the head's table is the embedding's, stored once
        del blocks["/lm_head/weight.scales"]
    saved = full["weights"]["stored_bytes"] - half["weights"]["stored_bytes"]
    assert blocks and saved == 2 * sum(blocks.values())
    data_saved = (full_dir / "model.onnx.data").stat().st_size - (half_dir / "model.onnx.data").stat().st_size
    # The external-data file also loses some alignment padding (64 bytes per small tensor at most).
    assert saved <= data_saved < saved + 64 * 2 * len(blocks)


def test_fp16_scales_change_logits_only_by_the_scales_rounding(pair, qwen2_ckpt):
    half_dir, half, full_dir, _ = pair
    arch = half["architecture"]
    ids = np.arange(3, 40, dtype=np.int64)
    a = _logits(half_dir, ids, arch["num_layers"], arch["num_kv_heads"], arch["head_dim"])
    b = _logits(full_dir, ids, arch["num_layers"], arch["num_kv_heads"], arch["head_dim"])
    assert np.abs(a - b).max() < 2e-2 * np.abs(b).max()
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.9


def test_onnxruntime_folds_the_scale_casts_so_kernels_see_constant_scales(pair, tmp_path):
    half_dir = pair[0]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "optimized.data")
    ort.InferenceSession(str(half_dir / "model.onnx"), so, providers=["CPUExecutionProvider"])
    optimized = onnx.load(tmp_path / "optimized.onnx", load_external_data=False)
    assert not [n for n in optimized.graph.node if n.op_type == "Cast" and "scales" in n.name]
    initializers = {t.name for t in optimized.graph.initializer}
    for node in optimized.graph.node:
        if node.op_type in ("MatMulNBits", "GatherBlockQuantized"):
            assert node.input[2] in initializers, node.name


def test_scale_dtype_is_validated():
    assert Precision().scale_dtype is None and Precision().scale_numpy_dtype is np.float32
    assert Precision(dtype="fp16").scale_numpy_dtype is np.float16
    assert Precision.preset("int8").scale_dtype == "fp16"
    with pytest.raises(ConfigError, match="scale_dtype 'fp32' needs dtype 'fp32'"):
        Precision(dtype="fp16", weights="int4", scale_dtype="fp32")
    with pytest.raises(ConfigError, match="scale_dtype 'bf16'"):
        Precision(scale_dtype="bf16")
