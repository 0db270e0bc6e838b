"""Running a pipeline: plan the cells and their keys, pick this job's cells (`--cell`, `--shard`),
run them one after another or on `jobs` worker processes, write the JSON report and the JUnit file.

One cell's failure is recorded and the others still run; the caller decides the exit code from
the report's `passed`. Nothing here prints: `on_cell` is called once per finished cell.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .cache import tool_fingerprint
from .cache_backends import CacheBackend, open_cache
from .cell_run import run_cell
from .cells import Cell, plan_cells
from .config import PipelineConfig
from .reports import make_report, matrix_digest, write_report
from .shards import select

CellDone = Callable[[dict[str, Any], int, int], None]  # (cell record, cells done, cells to run)


def open_pipeline_cache(config: PipelineConfig) -> CacheBackend:
    # a remote cache keeps its stat-keyed file hash table beside the outputs
    return open_cache(config.cache, config.output / ".qwen-edge-state")


def report_paths(config: PipelineConfig, shard: tuple[int, int] | None) -> tuple[Path, Path]:
    """The report and JUnit paths; a shard's carry its number, so shards that share a disk keep theirs."""
    if shard is None:
        return config.report, config.junit
    tag = f".shard-{shard[0]}-of-{shard[1]}"
    return (config.report.with_name(config.report.stem + tag + config.report.suffix),
            config.junit.with_name(config.junit.stem + tag + config.junit.suffix))


def list_cells(config: PipelineConfig, cells: Sequence[str] = (), shard: tuple[int, int] | None = None,
               ) -> list[dict[str, Any]]:
    """The (selected) cells with their cache keys, for generating a CI matrix."""
    planned = _plan(config)
    chosen = set(select([c.name for c in planned], cells, shard))
    return [{"name": c.name, "checkpoint": c.checkpoint.name, "target": c.target.name, "key": c.key,
             "error": c.error} for c in planned if c.name in chosen]


def _plan(config: PipelineConfig) -> list[Cell]:
    hashes = open_pipeline_cache(config).file_hashes()
    try:
        return plan_cells(config, tool_fingerprint(), hashes)
    finally:
        hashes.save()


def _previous_report(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _workers(jobs: int):
    if jobs <= 1:
        return contextlib.nullcontext(None)
    from .parallel import worker_pool

    return worker_pool(jobs)


def run_pipeline(config: PipelineConfig, on_cell: CellDone | None = None, *, cells: Sequence[str] = (),
                 shard: tuple[int, int] | None = None, jobs: int = 1,
                 memory_budget: int | None = None) -> dict[str, Any]:
    """Run the selected cells (all by default), write the JSON report and JUnit file, return the report."""
    started = time.perf_counter()
    cache = open_pipeline_cache(config)
    with _workers(jobs) as pool:  # they start (and import) while the cells are planned
        planned = _plan(config)
        chosen = set(select([c.name for c in planned], cells, shard))
        todo = [c for c in planned if c.name in chosen]
        report_path, junit_path = report_paths(config, shard)
        records: list[dict[str, Any]] = []

        def done(record: dict[str, Any]) -> None:
            records.append(record)
            if on_cell:
                on_cell(record, len(records), len(todo))

        runnable = [c for c in todo if c.key is not None]
        for cell in todo:
            if cell.key is None:  # its checkpoint could not be read: no worker needed to report that
                done(run_cell(cell, cache))
        if pool is not None:
            from .parallel import default_budget, estimate_peak, run_parallel

            previous = _previous_report(report_path)
            peaks = {c.name: estimate_peak(c, previous) for c in runnable}
            run_parallel(pool, runnable, cache_location=config.cache, state_dir=config.output / ".qwen-edge-state",
                         jobs=jobs, budget=memory_budget or default_budget(), peaks=peaks, on_done=done)
        else:
            for cell in runnable:
                done(run_cell(cell, cache))
    report = make_report(pipeline=str(config.source), output=str(config.output), cache=cache.location,
                         seconds=time.perf_counter() - started, cells=records, cells_total=len(planned),
                         matrix=matrix_digest(c.name for c in planned),
                         shard=f"{shard[0]}/{shard[1]}" if shard else None)
    write_report(report, report_path, junit_path)
    return report
