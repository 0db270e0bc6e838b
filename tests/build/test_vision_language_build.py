"""Building vision-language checkpoints: what the bundle holds, and the targets that refuse them by name."""

from __future__ import annotations

import json

import pytest

from qwen_edge.build.run import build_targets
from qwen_edge.errors import ConfigError, GraphError
from qwen_edge.targets import get_target


def test_qwen25vl_bundle_files_and_manifest(vl_bundles):
    bundle = vl_bundles("int4")
    manifest = json.loads((bundle / "manifest.json").read_text())
    io = manifest["io"]
    assert io["inputs"][:3] == ["inputs_embeds", "attention_mask", "position_ids"]
    assert io["vision"]["vision_file"] == "vision.onnx" and io["vision"]["dtype"] == "fp32"
    assert manifest["precision"]["weights"] == "int4"
    genai = json.loads((bundle / "genai_config.json").read_text())["model"]
    assert genai["type"] == "qwen2_5_vl" and genai["vision"]["inputs"] == {"pixel_values": "pixel_values",
                                                                          "image_grid_thw": "image_grid_thw"}
    processor = json.loads((bundle / "processor_config.json").read_text())["processor"]
    assert [t["operation"]["type"] for t in processor["transforms"]][-1] == "PatchImage"


def test_qwen3vl_bundle_has_deepstack_and_no_genai_config(vl_bundles):
    bundle = vl_bundles("fp32", "qwen3_vl")
    io = json.loads((bundle / "manifest.json").read_text())["io"]
    assert io["vision"]["deepstack"] == 2 and "deepstack_embeds" in io["inputs"]
    assert not (bundle / "genai_config.json").exists()


@pytest.mark.parametrize("target,error,match", [
    ("android", ConfigError, "take no passes yet"),
    ("openvino", GraphError, "only builder 'ort-contrib'"),
])
def test_targets_that_cannot_build_it_say_so(qwen25vl_ckpt, tmp_path, target, error, match):
    with pytest.raises(error, match=match):
        build_targets(qwen25vl_ckpt, tmp_path / "out", [get_target(target)], precision="fp32")
    assert not (tmp_path / "out").exists()
