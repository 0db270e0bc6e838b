"""--list-cells, --cell, --shard I/N and merge-reports: every cell in exactly one shard, and the
merged reports equal to the unsharded report apart from timings."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qwen_edge.cli import main
from qwen_edge.errors import ConfigError
from qwen_edge.pipeline import load_pipeline, merge_reports, read_report, run_pipeline
from qwen_edge.pipeline.shards import parse_shard, select, shard_of
from tests.pipeline.conftest import MATRIX

PIPELINE = MATRIX + """
[[targets]]
name = "cpu-int8"
target = "cpu"
precision = "int8"
"""
NAMES = [f"{c}/{t}" for c in ("q2", "q3") for t in ("cpu-fp32", "cpu-int4", "cpu-int8")]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_shards_cover_every_cell_exactly_once_and_are_balanced(count):
    names = [f"ckpt{i}/target{j}" for i in range(5) for j in range(4)]
    shards = [select(names, shard=(i, count)) for i in range(1, count + 1)]
    assert sorted(n for s in shards for n in s) == sorted(names)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert all(s == [n for n in names if n in s] for s in shards)  # each in matrix order
    # the split depends on the names only: reordering the matrix moves nothing
    assert shard_of(list(reversed(names)), count) == shard_of(names, count)


def test_shard_and_cell_options_are_checked():
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "1/0", "a/b", "3"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(ConfigError, match="'q9/cpu'"):
        select(NAMES, ["q9/cpu"])
    assert select(NAMES, ["q3/cpu-int8", "q2/cpu-fp32"]) == ["q2/cpu-fp32", "q3/cpu-int8"]


@pytest.fixture()
def workspace(tmp_path, tiny_checkpoints) -> Path:
    path = tmp_path / "PIPELINE.toml"
    path.write_text(PIPELINE.format(ckpts=tiny_checkpoints))
    return path


def test_list_cells_gives_names_and_the_keys_a_run_uses(workspace, capsys):
    assert main(["pipeline", str(workspace), "--list-cells", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["cells"]
    assert [c["name"] for c in listed] == NAMES
    assert main(["pipeline", str(workspace), "--list-cells", "--shard", "2/2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == select(NAMES, shard=(2, 2))
    report = run_pipeline(load_pipeline(workspace), cells=["q3/cpu-int8"])
    assert [c["key"] for c in report["cells"]] == [c["key"] for c in listed if c["name"] == "q3/cpu-int8"]
    assert not (workspace.parent / "dist" / "q2").exists()  # only the named cell ran


def _without_timings(report: dict) -> dict:
    report = json.loads(json.dumps(report))
    report.pop("seconds")
    for cell in report["cells"]:
        cell.pop("seconds")
        for stage in cell["stages"].values():
            stage.pop("seconds", None)
    return report


def _junit_without_times(path: Path) -> str:
    root = ET.parse(path).getroot()
    for element in root.iter():
        element.attrib.pop("time", None)
    return ET.tostring(root, encoding="unicode")


def test_merged_shard_reports_equal_the_unsharded_report(workspace, capsys):
    work = workspace.parent
    whole = run_pipeline(load_pipeline(workspace))
    assert whole["passed"] and whole["summary"]["built"] == 6
    shutil.copy(work / "dist" / "junit.xml", work / "whole.xml")
    for count in (1, 2, 3):
        shutil.rmtree(work / "dist")
        shutil.rmtree(work / "cache")  # every shard builds as the unsharded run did
        paths = []
        for index in range(1, count + 1):
            assert main(["pipeline", str(workspace), "--shard", f"{index}/{count}", "-q"]) == 0
            paths.append(work / "dist" / f"report.shard-{index}-of-{count}.json")
            assert (work / "dist" / f"junit.shard-{index}-of-{count}.xml").is_file()
        capsys.readouterr()
        shards = [read_report(p) for p in paths]
        assert sorted(c["name"] for s in shards for c in s["cells"]) == sorted(NAMES)
        assert main(["pipeline", "merge-reports", *map(str, paths), "-o", str(work / "merged.json"),
                     "--junit", str(work / "merged.xml"), "-q"]) == 0
        merged = json.loads((work / "merged.json").read_text())
        assert _without_timings(merged) == _without_timings(whole), count
        assert _junit_without_times(work / "merged.xml") == _junit_without_times(work / "whole.xml")

    # jobs on other machines ran in other directories: the matrix, not the paths, must agree
    elsewhere = [(p, read_report(p) | {"output": f"/elsewhere/{p.name}", "pipeline": "/elsewhere/P.toml"})
                 for p in paths]
    assert [c["name"] for c in merge_reports(elsewhere)["cells"]] == NAMES
    other = read_report(paths[1]) | {"matrix": "0" * 64}
    with pytest.raises(ConfigError, match="matrix"):
        merge_reports([(paths[0], read_report(paths[0])), (paths[1], other), (paths[2], read_report(paths[2]))])
    with pytest.raises(ConfigError, match="cells are in no report"):
        merge_reports([(p, read_report(p)) for p in paths[:1]])
    with pytest.raises(ConfigError, match="is also in"):
        merge_reports([(p, read_report(p)) for p in paths + paths[:1]])
