"""A tiny random Qwen3 checkpoint builds for every target; executed targets carry parity numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qwen_edge.errors import VerificationError
from qwen_edge.build import build_targets
from qwen_edge.graph.decoder import DecoderOptions
from qwen_edge.precision import Precision
from qwen_edge.targets import load_target_file, resolve_targets
from qwen_edge.targets.catalog import load_executor
from qwen_edge.verify.parity import ParityRequest

OWN_TARGETS = "cpu,openvino,directml,android,ios"


@pytest.fixture(scope="module")
def all_targets(tmp_path_factory, qwen3_ckpt):
    out = tmp_path_factory.mktemp("targets")
    manifests = build_targets(qwen3_ckpt, out, resolve_targets(OWN_TARGETS), parity=ParityRequest(gate=False))
    return out, manifests


def test_every_target_builds_with_its_manifest(all_targets):
    out, manifests = all_targets
    assert set(manifests) == set(OWN_TARGETS.split(","))
    for name, m in manifests.items():
        bundle = out / name
        assert json.loads((bundle / "manifest.json").read_text())["target"]["name"] == name
        assert (bundle / m["io"]["model_file"]).is_file()
        if m["target"]["executed"]:
            assert m["parity"]["parity"]["positions"] > 0
            assert np.isfinite(m["parity"]["parity"]["kl_divergence_mean"])
    dml = manifests["directml"]
    assert dml["target"]["execution"] == "validated, not executed"
    assert dml["parity"] == {"executed": False, "reason": "validated, not executed: no such device here"}
    assert dml["precision"]["dtype"] == "fp16" and dml["precision"]["weights"] == "int4"
    assert dml["passes"][0]["result"]["providers"]["DmlExecutionProvider"]["unsupported_nodes"] == 0
    genai = json.loads((out / "directml" / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["session_options"]["provider_options"][0].keys() == {"dml"}


def test_passes_are_recorded_with_olive_versions(all_targets):
    _, manifests = all_targets
    ov = manifests["openvino"]
    names = [p["name"] for p in ov["passes"]]
    assert names == ["openvino.convert", "openvino.compress_weights", "openvino.npu_config"]
    assert ov["passes"][0]["olive_pass"] == "OpenVINOConversion" and ov["passes"][0]["olive_version"]
    assert ov["passes"][1]["result"]["nncf_mode"] == "INT4_ASYM"
    assert ov["io"]["model_file"] == "openvino_model.xml"
    assert manifests["cpu"]["passes"] == []


def test_mobile_bundles_ship_ort_and_reduced_build_config(all_targets):
    out, manifests = all_targets
    for name in ("android", "ios"):
        m = manifests[name]
        assert m["io"]["model_file"] == "model.ort"
        assert not (out / name / "model.onnx").exists()
        config = (out / name / "required_operators.config").read_text()
        assert "com.microsoft" in config and "MatMulNBits" in config
        ort_pass = m["passes"][-1]["result"]
        assert ort_pass["within_budget"] is True and ort_pass["ort_bytes"] > 0


def test_android_ort_matches_int4_cpu_greedy_tokens(all_targets):
    out, _ = all_targets
    prompt = np.array([5, 17, 42, 9, 77, 3], np.int64)
    cpu = load_executor(out / "cpu").greedy(prompt, 12)
    android = load_executor(out / "android").greedy(prompt, 12)
    assert android == cpu


def test_ort_model_computes_the_same_logits_as_the_cpu_bundle(tmp_path, qwen2_ckpt):
    # Regression: converted at a lower optimization level than the CPU session uses, the .ort graph
    # of a model with q/k/v biases was fused differently and its logits drifted (greedy tokens split
    # on the trained Qwen2 model).
    from qwen_edge.runtime import Model

    build_targets(qwen2_ckpt, tmp_path, resolve_targets("cpu,android"), precision="int4")
    ids = np.arange(3, 60, dtype=np.int64)
    np.testing.assert_array_equal(Model(tmp_path / "android").logits(ids), Model(tmp_path / "cpu").logits(ids))


def test_openvino_float_ir_matches_fp32_bundle(tmp_path, qwen3_ckpt):
    from qwen_edge.targets.openvino.runner import OpenVINOModel
    from qwen_edge.runtime import Model

    manifests = build_targets(qwen3_ckpt, tmp_path, resolve_targets("cpu,openvino"), precision="fp32")
    assert manifests["openvino"]["passes"][1]["result"]["skipped"]
    ids = np.arange(3, 40, dtype=np.int64)
    ref = Model(tmp_path / "cpu").logits(ids)
    ov = OpenVINOModel(tmp_path / "openvino")
    np.testing.assert_allclose(ov.logits(ids), ref, atol=1e-4)
    np.testing.assert_allclose(ov.cached_logits(ids, prefill=20), ref, atol=1e-4)


def test_parity_outside_tolerance_fails_the_build_unless_told(tmp_path, qwen3_ckpt):
    strict = (Path(__file__).resolve().parents[2] / "targets" / "cpu.toml").read_text() + \
        "\n[parity.int4]\nmin_top1 = 1.0\nmax_kl = 0.0\n"
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "cpu.toml").write_text(strict)
    target = load_target_file(tmp_path / "t" / "cpu.toml")
    with pytest.raises(VerificationError, match="target 'cpu': parity outside tolerance"):
        build_targets(qwen3_ckpt, tmp_path / "gated", [target], precision="int4", parity=ParityRequest())
    assert not (tmp_path / "gated").exists()
    m = build_targets(qwen3_ckpt, tmp_path / "told", [target], precision="int4",
                      parity=ParityRequest(gate=False))["cpu"]
    assert m["parity"]["passed"] is False and m["parity"]["gated"] is False


def test_a_bundle_builder_gets_its_own_precision_and_options_beside_graph_targets(qwen3_ckpt, tmp_path):
    # npu-qnn's builder makes its own precisions (w8a16) and takes its own options; a mixed target
    # list must route both to it through the same registry and build the others from one load.
    from dataclasses import dataclass, fields

    from qwen_edge.targets import builders

    @dataclass(frozen=True)
    class FakeOptions:
        precision: str = "w8a16"
        context: int = 1024

        @classmethod
        def from_dict(cls, values, where):
            unknown = set(values) - {f.name for f in fields(cls)}
            assert not unknown, (where, unknown)
            return cls(**values)

    jobs = []

    @builders.register_bundle_builder("test-whole-bundle", provides=("onnx",), options=FakeOptions,
                                      precisions=("w8a16", "w4a16"))
    def fake(job):
        jobs.append(job)
        (job.stage / "model.onnx").write_bytes(b"not a graph")
        return {"precision": {"name": job.options.precision}, "io": {"model_file": "model.onnx"}}

    try:
        toml = tmp_path / "whole.toml"
        text = (Path(__file__).resolve().parents[2] / "targets" / "npu-qnn.toml").read_text()
        toml.write_text(text.replace('name = "npu-qnn"', 'name = "whole"')
                        .replace('builder = "qnn-static"', 'builder = "test-whole-bundle"'))
        whole = load_target_file(toml)
        manifests = build_targets(qwen3_ckpt, tmp_path / "out", [resolve_targets("cpu")[0], whole],
                                  builder_options={"context": 64, "chunk": 8},
                                  options=DecoderOptions(max_positions=64))
    finally:
        builders._BUILDERS.pop("test-whole-bundle", None)
    assert list(manifests) == ["cpu", "whole"]
    assert [j.options for j in jobs] == [FakeOptions(precision="w8a16", context=64)]  # "chunk" is not its option
    assert manifests["whole"]["target"]["builder"] == "test-whole-bundle"
    assert manifests["whole"]["precision"] == {"name": "w8a16"} and manifests["cpu"]["precision"]["name"] == "int4-fp32"
    assert (tmp_path / "out" / "whole" / "tokenizer.json").is_file()  # the common stages ran around it


def test_build_refuses_a_whole_bundle_target_through_a_float_build_request(qwen3_ckpt, tmp_path):
    from qwen_edge.build import BuildRequest, build
    from qwen_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="npu-qnn"):
        build(BuildRequest(qwen3_ckpt, tmp_path / "b", Precision.preset("int4"), target="npu-qnn"))


def test_data_aware_quantization_on_a_builder_without_plans_is_a_config_error(qwen3_ckpt, tmp_path):
    # The standard-op builder (openvino) cannot take a quantization plan: say so before calibrating.
    from qwen_edge.build import BuildRequest, build
    from qwen_edge.errors import ConfigError
    from qwen_edge.quant.data_aware import CalibrationConfig

    with pytest.raises(ConfigError, match="openvino.*ort-contrib"):
        build(BuildRequest(qwen3_ckpt, tmp_path / "b", Precision.preset("int4"), target="openvino",
                           calibration=CalibrationConfig()))
    assert not (tmp_path / "b").exists()


def test_mobile_bundles_are_byte_reproducible(tmp_path, qwen2_ckpt):
    # onnxruntime writes an .ort file's kernel-type table in an order that changes from process to
    # process, and the operator config named the staging directory: two builds differed in both.
    import hashlib
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    digests = []
    for out in (tmp_path / "a", tmp_path / "a-much-longer-output-path"):
        done = subprocess.run([sys.executable, "-m", "qwen_edge.cli", "build", str(qwen2_ckpt), "-o", str(out),
                               "--target", "android", "-q"], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(repo)})
        assert done.returncode == 0, done.stderr[-2000:]
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())})
    assert digests[0] == digests[1]
    assert "a-much-longer" not in (tmp_path / "a-much-longer-output-path" / "required_operators.config").read_text()
