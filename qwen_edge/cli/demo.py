"""`qwen-edge demo`: the whole pipeline on an embedded tiny checkpoint (qwen_edge.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .output import add_common, emit, progress_for

EXIT_VERIFICATION = 6


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="make a tiny Qwen checkpoint, build it, run it, verify it")
    d.add_argument("--workdir", help="keep the demo's files here (default: a temporary directory)")
    add_common(d)
    d.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    report = run_demo(Path(args.workdir) if args.workdir else None, progress=progress_for(args))
    emit(args, report, report["summary"])
    return 0 if report["passed"] else EXIT_VERIFICATION
