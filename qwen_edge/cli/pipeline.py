"""`qwen-edge pipeline PIPELINE.toml`: a checkpoints x targets matrix with a cache, for CI;
`qwen-edge pipeline merge-reports`: one report from a CI matrix's shards; `qwen-edge cache prune`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .output import add_common, emit, progress_for

EXIT_PIPELINE_FAILED = 7
MERGE = "merge-reports"


def add_parser(sub) -> None:
    pl = sub.add_parser("pipeline", help="build a checkpoints x targets matrix from a PIPELINE.toml, with a cache",
                        description=f"qwen-edge pipeline PIPELINE.toml [options], or qwen-edge pipeline {MERGE} "
                                    f"SHARD.json... -o REPORT.json")
    pl.add_argument("pipeline", help=f"the PIPELINE.toml, or '{MERGE}'")
    pl.add_argument("reports", nargs="*", help=f"with {MERGE}: the shards' JSON reports")
    pl.add_argument("--list-cells", action="store_true", help="list the cells and their cache keys; build nothing")
    pl.add_argument("--cell", action="append", default=[], metavar="NAME",
                    help="run only this cell (CHECKPOINT/TARGET; repeatable)")
    pl.add_argument("--shard", metavar="I/N", help="run only shard I of N (a stable split of the cells)")
    pl.add_argument("--jobs", "-j", type=int, default=1, help="cells run at once, in worker processes (default 1)")
    pl.add_argument("--memory-budget", metavar="SIZE",
                    help="with --jobs: the peak RSS the running cells may add up to (default: 80%% of available)")
    pl.add_argument("-o", "--output", help=f"with {MERGE}: the merged JSON report")
    pl.add_argument("--junit", help=f"with {MERGE}: the merged JUnit XML (default: beside the JSON report)")
    add_common(pl)
    pl.set_defaults(func=cmd_pipeline)

    ca = sub.add_parser("cache", help="manage a pipeline build cache")
    cs = ca.add_subparsers(dest="cache_command", required=True)
    pr = cs.add_parser("prune", help="remove old entries, or the oldest until the cache fits a size")
    pr.add_argument("cache", help="a cache directory or URL (s3://bucket/prefix, ...), or a PIPELINE.toml")
    pr.add_argument("--max-size", help="keep at most this much (10GB, 512MiB)")
    pr.add_argument("--older-than", help="remove entries published longer ago than this (30d, 12h)")
    add_common(pr)
    pr.set_defaults(func=cmd_cache_prune)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    if args.pipeline == MERGE:
        return cmd_merge_reports(args)
    if args.reports:
        raise ConfigError(f"pipeline: unexpected arguments {' '.join(args.reports)} (only {MERGE} takes reports)")
    if args.jobs < 1:
        raise ConfigError(f"--jobs: must be at least 1, got {args.jobs}")
    from ..pipeline import list_cells, load_pipeline, parse_shard, report_paths, run_pipeline
    from ..pipeline.cache_backends import parse_size

    config = load_pipeline(Path(args.pipeline))
    shard = parse_shard(args.shard) if args.shard else None
    if args.list_cells:
        cells = list_cells(config, args.cell, shard)
        emit(args, {"cells": cells}, "\n".join(f"{c['name']}\t{c['key'] or 'ERROR: ' + str(c['error'])}"
                                               for c in cells))
        return 0
    budget = parse_size(args.memory_budget, "--memory-budget") if args.memory_budget else None
    progress = progress_for(args)
    start = time.perf_counter()

    def on_cell(c: dict, done: int, total: int) -> None:
        peak = f", peak {c['peak_rss_bytes'] / 2**20:.0f} MiB" if c.get("peak_rss_bytes") else ""
        outcome = f"{c['status']} ({c.get('seconds', 0):.1f}s{peak})" if c["passed"] else f"FAILED: {c['error']}"
        progress.note(f"{done}/{total} {c['name']}: {outcome}")

    report = run_pipeline(config, on_cell, cells=args.cell, shard=shard, jobs=args.jobs, memory_budget=budget)
    return _finish(args, report, f"in {time.perf_counter() - start:.1f}s", report_paths(config, shard))


def _finish(args: argparse.Namespace, report: dict, when: str, paths: tuple[Path, Path] | None = None) -> int:
    lines = [f"{c['name']}: {c['status']}" + (f" ({c['seconds']:.1f}s)" if c["passed"] else f" FAILED: {c['error']}")
             for c in report["cells"]]
    s = report["summary"]
    where = f"; report {paths[0]}, JUnit {paths[1]}" if paths else ""
    lines.append(f"{s['cells_passed']}/{s['cells']} passed ({s['built']} built, {s['copied-from-cache']} from cache, "
                 f"{s['up-to-date']} up to date) {when}{where}")
    emit(args, report, "\n".join(lines))
    return 0 if report["passed"] else EXIT_PIPELINE_FAILED


def cmd_merge_reports(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..pipeline import merge_reports, read_report, write_report

    if not args.output:
        raise ConfigError(f"{MERGE}: -o/--output (the merged JSON report) is required")
    output = Path(args.output)
    junit = Path(args.junit) if args.junit else output.with_suffix(".xml")
    report = merge_reports([(Path(p), read_report(Path(p))) for p in args.reports])
    write_report(report, output, junit)
    return _finish(args, report, f"from {len(args.reports)} reports", (output, junit))


def cmd_cache_prune(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..pipeline import load_pipeline, prune
    from ..pipeline.cache_backends import parse_age, parse_size
    from ..pipeline.runner import open_pipeline_cache

    if not (args.max_size or args.older_than):
        raise ConfigError("cache prune: give --max-size, --older-than or both")
    max_bytes = parse_size(args.max_size, "--max-size") if args.max_size else None
    older = parse_age(args.older_than, "--older-than") if args.older_than else None
    if args.cache.endswith(".toml") and Path(args.cache).is_file():
        cache = open_pipeline_cache(load_pipeline(Path(args.cache)))
    else:
        from ..pipeline import open_cache

        cache = open_cache(args.cache, Path.cwd() / ".qwen-edge-state")
    result = prune(cache, max_bytes, older)
    emit(args, result, f"{cache.location}: removed {len(result['removed'])} entries "
                       f"({result['removed_bytes'] / 1e6:.1f} MB), kept {result['kept']} "
                       f"({result['kept_bytes'] / 1e6:.1f} MB)")
    return 0
