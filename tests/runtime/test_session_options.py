"""The bundle's recommended session settings (manifest `runtime`) reach the onnxruntime session."""

from __future__ import annotations

import json
import shutil

import pytest

from qwen_edge.errors import BundleError
from qwen_edge.runtime import Model
from qwen_edge.runtime.model import RuntimeOptions, _session_options


def test_cpu_target_writes_its_session_settings_into_the_manifest(bundles):
    runtime = json.loads((bundles("qwen2", "int4") / "manifest.json").read_text())["runtime"]
    assert runtime["graph_optimization_level"] == "all"
    assert runtime["config_entries"]["session.intra_op.allow_spinning"] == "1"


@pytest.mark.parametrize("level,expected", [("basic", "ORT_ENABLE_BASIC"), ("all", "ORT_ENABLE_ALL")])
def test_graph_optimization_level_comes_from_the_manifest(level, expected):
    so = _session_options(RuntimeOptions(), {"graph_optimization_level": level})
    assert so.graph_optimization_level.name == expected


def test_unknown_graph_optimization_level_is_a_bundle_error(bundles, tmp_path):
    bundle = shutil.copytree(bundles("qwen2", "fp32"), tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["runtime"]["graph_optimization_level"] = "fastest"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="graph_optimization_level 'fastest'"):
        Model(bundle)


@pytest.mark.parametrize("spinning,expected", [(None, "1"), (False, "0"), (True, "1")])
def test_spinning_option_overrides_the_manifest(spinning, expected):
    recommended = {"config_entries": {"session.intra_op.allow_spinning": "1"}}
    so = _session_options(RuntimeOptions(spinning=spinning), recommended)
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == expected
