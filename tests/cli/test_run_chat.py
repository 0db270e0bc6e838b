"""`qwen-edge run --chat`: the answer on stdout, the reasoning apart (stderr, or its own JSON field), the
thinking budget, and a conversation whose history keeps the content and the reasoning apart."""

from __future__ import annotations

import io
import json

import pytest

from qwen_edge.cli import main
from tests.serve.scripted import CALL, REASONING, make_scripted_checkpoint


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from qwen_edge.build import BuildRequest, build
    from qwen_edge.precision import Precision

    root = tmp_path_factory.mktemp("scripted-cli")
    build(BuildRequest(make_scripted_checkpoint(root / "ckpt"), root / "bundle", Precision.preset("fp32")))
    return root / "bundle"


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_chat_prints_the_answer_and_keeps_the_reasoning_on_stderr(bundle, capsys):
    code, out, err = _run(capsys, "run", str(bundle), "--chat", "Weather in Paris?", "--greedy",
                          "--max-new-tokens", "12")
    assert code == 0
    assert REASONING in err and REASONING not in out
    assert "<think>" not in out and "</think>" not in out
    assert CALL.strip() in out  # no --tools on the command line: the call is the answer's text


def test_chat_json_splits_reasoning_and_content(bundle, capsys):
    code, out, _ = _run(capsys, "run", str(bundle), "--chat", "Weather in Paris?", "--greedy",
                        "--max-new-tokens", "12", "--json")
    report = json.loads(out)
    assert code == 0 and report["reasoning"].strip() == REASONING
    assert CALL.strip() in report["content"] and REASONING not in report["content"]
    assert report["finish_reason"] in ("stop", "length") and report["token_ids"]


def test_thinking_budget_from_the_command_line(bundle, capsys):
    code, out, _ = _run(capsys, "run", str(bundle), "--chat", "Weather in Paris?", "--greedy",
                        "--max-new-tokens", "40", "--thinking-budget", "0", "--json")
    report = json.loads(out)
    assert code == 0 and REASONING not in (report["reasoning"] or "")
    assert "Considering the limited time" in report["reasoning"]


def test_thinking_budget_needs_chat(bundle, capsys):
    code, _, err = _run(capsys, "run", str(bundle), "--prompt", "x", "--thinking-budget", "4")
    assert code != 0 and "--thinking-budget" in err and len(err.strip().splitlines()) == 1


def test_conversation_keeps_content_and_reasoning_apart(bundle, capsys, monkeypatch):
    seen = []
    from qwen_edge.runtime import Generator

    original = Generator.start_chat

    def spy(self, messages, **kwargs):
        seen.append([dict(m) for m in messages])
        return original(self, messages, **kwargs)

    monkeypatch.setattr(Generator, "start_chat", spy)
    monkeypatch.setattr("sys.stdin", io.StringIO("Weather in Paris?\nAnd tomorrow?\n\n"))
    code, out, _ = _run(capsys, "run", str(bundle), "--chat", "--greedy", "--max-new-tokens", "12")
    assert code == 0 and len(seen) == 2
    answer = seen[1][1]
    assert answer["role"] == "assistant" and answer["reasoning_content"].strip() == REASONING
    assert REASONING not in answer["content"] and "<think>" not in answer["content"]
