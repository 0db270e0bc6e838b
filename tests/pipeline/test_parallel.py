"""--jobs N: cells on worker processes give the serial run's report and bytes; the memory budget;
one progress line per cell; cache pruning of a local cache."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from qwen_edge.cli import main
from qwen_edge.errors import ConfigError
from qwen_edge.pipeline import LocalCache, load_pipeline, prune, run_pipeline
from qwen_edge.pipeline.cache_backends import parse_age, parse_size
from qwen_edge.pipeline.cells import plan_cells
from qwen_edge.pipeline.parallel import BASE_RSS, estimate_peak, fits, threads_per_job
from tests.pipeline.conftest import MATRIX

PIPELINE = MATRIX


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix != ".xml" and p.name != "report.json" and ".qwen-edge-state" not in p.parts}


def _comparable(report: dict) -> dict:
    report = json.loads(json.dumps(report))
    report.pop("seconds")
    for cell in report["cells"]:
        cell.pop("seconds")
        cell.pop("peak_rss_bytes")
        for stage in cell["stages"].values():
            stage.pop("seconds", None)
    return report


def test_jobs_2_gives_the_serial_report_and_the_same_bytes(tmp_path, tiny_checkpoints, capsys):
    path = tmp_path / "PIPELINE.toml"
    path.write_text(PIPELINE.format(ckpts=tiny_checkpoints))
    serial = run_pipeline(load_pipeline(path))
    assert serial["passed"] and all(c["peak_rss_bytes"] is None for c in serial["cells"])
    serial_files = _files(tmp_path / "dist")
    shutil.rmtree(tmp_path / "dist")
    shutil.rmtree(tmp_path / "cache")

    assert main(["pipeline", str(path), "--jobs", "2", "--memory-budget", "64GiB"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "/4 " in line]
    assert len(lines) == 4 and {line.split("/4 ")[1].split(":")[0] for line in lines} == \
        {"q2/cpu-fp32", "q2/cpu-int4", "q3/cpu-fp32", "q3/cpu-int4"}, err
    parallel = json.loads((tmp_path / "dist" / "report.json").read_text())
    assert _comparable(parallel) == _comparable(serial)
    assert all(c["peak_rss_bytes"] > 50 << 20 for c in parallel["cells"])  # measured in the worker
    assert _files(tmp_path / "dist") == serial_files


def test_the_budget_admits_cells_while_their_peaks_fit():
    assert fits([], 10 << 30, 1 << 30, 2)  # alone, a cell runs whatever its size
    assert fits([1 << 30], 1 << 30, 2 << 30, 2)
    assert not fits([1 << 30], (1 << 30) + 1, 2 << 30, 2)
    assert not fits([1, 1], 1, 1 << 40, 2)  # no free worker
    assert threads_per_job(1) >= threads_per_job(2) >= 1


def test_peaks_come_from_the_previous_report_else_from_the_weights(tmp_path, tiny_checkpoints):
    path = tmp_path / "PIPELINE.toml"
    path.write_text(PIPELINE.format(ckpts=tiny_checkpoints))
    config = load_pipeline(path)
    cells = plan_cells(config, {"tool": 1}, LocalCache(tmp_path / "cache").file_hashes())
    weights = (tiny_checkpoints / "q2" / "model.safetensors").stat().st_size
    assert estimate_peak(cells[0], None) == BASE_RSS + 4 * weights
    previous = {"cells": [{"name": cells[0].name, "peak_rss_bytes": 123_456_789}]}
    assert estimate_peak(cells[0], previous) == 123_456_789
    assert estimate_peak(cells[1], previous) == BASE_RSS + 4 * weights


def test_sizes_and_ages_parse_and_bad_ones_name_the_option():
    assert parse_size("10GB") == 10 * 1000**3 and parse_size("512MiB") == 512 << 20 and parse_size("2048") == 2048
    assert parse_age("30d") == 30 * 86400 and parse_age("90m") == 5400 and parse_age("0s") == 0
    with pytest.raises(ConfigError, match="--max-size"):
        parse_size("lots", "--max-size")
    with pytest.raises(ConfigError, match="--older-than"):
        parse_age("3 fortnights", "--older-than")


def _fake_entry(root: Path, key: str, size: int, age_s: float) -> None:
    bundle = root / "builds" / key
    bundle.mkdir(parents=True)
    (bundle / "model.onnx.data").write_bytes(b"x" * size)
    (bundle / "manifest.json").write_text("{}")
    stamp = time.time() - age_s
    os.utime(bundle / "manifest.json", (stamp, stamp))


def test_prune_a_local_cache_by_age_then_size(tmp_path, capsys):
    cache = tmp_path / "cache"
    for key, size, age in (("a" * 64, 1000, 10 * 86400), ("b" * 64, 1000, 3 * 86400), ("c" * 64, 1000, 3600),
                           ("d" * 64, 1000, 60)):
        _fake_entry(cache, key, size, age)
    (cache / "gates").mkdir()
    (cache / "gates" / "g1.json").write_text(json.dumps({"bundle": "a" * 64, "result": {}}))
    (cache / "gates" / "g2.json").write_text(json.dumps({"bundle": "d" * 64, "result": {}}))
    assert main(["cache", "prune", str(cache), "--older-than", "7d", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["removed"] == ["a" * 64] and result["gate_results_removed"] == 1
    assert sorted(p.name for p in (cache / "gates").iterdir()) == ["g2.json"]
    result = prune(LocalCache(cache), max_bytes=2100)  # the oldest go until the rest fit
    assert result["removed"] == ["b" * 64] and result["kept"] == 2
    assert sorted(p.name for p in (cache / "builds").iterdir()) == ["c" * 64, "d" * 64]
    assert main(["cache", "prune", str(cache)]) == 2  # says what to prune by


def test_a_cell_whose_worker_died_is_a_failure_in_junit(tmp_path, tiny_checkpoints):
    from qwen_edge.pipeline.cell_run import failed_record
    from qwen_edge.pipeline.junit import junit_tree
    from qwen_edge.pipeline.reports import make_report

    path = tmp_path / "PIPELINE.toml"
    path.write_text(PIPELINE.format(ckpts=tiny_checkpoints))
    cells = plan_cells(load_pipeline(path), {"tool": 1}, LocalCache(tmp_path / "cache").file_hashes())
    record = failed_record(cells[0], "the worker process died (out of memory?)")
    report = make_report(pipeline="p", output="o", cache="c", seconds=1.0, cells=[record], cells_total=4, matrix="m")
    assert not report["passed"] and report["summary"]["failed"] == 1
    failures = [case for case in junit_tree(report).getroot().iter("testcase") if case.find("failure") is not None]
    assert [(c.get("name"), c.find("failure").get("message")) for c in failures] == \
        [("build", "the worker process died (out of memory?)")]


@pytest.mark.parametrize("budget,most_at_once", [(1, 1), (3 * BASE_RSS, 1), (64 << 30, 2)])
def test_the_memory_budget_bounds_how_many_cells_run_at_once(tmp_path, tiny_checkpoints, monkeypatch,
                                                             budget, most_at_once):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from qwen_edge.pipeline import parallel

    path = tmp_path / "PIPELINE.toml"
    path.write_text(PIPELINE.format(ckpts=tiny_checkpoints))
    cells = plan_cells(load_pipeline(path), {"tool": 1}, LocalCache(tmp_path / "cache").file_hashes())
    lock, running, seen = threading.Lock(), [0], []

    def fake_work(cell, cache_location, state_dir, threads):  # the scheduling, not the cells
        with lock:
            running[0] += 1
            seen.append(running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return {"name": cell.name, "index": cell.index}

    monkeypatch.setattr(parallel, "_work", fake_work)
    peaks = {c.name: 2 * BASE_RSS for c in cells}  # two fit in 4 x BASE_RSS, not in 3 x
    done = []
    with ThreadPoolExecutor(2) as pool:
        records = parallel.run_parallel(pool, cells, cache_location="c", state_dir=tmp_path, jobs=2, budget=budget,
                                        peaks=peaks, on_done=done.append)
    assert sorted(r["index"] for r in records) == [0, 1, 2, 3] and len(done) == 4
    assert max(seen) == most_at_once
