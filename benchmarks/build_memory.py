"""Peak RSS and wall time of `qwen-edge build`, against the target of 1.5x the weight files + 300 MB.

The build runs in a child process so that its peak RSS (ru_maxrss of the child) is not mixed with
this script's own memory.

    python benchmarks/build_memory.py ../shared/models/qwen2-code-30m --precision int4
    python benchmarks/build_memory.py benchmarks/work/qwen2.5-0.5b-random --precision int4

Writes benchmarks/results/build_memory-<checkpoint>-<precision>.json.

Comparing build options, several interleaved rounds (every variant once per round, the order
rotating each round, so that load which drifts hits all variants alike):

    python benchmarks/build_memory.py CKPT --variant default= --variant "rtn=--quant-method rtn" --rounds 5
    python benchmarks/build_memory.py CKPT --variant default= --malloc-tuning-ab --rounds 4 --tag malloc

`--variant NAME=ARGS` adds the extra CLI arguments ARGS (split on spaces) to the build.
`--malloc-tuning-ab` runs every variant twice: with the CLI's glibc mallopt tuning and without
it. Both go through the same launcher, which calls `qwen_edge.cli.main` after replacing
`qwen_edge.cli.malloc_tuning.reuse_freed_memory` (the function `main` calls first) with a wrapper that
either calls it or skips it, and reports on stderr which it did; qwen_edge itself is unchanged.
Without `--malloc-tuning-ab` the child is the plain `python -m qwen_edge.cli build`.

Every child is reaped with os.wait4, which gives its own rusage (the child and the children it
waited for): peak RSS, minor and major page faults, user and system CPU seconds, context switches.
Each run records the load average before and after. Writes
benchmarks/results/build_memory-<checkpoint>-<precision>-<tag>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# The launcher for --malloc-tuning-ab; argv: on|off, then the CLI's arguments.
LAUNCHER = """
import sys
import qwen_edge.cli.malloc_tuning as tuning
import qwen_edge.cli as cli
apply = sys.argv[1] == "on"
original = tuning.reuse_freed_memory
def reuse_freed_memory():
    took = original() if apply else False
    sys.stderr.write("build_memory: malloc tuning " + ("applied" if took else "not applied") + "\\n")
    return took
tuning.reuse_freed_memory = reuse_freed_memory
sys.exit(cli.main(sys.argv[2:]))
"""


def weight_bytes(checkpoint: Path) -> int:
    return sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_build(checkpoint: Path, precision: str, extra: list[str], malloc_tuning: str | None = None) -> dict:
    """One build in a child process; malloc_tuning None runs the plain CLI, "on"/"off" the launcher."""
    with tempfile.TemporaryDirectory(prefix="qwen-edge-bench-") as tmp:
        out = Path(tmp) / "bundle"
        args = ["build", str(checkpoint), "--precision", precision, "-o", str(out), "--json", *extra]
        if malloc_tuning is None:
            cmd = [sys.executable, "-m", "qwen_edge.cli", *args]
        else:
            cmd = [sys.executable, "-c", LAUNCHER, malloc_tuning, *args]
        with open(Path(tmp) / "stdout", "w+") as so, open(Path(tmp) / "stderr", "w+") as se:
            load_before = loadavg()
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=so, stderr=se, text=True)
            _, status, ru = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            so.seek(0)
            se.seek(0)
            stdout, stderr = so.read(), se.read()
        if proc.returncode != 0:
            raise SystemExit(f"build failed ({proc.returncode}): {stderr.strip().splitlines()[-1:]}")
        bundle_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    row = {
        "wall_s": round(wall, 2),
        "cli_reported_s": json.loads(stdout).get("seconds"),
        "peak_rss_bytes": ru.ru_maxrss * 1024,  # KiB on Linux
        "minor_page_faults": ru.ru_minflt,
        "major_page_faults": ru.ru_majflt,
        "user_s": round(ru.ru_utime, 2),
        "system_s": round(ru.ru_stime, 2),
        "voluntary_switches": ru.ru_nvcsw,
        "involuntary_switches": ru.ru_nivcsw,
        "bundle_bytes": bundle_bytes,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    if malloc_tuning is not None:
        applied = "build_memory: malloc tuning applied" in stderr
        if ("build_memory: malloc tuning" not in stderr) or applied != (malloc_tuning == "on"):
            raise SystemExit(f"the launcher did not {'apply' if malloc_tuning == 'on' else 'skip'} the malloc tuning")
        row["malloc_tuning_applied"] = applied
    return row


def machine() -> dict:
    return {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(), "python": platform.python_version()}


def measure(checkpoint: Path, precision: str) -> dict:
    row = run_build(checkpoint, precision, [])
    weights = weight_bytes(checkpoint)
    limit = int(1.5 * weights + 300 * 2**20)
    return {
        "checkpoint": str(checkpoint),
        "precision": precision,
        "weight_file_bytes": weights,
        "bundle_bytes": row["bundle_bytes"],
        "wall_s": row["wall_s"],
        "peak_rss_bytes": row["peak_rss_bytes"],
        "target_peak_rss_bytes": limit,
        "within_target": row["peak_rss_bytes"] <= limit,
        "minor_page_faults": row["minor_page_faults"],
        "loadavg_before": row["loadavg_before"],
        "machine": machine(),
    }


def compare(args: argparse.Namespace) -> None:
    checkpoint = args.checkpoint.resolve()
    variants = []
    for item in args.variant:
        name, _, extra = item.partition("=")
        modes = ["on", "off"] if args.malloc_tuning_ab else [None]
        for mode in modes:
            label = name if mode is None else f"{name}, malloc tuning {mode}"
            variants.append({"label": label, "extra": extra.split(), "malloc_tuning": mode})
    runs = []
    for r in range(args.rounds + args.warmup):
        k = r % len(variants)
        order = variants[k:] + variants[:k]  # rotate, so no variant always runs first or after another
        for v in order:
            row = run_build(checkpoint, args.precision, v["extra"], v["malloc_tuning"])
            row = {"round": r - args.warmup, "variant": v["label"], **row}
            print(f"round {row['round']:>2} {v['label']:<36} wall {row['wall_s']:6.2f} s  cpu "
                  f"{row['user_s']:6.2f}+{row['system_s']:5.2f} s  minflt {row['minor_page_faults']:>8}  peak "
                  f"{row['peak_rss_bytes'] / 2**20:6.0f} MiB  load {row['loadavg_before'][0]:.2f}", flush=True)
            runs.append(row)
    counted = [r for r in runs if r["round"] >= 0]
    summary = {}
    for v in variants:
        rows = [r for r in counted if r["variant"] == v["label"]]
        summary[v["label"]] = {
            key: {"median": statistics.median(r[key] for r in rows), "min": min(r[key] for r in rows),
                  "max": max(r[key] for r in rows)}
            for key in ("wall_s", "cli_reported_s", "user_s", "system_s", "minor_page_faults", "major_page_faults",
                        "peak_rss_bytes", "involuntary_switches")
        } | {"runs": len(rows), "cli_args": v["extra"], "malloc_tuning": v["malloc_tuning"]}
    tag = args.tag or f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"build_memory-{checkpoint.name}-{args.precision}-{tag}.json"
    path.write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "checkpoint": str(checkpoint), "precision": args.precision, "weight_file_bytes": weight_bytes(checkpoint),
        "rounds": args.rounds, "warmup_rounds": args.warmup, "malloc_tuning_ab": args.malloc_tuning_ab,
        "machine": machine(), "summary": summary, "runs": runs}, indent=2) + "\n")
    for label, s in summary.items():
        print(f"{label:<36} median wall {s['wall_s']['median']:.2f} s (min {s['wall_s']['min']:.2f}), cpu "
              f"{s['user_s']['median']:.2f}+{s['system_s']['median']:.2f} s, minor faults "
              f"{s['minor_page_faults']['median']}, peak RSS {s['peak_rss_bytes']['median'] / 2**20:.0f} MiB")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--precision", default="int4")
    parser.add_argument("--variant", action="append", help="NAME=EXTRA CLI ARGS; compare variants over --rounds")
    parser.add_argument("--malloc-tuning-ab", action="store_true",
                        help="with --variant: run each variant with and without the CLI's malloc tuning")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (page cache, imports)")
    parser.add_argument("--tag", default=None)
    args = parser.parse_args()
    if args.variant:
        compare(args)
        return
    if args.malloc_tuning_ab:
        parser.error("--malloc-tuning-ab needs --variant")
    result = measure(args.checkpoint.resolve(), args.precision)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"build_memory-{args.checkpoint.resolve().name}-{args.precision}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    mib = 2**20
    print(f"{args.checkpoint.name} {args.precision}: wall {result['wall_s']} s, peak RSS "
          f"{result['peak_rss_bytes'] / mib:.0f} MiB (target <= {result['target_peak_rss_bytes'] / mib:.0f} MiB), "
          f"weights {result['weight_file_bytes'] / mib:.1f} MiB -> bundle {result['bundle_bytes'] / mib:.1f} MiB")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
