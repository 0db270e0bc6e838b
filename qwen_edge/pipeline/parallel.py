"""`--jobs N`: independent cells at once, in worker processes, within a memory budget.

A cell starts when a worker is free and the peak RSS expected of it, added to that of the cells
running, fits the budget (a cell always starts when nothing else runs, so one too large for the
budget still runs, alone). The expected peak is the cell's measured peak from the previous report,
else an estimate from the checkpoint's weight bytes. Each worker measures its cell's peak (VmHWM,
reset before the cell) for the next run's report.

The cores are shared out: each worker gets cores / N threads (BLAS and OpenMP through the
environment the workers start with, our own pools and onnxruntime's sessions through the thread
count the cell is run with), so that N cells do not each start a thread per core and fight for them.
Workers come from a fork server that imported the build side once (spawned where there is none),
and they start while the parent still plans the cells.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..worker_threads import usable_cpus
from .cells import Cell

BASE_RSS = 512 << 20  # an interpreter with onnx, onnxruntime and numpy loaded, and headroom
WEIGHT_FACTOR = 4  # the weights read, the graph's initializers, their quantized copy, a session
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")
PRELOAD = ("numpy", "onnx", "onnxruntime", "qwen_edge.build", "qwen_edge.targets.verification",
           "qwen_edge.pipeline.cell_run")
CellDone = Callable[[dict[str, Any]], None]


def available_memory() -> int:
    """MemAvailable (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_budget() -> int:
    return int(available_memory() * 0.8)


def estimate_peak(cell: Cell, previous: dict[str, Any] | None) -> int:
    """The cell's peak RSS as measured in `previous` (a report), else estimated from its weights."""
    for record in (previous or {}).get("cells", []):
        if record.get("name") == cell.name and isinstance(record.get("peak_rss_bytes"), int):
            return record["peak_rss_bytes"]
    weights = sum(p.stat().st_size for p in Path(cell.checkpoint.path).glob("*.safetensors") if p.is_file())
    return BASE_RSS + WEIGHT_FACTOR * weights


def fits(running: Sequence[int], peak: int, budget: int, jobs: int) -> bool:
    return len(running) < jobs and (not running or sum(running) + peak <= budget)


def threads_per_job(jobs: int) -> int:
    return max(1, usable_cpus(limit=1 << 16) // jobs)


@contextlib.contextmanager
def _thread_environment(threads: int) -> Iterator[None]:
    """Workers inherit the environment when they are spawned: set the thread counts meanwhile."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def _peak() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _work(cell: Cell, cache_location: str, state_dir: str, threads: int) -> dict[str, Any]:
    from .cache_backends import open_cache
    from .cell_run import run_cell

    _reset_peak()
    record = run_cell(cell, open_cache(cache_location, Path(state_dir)), threads=threads)
    record["peak_rss_bytes"] = _peak()
    return record


def _warm() -> None:
    """A worker's start: import what every cell needs (onnx, onnxruntime, the builders, verification)
    while the parent still plans the cells."""
    from ..build import build  # noqa: F401
    from ..targets import catalog
    from ..targets.verification import verify_bundle  # noqa: F401
    from .cell_run import run_cell  # noqa: F401

    catalog.registered_passes()  # loads the build side: every builder and pass module


def _started() -> bool:
    return True


def _context() -> multiprocessing.context.BaseContext:
    """A fork server that has imported the build side once, forking each worker from it (cheaper
    than an import per worker, and safe: it has run no onnxruntime session and holds no lock);
    spawn where there is no fork server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    return context


@contextlib.contextmanager
def worker_pool(jobs: int) -> Iterator[ProcessPoolExecutor]:
    """`jobs` workers, started at once and warming up in the background, each with cores / jobs
    threads. Never forked from this process, which may have run onnxruntime sessions (their threads
    do not survive a fork)."""
    threads = threads_per_job(jobs)
    with _thread_environment(threads):
        pool = ProcessPoolExecutor(jobs, mp_context=_context(), initializer=_warm)
        for _ in range(jobs):  # the pool spawns a worker per submitted task, up to `jobs`
            pool.submit(_started)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_parallel(pool: ProcessPoolExecutor, cells: Sequence[Cell], *, cache_location: str, state_dir: Path,
                 jobs: int, budget: int, peaks: dict[str, int], on_done: CellDone) -> list[dict[str, Any]]:
    """Run `cells` on the pool's `jobs` workers; `on_done` is called (in this process) as each finishes."""
    from .cell_run import failed_record

    threads = threads_per_job(jobs)
    pending = list(cells)
    running: dict[Future, Cell] = {}
    records: list[dict[str, Any]] = []
    while pending or running:
        while pending and fits([peaks[c.name] for c in running.values()], peaks[pending[0].name], budget, jobs):
            cell = pending.pop(0)
            running[pool.submit(_work, cell, cache_location, str(state_dir), threads)] = cell
        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for future in sorted(done, key=lambda f: running[f].index):
            cell = running.pop(future)
            try:
                record = future.result()
            except BrokenProcessPool:
                record = failed_record(cell, "the worker process died (out of memory?)")
                # the pool is gone: what runs or waits is reported, not run
                for other in [running.pop(f) for f in list(running)] + pending:
                    records.append(failed_record(other, "not run: a worker process died"))
                    on_done(records[-1])
                pending.clear()
            except Exception as exc:  # a bug in a worker is that cell's failure
                record = failed_record(cell, f"{type(exc).__name__}: {exc}".splitlines()[0])
            records.append(record)
            on_done(record)
    return records
