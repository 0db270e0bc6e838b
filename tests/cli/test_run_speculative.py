"""`qwen-edge run --speculative` and `qwen-edge build --genai-speculative`."""

from __future__ import annotations

import json

import pytest

from qwen_edge.cli import main
from qwen_edge.bundle.genai_config import speculative_section
from qwen_edge.errors import ConfigError


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_speculative_gives_the_plain_tokens(bundles, capsys):
    bundle = str(bundles("qwen2", "int4"))
    prompt = "def f(x):\n    return x\n\ndef f(x):\n"
    runs = []
    for extra in ([], ["--speculative", "ngram"], ["--speculative", f"draft:{bundles('qwen35', 'fp32')}"]):
        code, stdout, _ = _run(capsys, "run", bundle, "--prompt", prompt, "--greedy", "--max-new-tokens", "16",
                               "--json", *extra)
        assert code == 0
        runs.append(json.loads(stdout))
    assert runs[0]["token_ids"] == runs[1]["token_ids"] == runs[2]["token_ids"]
    assert runs[1]["stats"]["verify_passes"] > 0 and runs[0]["stats"]["verify_passes"] == 0


def test_run_speculative_errors_are_one_line(bundles, capsys):
    code, _, err = _run(capsys, "run", str(bundles("qwen2", "int4")), "--prompt", "x", "--speculative", "beam")
    assert code != 0 and "speculative method" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "run", str(bundles("qwen2", "int4")), "--prompt", "x", "--speculative", "mtp")
    assert code != 0 and "MTP" in err


def test_build_writes_genai_speculative_block(qwen2_ckpt, tmp_path, capsys):
    out = tmp_path / "b"
    code, _, _ = _run(capsys, "build", str(qwen2_ckpt), "-o", str(out), "--precision", "int4", "--quiet",
                      "--genai-speculative", "ngram")
    assert code == 0
    config = json.loads((out / "genai_config.json").read_text())
    # onnxruntime-genai 0.18 reads this top-level block (its speculative options); checked by hand with the
    # peers venv: og.GeneratorParams(model).get_speculative_options() then shows ngram_size 3
    assert config["speculative"] == {"ngram_size": 3, "max_draft_tokens": 4}
    with pytest.raises(ConfigError, match="genai_speculative"):
        speculative_section("ngram", hybrid=True)
    with pytest.raises(ConfigError, match="genai_speculative"):
        speculative_section("eagle", hybrid=False)


def test_build_exact_speculation_and_run_notes_a_bundle_without_it(qwen2_ckpt, bundles, tmp_path, capsys):
    out = tmp_path / "exact"
    code, _, _ = _run(capsys, "build", str(qwen2_ckpt), "-o", str(out), "--precision", "int4", "--quiet",
                      "--exact-speculation")
    assert code == 0
    assert json.loads((out / "manifest.json").read_text())["io"]["attention_spare_rows"] == 1
    assert json.loads((out / "genai_config.json").read_text())["search"]["past_present_share_buffer"] is True
    note = "built without --exact-speculation"
    for bundle, noted in ((out, False), (bundles("qwen2", "int4"), True)):
        code, _, err = _run(capsys, "run", str(bundle), "--prompt", "def f(x):", "--greedy", "--max-new-tokens", "4",
                            "--speculative", "ngram")
        assert code == 0 and (note in err) == noted, err
