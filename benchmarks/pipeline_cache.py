"""How much of a `qwen-edge pipeline` run the cache saves: 2 checkpoints x 2 targets, three runs.

1. cold: everything is built and gated;
2. nothing changed: every cell must be "up-to-date" (checked: hashes only, no build, no gate);
3. one recipe changed (the int4 target's block size): only that target's two cells are rebuilt.

Each run is a child `qwen-edge pipeline` process, timed from outside (process start included) and
from its own report. The checkpoints are the trained 30M model (when present) and a random one of
a similar size.

    python benchmarks/pipeline_cache.py [--trained ../shared/models/qwen2-code-30m]

Writes benchmarks/results/pipeline_cache.json (pipeline_cache-gated.json with --gate).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))
from qwen_edge.checkpoint.tiny import TINY_QWEN2, make_tiny_checkpoint  # noqa: E402

RANDOM_30M = {**TINY_QWEN2, "hidden_size": 512, "intermediate_size": 1280, "num_hidden_layers": 8,
              "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 16384,
              "max_position_embeddings": 4096}

PIPELINE = """
output = "dist"
cache = "cache"

[[checkpoints]]
name = "a"
path = "{a}"

[[checkpoints]]
name = "b"
path = "{b}"

[[targets]]
name = "cpu-fp32"
target = "cpu"
precision = "fp32"
{gate}

[[targets]]
name = "cpu-int4"
target = "cpu"
precision = "int4"
precision_options = {{ block_size = {block} }}
{gate}
"""


def run(pipeline: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qwen_edge.cli", "pipeline", str(pipeline), "--json"],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pipeline failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    report = json.loads(proc.stdout)
    return {"wall_s": round(wall, 3), "report_s": report["seconds"], "summary": report["summary"],
            "cells": {f"{c['checkpoint']} x {c['target']}": {"status": c["status"], "seconds": c["seconds"]}
                      for c in report["cells"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trained", default=os.environ.get("QWEN_EDGE_TRAINED_MODEL",
                                                         str(REPO.parent / "shared" / "models" / "qwen2-code-30m")))
    ap.add_argument("--gate", action="store_true",
                    help="add a numpy-reference parity gate to every cell (slow; it makes the cold run longer, "
                         "so without it the cached/cold ratio is the stricter one)")
    args = ap.parse_args()
    gate = 'gate = { reference = "numpy", min_top1 = 0.5, max_kl = 2.0 }' if args.gate else ""
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        work = Path(tmp)
        b = make_tiny_checkpoint(work / "random-30m", RANDOM_30M, seed=11, dtype="BF16")
        trained = Path(args.trained)
        a = trained if (trained / "config.json").is_file() else make_tiny_checkpoint(work / "random-b", RANDOM_30M,
                                                                                     seed=12)
        pipeline = work / "PIPELINE.toml"
        runs = {}
        pipeline.write_text(PIPELINE.format(a=a, b=b, block=32, gate=gate))
        runs["cold"] = run(pipeline)
        runs["unchanged"] = run(pipeline)
        pipeline.write_text(PIPELINE.format(a=a, b=b, block=64, gate=gate))
        runs["int4_recipe_changed"] = run(pipeline)
    result = {
        "checkpoints": {"a": str(a) if a == trained else "random (trained model absent)", "b": "random 30M bf16"},
        "gates": args.gate,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "runs": runs,
        "unchanged_over_cold_wall": round(runs["unchanged"]["wall_s"] / runs["cold"]["wall_s"], 4),
        "unchanged_over_cold_report": round(runs["unchanged"]["report_s"] / runs["cold"]["report_s"], 4),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"pipeline_cache{'-gated' if args.gate else ''}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
