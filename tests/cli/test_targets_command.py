"""`qwen-edge targets` and `qwen-edge build --target a,b` from the command line."""

from __future__ import annotations

import json

from qwen_edge.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_targets_lists_execution_plainly(capsys):
    code, stdout, _ = _run(capsys, "targets", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(stdout)["targets"]}
    assert rows["directml"]["execution"] == "validated, not executed"
    assert rows["openvino"]["execution"] == "executed"
    assert "validated, not executed" in rows["android"]["execution"]
    assert rows["cpu"]["precisions"] == ["fp32", "fp16", "int8", "int4"]
    code, text, _ = _run(capsys, "targets")
    assert code == 0 and "directml" in text and "validated, not executed" in text


def test_build_several_targets_into_subdirectories(qwen3_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "build", str(qwen3_ckpt), "-o", str(out), "--target", "cpu,directml",
                             "--verify", "--no-parity-gate", "--json")
    assert code == 0, err
    report = json.loads(stdout)["targets"]
    assert set(report) == {"cpu", "directml"}
    assert (out / "cpu" / "model.onnx").is_file() and (out / "directml" / "manifest.json").is_file()
    assert report["directml"]["execution"] == "validated, not executed"
    assert report["cpu"]["parity"]["parity"]["positions"] > 0


def test_unknown_target_is_a_config_error(qwen3_ckpt, tmp_path, capsys):
    code, _, err = _run(capsys, "build", str(qwen3_ckpt), "-o", str(tmp_path / "o"), "--target", "cpu,tpu")
    assert code == 2 and "target 'tpu' not found" in err
