"""`qwen-edge pipeline`: a 2 checkpoints x 2 targets matrix, its cache, reports and failures."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qwen_edge.bundle import manifest as manifest_mod
from qwen_edge.cli import EXIT_PIPELINE_FAILED, main
from qwen_edge.errors import ConfigError
from qwen_edge.pipeline import load_pipeline, run_pipeline
from qwen_edge.checkpoint.tiny import TINY_QWEN2, TINY_QWEN3, make_tiny_checkpoint

PIPELINE = """
output = "dist"
cache = "cache"

[[checkpoints]]
name = "q2"
path = "ckpts/q2"

[[checkpoints]]
name = "q3"
path = "ckpts/q3"

[[targets]]
name = "cpu-fp32"
target = "cpu"
precision = "fp32"
gate = {{ reference = "numpy" }}

[[targets]]
name = "cpu-int4"
target = "cpu"
precision = "int4"
precision_options = {{ block_size = {block}, method = "rtn" }}
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline-ckpts")
    make_tiny_checkpoint(root / "q2", TINY_QWEN2, seed=1)
    make_tiny_checkpoint(root / "q3", TINY_QWEN3, seed=2)
    return root


def _workspace(tmp_path: Path, checkpoints: Path, block: int = 32) -> Path:
    (tmp_path / "ckpts").symlink_to(checkpoints)
    path = tmp_path / "PIPELINE.toml"
    path.write_text(PIPELINE.format(block=block))
    return path


def _statuses(report) -> dict[tuple[str, str], str]:
    return {(c["checkpoint"], c["target"]): c["status"] for c in report["cells"]}


def _output_state(dist: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(dist).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(dist.rglob("*")) if p.is_file() and p.suffix not in (".xml",) and p.name != "report.json"}


def test_second_run_rebuilds_nothing_and_a_changed_recipe_only_its_cells(tmp_path, checkpoints, capsys):
    path = _workspace(tmp_path, checkpoints)
    code = main(["pipeline", str(path), "--json"])
    first = json.loads(capsys.readouterr().out)
    assert code == 0, first
    assert set(_statuses(first).values()) == {"built"} and len(first["cells"]) == 4
    assert all(c["stages"]["gate"]["passed"] and not c["stages"]["gate"]["cache_hit"]
               for c in first["cells"] if c["target"] == "cpu-fp32")
    for cell in first["cells"]:
        assert manifest_mod.check_integrity(Path(cell["output"])) == []
    state = _output_state(tmp_path / "dist")

    code = main(["pipeline", str(path), "--json"])
    second = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(_statuses(second).values()) == {"up-to-date"}
    assert [c["key"] for c in second["cells"]] == [c["key"] for c in first["cells"]]
    assert all(c["stages"]["gate"]["cache_hit"] for c in second["cells"] if c["target"] == "cpu-fp32")
    assert _output_state(tmp_path / "dist") == state  # not a byte rewritten

    path.write_text(PIPELINE.format(block=64))
    code = main(["pipeline", str(path), "--json"])
    third = json.loads(capsys.readouterr().out)
    assert code == 0
    assert _statuses(third) == {("q2", "cpu-fp32"): "up-to-date", ("q3", "cpu-fp32"): "up-to-date",
                                ("q2", "cpu-int4"): "built", ("q3", "cpu-int4"): "built"}
    assert manifest_mod.load(tmp_path / "dist" / "q2" / "cpu-int4")["precision"]["block_size"] == 64

    # Back to the first recipe: its bundles come from the cache, not from a new build.
    path.write_text(PIPELINE.format(block=32))
    fourth = run_pipeline(load_pipeline(path))
    assert _statuses(fourth)[("q2", "cpu-int4")] == "copied-from-cache"
    assert manifest_mod.check_integrity(tmp_path / "dist" / "q2" / "cpu-int4") == []

    report = json.loads((tmp_path / "dist" / "report.json").read_text())
    assert report["summary"]["copied-from-cache"] == 2 and report["passed"]
    junit = ET.parse(tmp_path / "dist" / "junit.xml").getroot()
    assert junit.get("failures") == "0" and len(junit.findall(".//testcase")) == 16


def test_damaged_output_and_cache_are_caught_and_repaired(tmp_path, checkpoints):
    path = _workspace(tmp_path, checkpoints)
    first = run_pipeline(load_pipeline(path))
    assert first["passed"]
    cell = next(c for c in first["cells"] if (c["checkpoint"], c["target"]) == ("q2", "cpu-int4"))
    data = Path(cell["output"]) / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:-1] + b"\x00")  # the output is damaged: copy again from the cache
    cached = tmp_path / "cache" / "builds" / cell["key"] / "model.onnx"
    cached.write_bytes(cached.read_bytes() + b" ")  # and so is the cache entry: build again
    again = run_pipeline(load_pipeline(path))
    assert _statuses(again)[("q2", "cpu-int4")] == "built"
    assert manifest_mod.check_integrity(Path(cell["output"])) == []
    assert again["passed"]


def test_failures_are_reported_and_exit_non_zero(tmp_path, checkpoints, capsys):
    path = _workspace(tmp_path, checkpoints)
    text = PIPELINE.format(block=32).replace('gate = { reference = "numpy" }',
                                             'gate = { reference = "numpy", min_top1 = 1.0, max_kl = 0.0 }')
    text += '\n[[checkpoints]]\nname = "broken"\npath = "broken"\n'
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{oops")
    path.write_text(text)
    code = main(["pipeline", str(path), "-q"])
    out = capsys.readouterr().out
    assert code == EXIT_PIPELINE_FAILED, out
    report = json.loads((tmp_path / "dist" / "report.json").read_text())
    by_cell = {(c["checkpoint"], c["target"]): c for c in report["cells"]}
    assert not report["passed"] and len(by_cell) == 6
    broken = by_cell[("broken", "cpu-int4")]
    assert broken["status"] == "failed" and "config.json" in broken["error"]
    gated = by_cell[("q2", "cpu-fp32")]
    assert gated["status"] == "built" and not gated["passed"] and "KL" in gated["error"]
    assert by_cell[("q2", "cpu-int4")]["passed"]
    junit = ET.parse(tmp_path / "dist" / "junit.xml").getroot()
    failed = {(c.get("classname"), c.get("name")) for c in junit.iter("testcase") if c.find("failure") is not None}
    assert ("broken.cpu-int4", "fingerprint") in failed and ("q2.cpu-fp32", "gate") in failed
    assert ("q2.cpu-int4", "build") not in failed
    assert "FAILED" in out


@pytest.mark.parametrize("edit,culprit", [
    (lambda t: t.replace('cache = "cache"', 'cache = "cache"\ncolour = "blue"'), "'colour'"),
    (lambda t: t.replace('precision = "fp32"', 'precision = "fp8"'), "fp8"),
    (lambda t: t.replace("method = ", "methd = "), "'methd'"),
    (lambda t: t.replace('name = "q3"', 'name = "q2"'), "'q2' is used twice"),
    (lambda t: t.replace('name = "q3"', 'name = "../q3"'), "'../q3'"),
    (lambda t: t.replace('reference = "numpy"', 'reference = "oracle"'), "'oracle'"),
    (lambda t: t + "[[targets]]\nname = 'x'\n", "'precision' is missing"),
])
def test_pipeline_file_is_closed_and_validated(tmp_path, checkpoints, edit, culprit):
    path = _workspace(tmp_path, checkpoints)
    path.write_text(edit(PIPELINE.format(block=32)))
    with pytest.raises(ConfigError, match="PIPELINE.toml") as err:
        load_pipeline(path)
    assert culprit in str(err.value)


def test_a_changed_weight_rebuilds_only_that_checkpoint_even_with_the_same_size_and_mtime(tmp_path, checkpoints):
    import os
    import shutil

    from qwen_edge.checkpoint import Checkpoint

    own = tmp_path / "own"
    shutil.copytree(checkpoints, own)
    path = tmp_path / "PIPELINE.toml"
    path.write_text(PIPELINE.format(block=32).replace('"ckpts/', '"own/'))
    first = run_pipeline(load_pipeline(path))
    inputs = json.loads((tmp_path / "cache" / "builds" / f"{first['cells'][0]['key']}.inputs.json").read_text())
    with Checkpoint.open(own / "q2") as ckpt:
        assert inputs["source"] == ckpt.source_fingerprint()

    weights = own / "q2" / "model.safetensors"
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # a low mantissa bit of the last weight: same size, still finite
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = run_pipeline(load_pipeline(path))
    assert _statuses(second) == {("q2", "cpu-fp32"): "built", ("q2", "cpu-int4"): "built",
                                 ("q3", "cpu-fp32"): "up-to-date", ("q3", "cpu-int4"): "up-to-date"}
