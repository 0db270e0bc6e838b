"""Peak RSS and wall time of `qwen-edge build`, against the target of 1.5x the weight files + 300 MB.

The build runs in a child process so that its peak RSS (ru_maxrss of the child) is not mixed with
this script's own memory.

    python benchmarks/build_memory.py ../shared/models/qwen2-code-30m --precision int4
    python benchmarks/build_memory.py benchmarks/work/qwen2.5-0.5b-random --precision int4

Writes benchmarks/results/build_memory-<checkpoint>-<precision>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def weight_bytes(checkpoint: Path) -> int:
    return sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))


def measure(checkpoint: Path, precision: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="qwen-edge-bench-") as tmp:
        out = Path(tmp) / "bundle"
        cmd = [sys.executable, "-m", "qwen_edge.cli", "build", str(checkpoint), "--precision", precision,
               "-o", str(out), "--json"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"build failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
        bundle_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    weights = weight_bytes(checkpoint)
    limit = int(1.5 * weights + 300 * 2**20)
    return {
        "checkpoint": str(checkpoint),
        "precision": precision,
        "weight_file_bytes": weights,
        "bundle_bytes": bundle_bytes,
        "wall_s": round(wall, 2),
        "peak_rss_bytes": peak_rss,
        "target_peak_rss_bytes": limit,
        "within_target": peak_rss <= limit,
        "machine": {"cpus": len(__import__("os").sched_getaffinity(0)), "platform": platform.platform(),
                    "python": platform.python_version()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--precision", default="int4")
    args = parser.parse_args()
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
