"""Qwen3.5 (hybrid Gated DeltaNet + gated attention) bundles against transformers, dense and MoE,
in both checkpoint layouts, through the prefill and 16 decode steps of the states and caches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qwen_edge.build import BuildRequest, build
from qwen_edge.precision import Precision
from qwen_edge.runtime import Model
from qwen_edge.verify.executor import cached_path_logits
from tests.conftest import assert_logits_match, hf_logits_incremental

IDS = np.array([5, 17, 42, 99, 3, 250, 7, 8, 120, 64, 33, 301, 2, 77, 150, 11, 19, 260, 31, 44, 200, 9], np.int64)
PREFILL = 6  # then 16 decode steps
CASES = [("dense", "causal", "untied"), ("dense", "causal", "tied"), ("dense", "multimodal", "tied"),
         ("moe", "causal", "untied"), ("moe", "multimodal", "tied")]


@pytest.fixture(scope="module")
def fp32_bundles(qwen35_ckpts, tmp_path_factory):
    made = {}

    def get(case):
        if case not in made:
            out = tmp_path_factory.mktemp("-".join(case)) / "bundle"
            build(BuildRequest(qwen35_ckpts(*case), out, Precision.preset("fp32")))
            made[case] = out
        return made[case]

    return get


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_fp32_bundle_matches_transformers_prefill_and_16_decode_steps(case, qwen35_ckpts, fp32_bundles):
    expected = hf_logits_incremental(qwen35_ckpts(*case), IDS, PREFILL)
    got = cached_path_logits(Model(fp32_bundles(case)), IDS, prefill=PREFILL)
    assert_logits_match(got, expected, PREFILL)


def test_the_multimodal_layout_builds_its_language_model_and_reports_what_it_left_out(fp32_bundles):
    manifest = json.loads((fp32_bundles(("dense", "multimodal", "tied")) / "manifest.json").read_text())
    left_out = manifest["source"]["left_out"]
    assert set(left_out) == {"model.visual.", "mtp."} and left_out["mtp."] == 4 and left_out["model.visual."] > 0
    io = manifest["io"]
    assert io["kv_layers"] == [2, 4] and io["state_layers"] == [0, 1, 3]
    assert io["states"] == {"conv": {"shape": [96, 3], "dtype": "fp32"},
                            "recurrent": {"shape": [4, 16, 8], "dtype": "fp32"}}
    assert "past_key_values.2.key" in io["inputs"] and "past.3.recurrent" in io["inputs"]
    assert "past_key_values.0.key" not in io["inputs"]


def test_the_causal_layout_reports_nothing_left_out(fp32_bundles):
    manifest = json.loads((fp32_bundles(("dense", "causal", "untied")) / "manifest.json").read_text())
    assert "left_out" not in manifest["source"]


def test_linear_layers_use_separate_projections_and_a_channels_first_conv(fp32_bundles):
    """The layout onnxruntime's CPU provider runs fastest (graph/hybrid_decoder.py): no Split after a
    projection, and the conv fed [batch, channels, seq] between two Transposes."""
    import onnx

    graph = onnx.load(str(fp32_bundles(("dense", "causal", "untied")) / "model.onnx"), load_external_data=False).graph
    layer0 = [n for n in graph.node if n.name.startswith("/model/layers.0/")]
    projections = {n.name.split("/")[-2] for n in layer0 if n.op_type == "MatMul"}
    assert {"qkv_proj", "z_proj", "b_proj", "a_proj", "gate_proj", "up_proj"} <= projections
    splits = [n.name for n in layer0 if n.op_type == "Split"]
    assert splits == ["/model/layers.0/linear_attn/qkv_split/Split"]
    conv = next(n for n in layer0 if n.op_type == "CausalConvWithState")
    producer = {o: n for n in layer0 for o in n.output}
    assert producer[conv.input[0]].op_type == "Transpose"
    assert all(a.name != "channels_last" or a.i == 0 for a in conv.attribute)
