"""The trained-checkpoint fixture skips where the checkpoints are absent (a fresh clone), and fails
instead under QWEN_EDGE_REQUIRE_TRAINED_MODELS=1, which CI sets (.ci/run)."""

from __future__ import annotations

import pytest

from tests.conftest import REQUIRE_TRAINED, trained_checkpoint


def test_a_missing_checkpoint_skips_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv(REQUIRE_TRAINED, raising=False)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        trained_checkpoint(tmp_path / "missing", "SOME_SETTING")


def test_a_missing_checkpoint_fails_when_required(tmp_path, monkeypatch):
    monkeypatch.setenv(REQUIRE_TRAINED, "1")
    with pytest.raises(pytest.fail.Exception, match="SOME_SETTING.*requires it"):
        trained_checkpoint(tmp_path / "missing", "SOME_SETTING")


def test_a_present_checkpoint_is_returned(tmp_path, monkeypatch):
    monkeypatch.setenv(REQUIRE_TRAINED, "1")
    (tmp_path / "config.json").write_text("{}")
    assert trained_checkpoint(tmp_path, "SOME_SETTING") == tmp_path


def test_ci_requires_the_trained_checkpoints():
    from pathlib import Path

    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert f"{REQUIRE_TRAINED}=1" in ci
