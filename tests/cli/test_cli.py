"""The command line: exit codes, --json output and one-line errors."""

from __future__ import annotations

import json

import pytest

from qwen_edge.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_build_run_inspect_verify_roundtrip(qwen2_ckpt, tmp_path, capsys):
    out = tmp_path / "bundle"
    code, stdout, _ = _run(capsys, "build", str(qwen2_ckpt), "-o", str(out), "--precision", "int4", "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["precision"]["weights"] == "int4" and report["bundle_bytes"] > 0

    code, stdout, _ = _run(capsys, "run", str(out), "--prompt", "def f(x):", "--max-new-tokens", "5", "--json")
    assert code == 0 and len(json.loads(stdout)["token_ids"]) <= 5

    code, stdout, _ = _run(capsys, "inspect", str(out), "--json")
    assert code == 0 and json.loads(stdout)["precision"]["name"] == "int4-fp32"

    code, stdout, _ = _run(capsys, "verify", str(out), "--integrity", "--json")
    assert code == 0 and json.loads(stdout)["intact"] is True

    code, stdout, _ = _run(capsys, "verify", str(out), "--reference", str(qwen2_ckpt), "--reference-kind", "numpy",
                           "--json")
    report = json.loads(stdout)
    assert code == 0 and report["passed"], report
    assert report["parity"]["top1_agreement"] > 0.7

    code, stdout, _ = _run(capsys, "bench", str(out), "--prompt-tokens", "8", "--new-tokens", "4", "--runs", "1",
                           "--json")
    assert code == 0 and json.loads(stdout)["decode_tokens_per_s_median"] > 0


def test_integrity_check_catches_a_one_byte_change(bundles, tmp_path, capsys):
    import shutil

    bundle = tmp_path / "copy"
    shutil.copytree(bundles("qwen2", "int4"), bundle)
    data = bytearray((bundle / "model.onnx.data").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / "model.onnx.data").write_bytes(bytes(data))
    code, stdout, _ = _run(capsys, "verify", str(bundle), "--integrity", "--json")
    assert code == 5
    assert any("model.onnx.data" in p for p in json.loads(stdout)["problems"])


def test_errors_are_one_line_with_a_nonzero_exit(tmp_path, capsys):
    code, _, err = _run(capsys, "build", str(tmp_path / "nope"), "-o", str(tmp_path / "o"))
    assert code == 3
    assert err.count("\n") == 1 and "nope" in err
    code, _, err = _run(capsys, "run", str(tmp_path), "--prompt", "x")
    assert code == 5 and "manifest" in err


def test_verify_without_reference_is_a_usage_error(bundles, capsys):
    code, _, err = _run(capsys, "verify", str(bundles("qwen2", "fp32")))
    assert code == 2 and "--reference" in err


def test_an_unknown_precision_is_a_usage_error(qwen2_ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["build", str(qwen2_ckpt), "-o", str(tmp_path / "o"), "--precision", "int3"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--precision" in err and "int3" in err
    assert not (tmp_path / "o").exists()


def test_an_unsupported_block_size_is_a_config_error(qwen2_ckpt, tmp_path, capsys):
    code, _, err = _run(capsys, "build", str(qwen2_ckpt), "-o", str(tmp_path / "o"), "--block-size", "48")
    assert code == 2 and "block_size" in err and "48" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_graph_the_target_cannot_take_exits_4(qwen3_moe_ckpt, tmp_path, capsys):
    # QMoE needs the block size to divide the experts' widths (32 in the tiny MoE)
    code, _, err = _run(capsys, "build", str(qwen3_moe_ckpt), "-o", str(tmp_path / "o"), "--block-size", "64")
    assert code == 4 and "block size (64)" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_verification_outside_tolerance_exits_6(bundles, tmp_path, capsys):
    # The same shapes with other weights: the bundle does not match this reference.
    from qwen_edge.checkpoint.tiny import TINY_QWEN2, make_tiny_checkpoint

    other = make_tiny_checkpoint(tmp_path / "other", TINY_QWEN2, seed=7)
    code, stdout, _ = _run(capsys, "verify", str(bundles("qwen2", "fp32")), "--reference", str(other),
                           "--reference-kind", "numpy", "--json")
    report = json.loads(stdout)
    assert code == 6 and report["passed"] is False and "top-1" in report["failure"]
    code, stdout, _ = _run(capsys, "verify", str(bundles("qwen2", "fp32")), "--reference", str(other),
                           "--reference-kind", "numpy")
    assert code == 6 and "FAILED: prefill top-1" in stdout


def test_interactive_chat_keeps_history(bundles, capsys, monkeypatch):
    import io

    from qwen_edge.runtime import Generator

    seen = []
    render = Generator.render_chat

    def recording(self, messages, **kwargs):
        seen.append(([m["role"] for m in messages], {k: v for k, v in kwargs.items() if v is not None}))
        return render(self, messages, **kwargs)

    monkeypatch.setattr(Generator, "render_chat", recording)
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\nand again\n\n"))
    code, stdout, _ = _run(capsys, "run", str(bundles("qwen2", "fp32")), "--chat", "--max-new-tokens", "3", "-q",
                           "--template-vars", '{"enable_thinking": false}')
    assert code == 0 and stdout
    assert seen == [(["user"], {"enable_thinking": False}),
                    (["user", "assistant", "user"], {"enable_thinking": False})]


def test_template_vars_must_be_a_json_object(bundles, capsys):
    code, _, err = _run(capsys, "run", str(bundles("qwen2", "fp32")), "--chat", "hi", "--template-vars", "[1]")
    assert code == 2 and "--template-vars" in err
