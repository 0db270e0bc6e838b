"""`qwen-edge pipeline PIPELINE.toml`: a checkpoints x targets matrix with a cache, for CI."""

from __future__ import annotations

import argparse
from pathlib import Path

from .output import add_common, emit, progress_for

EXIT_PIPELINE_FAILED = 7


def add_parser(sub) -> None:
    pl = sub.add_parser("pipeline", help="build a checkpoints x targets matrix from a PIPELINE.toml, with a cache")
    pl.add_argument("pipeline")
    add_common(pl)
    pl.set_defaults(func=cmd_pipeline)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from ..pipeline import load_pipeline, run_pipeline

    config = load_pipeline(Path(args.pipeline))
    report = run_pipeline(config, progress_for(args))
    lines = [f"{c['checkpoint']} x {c['target']}: {c['status']}"
             + (f" ({c['seconds']:.1f}s)" if c["passed"] else f" FAILED: {c['error']}") for c in report["cells"]]
    s = report["summary"]
    lines.append(f"{s['cells_passed']}/{s['cells']} passed ({s['built']} built, {s['copied-from-cache']} from cache, "
                 f"{s['up-to-date']} up to date) in {report['seconds']:.1f}s; report {config.report}, "
                 f"JUnit {config.junit}")
    emit(args, report, "\n".join(lines))
    return 0 if report["passed"] else EXIT_PIPELINE_FAILED
