"""npu-qnn builds executed on the QNN HTP backend (emulated on x86-64) with CPU fallback disabled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime_qnn", reason="the npu-qnn target needs onnxruntime-qnn (the 'qnn' extra)")

from qwen_edge.cli import main  # noqa: E402
from qwen_edge.errors import GraphError, VerificationError  # noqa: E402
from qwen_edge.build import BuildRequest, build  # noqa: E402
from qwen_edge.targets.qnn import load_qnn_bundle  # noqa: E402
from qwen_edge.graph import static_pair as graph_mod  # noqa: E402
from qwen_edge.targets.qnn.parity import gate  # noqa: E402
from qwen_edge.runtime.errors import ContextOverflowError  # noqa: E402

def build_qnn(checkpoint, output, **options) -> dict:
    """An npu-qnn build through the same path as every target, with the builder's own options."""
    return build(BuildRequest(checkpoint, output, target="npu-qnn", builder_options=options))


# Tiny random models have near-flat logits, where a 16-bit activation grid alone flips a few
# near-ties; the trained model is where the recipe's own tolerance is checked.
TINY = dict(context=32, chunk=8, calibration_tokens=64, decode_calibration_steps=4, min_top1=0.8)


@pytest.fixture(scope="module")
def qwen3_w8a16(qwen3_ckpt, tmp_path_factory):
    work = tmp_path_factory.mktemp("qnn-qwen3")
    text = work / "calibration.txt"
    text.write_text("def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n" * 8, encoding="utf-8")
    out = work / "bundle"
    manifest = build_qnn(qwen3_ckpt, out, precision="w8a16", calibration_text=text, **TINY)
    return out, manifest


def test_tiny_qwen3_builds_and_runs_entirely_on_the_htp(qwen3_w8a16, qwen3_ckpt):
    out, manifest = qwen3_w8a16
    for name in ("prefill", "decode"):
        where = manifest["qnn"]["placement"][name]
        assert where["nodes"] > 100 and where["on_npu"] == where["nodes"] and where["off_npu"] == []
        assert where["op_types_on_npu"]["MatMul"] > 0 and where["op_types_on_npu"]["Softmax"] == 2  # 2 layers
        assert where["op_types_on_npu"]["QuantizeLinear"] > 0  # the QDQ graph went to the HTP whole
    names = [p["name"] for p in manifest["passes"]]
    assert names == ["static_graph_pair", "qnn_static_qdq", "shared_weights_repack", "qnn_htp_placement_check"]
    qdq = manifest["passes"][1]["params"]
    assert qdq["calibration_source"] == "calibration.txt" and qdq["graphs"]["decode"]["calibration_samples"] > 0
    assert manifest["passes"][1]["implementation"].startswith("olive.passes.onnx.quantization.OnnxStaticQuantization")
    assert manifest["quality"]["passed"] and manifest["quality"]["gate"] == "enforced"
    assert manifest["weights"]["shared_between_graphs_bytes"] > 0.9 * manifest["weights"]["stored_bytes"]
    # The bundle loads on the HTP on its own and agrees with the transformers reference.
    from qwen_edge.verify.reference import TransformersReference

    qb = load_qnn_bundle(out)
    ids = np.random.default_rng(3).integers(0, 384, size=20)
    ref = TransformersReference(qwen3_ckpt).logits(ids)
    got = qb.logits(ids)
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.8
    with pytest.raises(ContextOverflowError, match="static context of 32"):
        qb.runner.logits(np.zeros(33, np.int64))


def test_cli_runs_the_bundle_and_refuses_a_prompt_over_the_static_context(qwen3_w8a16, capsys):
    out, _ = qwen3_w8a16
    assert main(["run", str(out), "--prompt", "def f(x):", "--max-new-tokens", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 1 <= len(result["token_ids"]) <= 3
    assert result["placement"]["decode"]["on_npu"] == result["placement"]["decode"]["nodes"]
    rc = main(["run", str(out), "--prompt", "x = 1\n" * 40, "--max-new-tokens", "2"])
    assert rc == ContextOverflowError.exit_code and rc != 0
    assert "static context of 32 tokens" in capsys.readouterr().err


def test_unsupported_node_fails_the_build_with_its_name(qwen2_ckpt, tmp_path, monkeypatch):
    original = graph_mod._GraphEmitter.mlp

    def mlp_with_hardmax(self, i, x, w):
        y = original(self, i, x, w)
        return self.g.one("Hardmax", [y], f"/model/layers.{i}/mlp/unsupported/Hardmax", axis=-1) if i == 0 else y

    monkeypatch.setattr(graph_mod._GraphEmitter, "mlp", mlp_with_hardmax)
    with pytest.raises(GraphError, match=r"cannot run on the QNN HTP.*/model/layers\.0/mlp/unsupported/Hardmax"):
        build_qnn(qwen2_ckpt, tmp_path / "bundle", precision="w8a16", **TINY)
    assert not (tmp_path / "bundle").exists()


def test_a_target_with_cpu_fallback_builds_and_records_the_nodes_off_the_npu(qwen2_ckpt, tmp_path, monkeypatch):
    # The target file, not an option, says whether nodes may fall back to the CPU.
    from qwen_edge.build import build_targets
    from qwen_edge.targets import TARGETS_DIR, load_target_file

    original = graph_mod._GraphEmitter.mlp

    def mlp_with_hardmax(self, i, x, w):
        y = original(self, i, x, w)
        return self.g.one("Hardmax", [y], f"/model/layers.{i}/mlp/unsupported/Hardmax", axis=-1) if i == 0 else y

    monkeypatch.setattr(graph_mod._GraphEmitter, "mlp", mlp_with_hardmax)
    (tmp_path / "t").mkdir()
    text = (TARGETS_DIR / "npu-qnn.toml").read_text().replace('fallback = "none"', 'fallback = "cpu"')
    (tmp_path / "t" / "npu-qnn.toml").write_text(text)
    target = load_target_file(tmp_path / "t" / "npu-qnn.toml")
    manifest = build_targets(qwen2_ckpt, tmp_path / "bundle", [target],
                             builder_options=dict(TINY, enforce_parity=False))["npu-qnn"]
    assert manifest["target"]["fallback"] == "cpu"
    for graph in ("prefill", "decode"):
        off = manifest["qnn"]["placement"][graph]["off_npu"]
        assert {"node": "/model/layers.0/mlp/unsupported/Hardmax", "op": "Hardmax"} in off
    check = next(p for p in manifest["passes"] if p["name"] == "qnn_htp_placement_check")
    assert check["params"]["session.disable_cpu_ep_fallback"] == 0


@pytest.mark.slow
def test_cli_builds_w4a16_with_context_binaries_and_verifies(qwen2_ckpt, tmp_path, capsys):
    out = tmp_path / "bundle"
    rc = main(["build", str(qwen2_ckpt), "--target", "npu-qnn", "--precision", "w4a16", "-o", str(out),
               "--max-length", "32", "--chunk", "8", "--calibration-tokens", "64", "--context-binary",
               "--quantizer", "onnxruntime", "--no-parity-gate", "--json"])
    assert rc == 0
    built = json.loads(capsys.readouterr().out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["passes"][-1]["name"] == "qnn_context_binary"
    assert manifest["passes"][1]["implementation"].startswith("onnxruntime.quantization")
    assert manifest["passes"][1]["params"]["weights"].startswith("int4")
    assert manifest["quality"]["gate"] == "waived" and "passed" in manifest["quality"]
    assert built["placement"]["decode"]["on_npu"] == built["placement"]["decode"]["nodes"]
    for name in manifest["io"]["context_binaries"].values():
        assert (out / name).is_file()
    qb = load_qnn_bundle(out)  # loads the EPContext models
    assert qb.placement["prefill"]["by_provider"] == {"QNNExecutionProvider": qb.placement["prefill"]["nodes"]}
    text = tmp_path / "text.txt"
    text.write_text("for i in range(10):\n    print(i * i)\n" * 6, encoding="utf-8")
    rc = main(["verify", str(out), "--reference", str(qwen2_ckpt), "--reference-kind", "numpy", "--json",
               "--text", str(text), "--max-tokens", "64"])
    report = json.loads(capsys.readouterr().out)
    assert rc in (0, 6) and report["backend"] == "htp" and report["parity"]["positions"] > 0
    assert report["text_parity"]["windows"] == 2 and report["perplexity"]["bundle"]["tokens_scored"] == 62
    assert rc == (0 if report["passed"] else 6)


def test_parity_gate_fails_outside_tolerance_unless_waived():
    report = {"prefill": {"positions": 10, "top1_agreement": 0.5, "kl_divergence_mean": 0.01},
              "decode": {"positions": 4, "top1_agreement": 1.0, "kl_divergence_mean": 0.0}}
    tol = {"min_top1": 0.9, "max_kl": 0.05}
    with pytest.raises(VerificationError, match="prefill top-1 agreement 0.5000"):
        gate(report, tol, True, "x")
    assert "prefill" in gate(report, tol, False, "x")
    report["prefill"]["top1_agreement"] = 0.95
    assert gate(report, tol, True, "x") is None


def test_json_on_stdout_stays_parseable_when_the_htp_library_prints(qwen3_w8a16):
    import os
    import subprocess
    import sys

    out, _ = qwen3_w8a16
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    done = subprocess.run([sys.executable, "-m", "qwen_edge.cli", "run", str(out), "--prompt", "def f():",
                           "--max-new-tokens", "2", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert isinstance(json.loads(done.stdout)["token_ids"], list)
