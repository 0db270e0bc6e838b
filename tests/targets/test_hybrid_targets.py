"""Qwen3.5 (hybrid linear attention) per target: cpu and the mobile .ort targets build and pass their
parity gate; a target whose provider has no kernel for the linear-attention operators refuses in
one line naming the target and the operator, and writes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_edge.build import build_targets
from qwen_edge.cli import main
from qwen_edge.runtime import Model
from qwen_edge.targets import resolve_targets
from qwen_edge.targets.catalog import load_executor
from qwen_edge.verify.parity import ParityRequest


@pytest.fixture(scope="module")
def hybrid_targets(tmp_path_factory, qwen35_ckpts):
    out = tmp_path_factory.mktemp("hybrid-targets")
    # fp32: the gate's int4 tolerances are set for trained weights (the slow test below runs those);
    # a random tiny model's int4 error says nothing about the targets.
    manifests = build_targets(qwen35_ckpts("dense", "multimodal", "tied"), out, resolve_targets("cpu,android,ios"),
                              precision="fp32", parity=ParityRequest())  # gated: a parity miss fails the build
    return out, manifests


def test_cpu_and_mobile_targets_build_and_pass_parity(hybrid_targets):
    out, manifests = hybrid_targets
    assert set(manifests) == {"cpu", "android", "ios"}
    for name, m in manifests.items():
        assert m["target"]["executed"], name
        assert m["parity"]["passed"] is True and m["parity"]["parity"]["positions"] > 0, name
        assert m["io"]["state_layers"] == [0, 1, 3] and m["io"]["kv_layers"] == [2, 4]
    for name in ("android", "ios"):
        config = (out / name / "required_operators.config").read_text()
        for op in ("LinearAttention", "LinearAttentionGate", "CausalConvWithState", "GatedRMSNorm", "GroupQueryAttention"):
            assert op in config, (name, op)


def test_ort_bundle_carries_states_like_the_cpu_bundle(hybrid_targets):
    out, _ = hybrid_targets
    ids = np.arange(3, 40, dtype=np.int64)
    np.testing.assert_allclose(Model(out / "android").logits(ids), Model(out / "cpu").logits(ids), atol=1e-4)
    prompt = np.array([5, 17, 42, 9, 77, 3], np.int64)
    assert load_executor(out / "android").greedy(prompt, 12) == load_executor(out / "cpu").greedy(prompt, 12)


def test_moe_hybrid_builds_for_android_with_parity(tmp_path, qwen35_ckpts):
    manifests = build_targets(qwen35_ckpts("moe"), tmp_path, resolve_targets("cpu,android"), precision="int8",
                              parity=ParityRequest())
    assert manifests["android"]["parity"]["passed"] is True
    assert "QMoE" in (tmp_path / "android" / "required_operators.config").read_text()


@pytest.mark.parametrize("target,operator", [
    ("directml", "com.microsoft.CausalConvWithState"),
    ("openvino", "com.microsoft.LinearAttention"),
    ("npu-qnn", "com.microsoft.LinearAttention"),
])
def test_targets_without_linear_attention_kernels_refuse_in_one_line(target, operator, tmp_path, capsys,
                                                                     qwen35_ckpts):
    checkpoint = qwen35_ckpts("dense")
    capsys.readouterr()  # making the checkpoint printed transformers' progress
    out = tmp_path / "bundle"
    code = main(["build", str(checkpoint), "-o", str(out), "--target", target, "-q"])
    _, err = capsys.readouterr()
    assert code == 4
    assert err.startswith(f"qwen-edge: error: target '{target}': ") and err.count("\n") == 1, err
    assert operator in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_trained_qwen35_int4_passes_the_gate_on_cpu_and_android(tmp_path, trained_qwen35):
    manifests = build_targets(trained_qwen35, tmp_path, resolve_targets("cpu,android"), parity=ParityRequest())
    for name, m in manifests.items():
        assert m["precision"]["weights"] == "int4" and m["parity"]["passed"] is True, name
    prompt = np.array(Model(tmp_path / "cpu").encode("import os\n\n\ndef main(argv):\n"), np.int64)
    assert load_executor(tmp_path / "android").greedy(prompt, 24) == load_executor(tmp_path / "cpu").greedy(prompt, 24)
