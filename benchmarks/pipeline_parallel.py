"""`qwen-edge pipeline --jobs 2` against the serial run: a four-cell matrix of the trained checkpoint
(cpu and android targets x int4 and int8, each cell gated by numpy-reference parity), built cold
each time (fresh output and cache).

Each run is a child `qwen-edge pipeline` process timed from outside (process start, worker start-up
and all included). Serial and parallel runs alternate, the first of each round swapped, so that load
from elsewhere falls on both alike; the result is the median of the rounds' ratios, and each run
records the 1-minute load average it started under (other sessions share these cores). Every parallel run's bundles are compared byte for byte with the
serial run's.

    flock /work/bench.lock nice -n -10 python benchmarks/pipeline_parallel.py [--rounds 3] [--jobs 2]

Writes benchmarks/results/pipeline_parallel.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"

PIPELINE = """
output = "dist"
cache = "cache"

[[checkpoints]]
name = "coder"
path = "{ckpt}"
{targets}
"""
TARGET = """
[[targets]]
name = "{target}-{precision}"
target = "{target}"
precision = "{precision}"
{gate}
"""
GATE = 'gate = { reference = "numpy", min_top1 = 0.5, max_kl = 2.0 }'


def tree_digest(dist: Path) -> dict[str, str]:
    return {p.relative_to(dist).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(dist.rglob("*")) if p.is_file() and p.parent != dist and ".qwen-edge-state" not in p.parts}


def run(work: Path, jobs: int) -> tuple[dict, dict[str, str]]:
    for name in ("dist", "cache"):
        shutil.rmtree(work / name, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qwen_edge.cli", "pipeline", str(work / "PIPELINE.toml"), "--json",
                           "--jobs", str(jobs)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pipeline --jobs {jobs} failed ({proc.returncode}): {proc.stderr[-2000:] or proc.stdout}")
    report = json.loads(proc.stdout)
    return ({"jobs": jobs, "wall_s": round(wall, 3), "load_average_1min_before": load, "report_s": report["seconds"], "summary": report["summary"],
             "cells": {c["name"]: {"seconds": c["seconds"], "peak_rss_bytes": c["peak_rss_bytes"],
                                   "stages": {k: v.get("seconds") for k, v in c["stages"].items()}}
                       for c in report["cells"]}},
            tree_digest(work / "dist"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trained", default=os.environ.get("QWEN_EDGE_TRAINED_MODEL",
                                                         str(REPO.parent / "shared" / "models" / "qwen2-code-30m")))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-gate", action="store_true", help="cells without their parity gate")
    ap.add_argument("--name", default="pipeline_parallel")
    args = ap.parse_args()
    ckpt = Path(args.trained)
    if not (ckpt / "config.json").is_file():
        raise SystemExit(f"{ckpt}: the trained checkpoint is needed (--trained)")
    targets = "".join(TARGET.format(target=t, precision=p, gate="" if args.no_gate else GATE)
                      for t in ("cpu", "android") for p in ("int4", "int8"))
    rounds = []
    identical = True
    with tempfile.TemporaryDirectory(prefix="pipeline-parallel-") as tmp:
        work = Path(tmp)
        (work / "PIPELINE.toml").write_text(PIPELINE.format(ckpt=ckpt, targets=targets))
        for i in range(args.rounds):
            order = (1, args.jobs) if i % 2 == 0 else (args.jobs, 1)
            got = {}
            for jobs in order:
                got[jobs] = run(work, jobs)
                print(f"round {i + 1}: --jobs {jobs}: {got[jobs][0]['wall_s']:.2f}s", file=sys.stderr)
            same = got[1][1] == got[args.jobs][1] and len(got[1][1]) > 0
            identical &= same
            rounds.append({"serial": got[1][0], "parallel": got[args.jobs][0], "outputs_identical": same,
                           "files_compared": len(got[1][1]),
                           "ratio": round(got[args.jobs][0]["wall_s"] / got[1][0]["wall_s"], 4)})
    serial = statistics.median(r["serial"]["wall_s"] for r in rounds)
    parallel = statistics.median(r["parallel"]["wall_s"] for r in rounds)
    result = {
        "checkpoint": str(ckpt),
        "cells": list(rounds[0]["serial"]["cells"]),
        "gated": not args.no_gate,
        "jobs": args.jobs,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "serial_wall_s_median": serial,
        "parallel_wall_s_median": parallel,
        # the median of each round's ratio: a round's two runs are back to back, so they share the load
        "parallel_over_serial": statistics.median(r["ratio"] for r in rounds),
        "ratio_of_medians": round(parallel / serial, 4),
        "ratios": [r["ratio"] for r in rounds],
        "outputs_identical": identical,
        "rounds": rounds,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
