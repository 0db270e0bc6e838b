"""Running a pipeline: every (checkpoint, target) cell through build, integrity and gate stages.

A cell whose inputs are unchanged is not rebuilt: its output is left as it is when it still
matches the cached bundle and passes its integrity check, or copied from the cache otherwise.
One cell's failure is recorded and the others still run; the caller decides the exit code from
the report's `passed`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from ..bundle import manifest as manifest_mod
from ..checkpoint import Checkpoint
from ..errors import BundleError, QwenEdgeError
from ..targets import get_target
from .cache import BuildCache, FileHashes, build_key, digest, place, same_manifest, tool_fingerprint
from .config import CheckpointEntry, PipelineConfig, TargetEntry
from .junit import write_junit

Progress = Callable[[str, int, int], None]
REPORT_SCHEMA = 1


class _Stage:
    """Times one stage and records it in the cell's report."""

    def __init__(self, cell: dict[str, Any], name: str):
        self.record: dict[str, Any] = {}
        cell["stages"][name] = self.record

    def __enter__(self) -> dict[str, Any]:
        self.start = time.perf_counter()
        return self.record

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.record["seconds"] = round(time.perf_counter() - self.start, 4)
        if exc is not None and isinstance(exc, Exception):
            self.record["passed"] = False
            self.record.setdefault("error", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        elif exc is None:
            self.record.setdefault("passed", True)
        return False


def _recipe(entry: TargetEntry) -> dict[str, Any]:
    target = get_target(entry.target)
    return {
        "target": entry.target,
        "target_file_sha256": digest(Path(target.source).read_text(encoding="utf-8")),
        "precision": entry.precision.to_dict(),
        "max_length": entry.max_length,
        "smoke_test": True,
    }


def run_pipeline(config: PipelineConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run every cell, write the JSON report and JUnit file, and return the report."""
    started = time.perf_counter()
    cache = BuildCache(config.cache)
    tool = tool_fingerprint()
    hashes = cache.file_hashes()
    fingerprints: dict[str, dict[str, Any] | QwenEdgeError] = {}
    cells = []
    total = len(config.checkpoints) * len(config.targets)
    try:
        for ckpt in config.checkpoints:
            if ckpt.name not in fingerprints:
                fingerprints[ckpt.name] = _fingerprint(ckpt, hashes)
            for entry in config.targets:
                if progress:
                    progress(f"{ckpt.name} x {entry.name}", len(cells), total)
                cells.append(_run_cell(config, cache, tool, fingerprints[ckpt.name], ckpt, entry))
    finally:
        hashes.save()
    if progress:
        progress("pipeline", total, total)
    report = {
        "schema_version": REPORT_SCHEMA,
        "pipeline": str(config.source),
        "output": str(config.output),
        "cache": str(config.cache),
        "seconds": round(time.perf_counter() - started, 4),
        "passed": all(c["passed"] for c in cells),
        "summary": {status: sum(c["status"] == status for c in cells)
                    for status in ("built", "copied-from-cache", "up-to-date", "failed")}
        | {"cells": len(cells), "cells_passed": sum(c["passed"] for c in cells)},
        "cells": cells,
    }
    config.report.parent.mkdir(parents=True, exist_ok=True)
    config.report.write_text(manifest_mod.dumps(report), encoding="utf-8")
    write_junit(report, config.junit)
    return report


def _fingerprint(ckpt: CheckpointEntry, hashes: FileHashes) -> dict[str, Any] | QwenEdgeError:
    """The checkpoint's source fingerprint (as Checkpoint.source_fingerprint), through the hash cache;
    the checkpoint is fully validated on every run."""
    try:
        with Checkpoint.open(ckpt.path) as opened:
            return {"files": {name: hashes.sha256(path) for name, path in opened.source_files().items()}}
    except QwenEdgeError as exc:
        return exc
    except OSError as exc:
        return BundleError(f"{ckpt.path}: cannot read ({exc.strerror or exc})")


def _run_cell(config: PipelineConfig, cache: BuildCache, tool: dict[str, Any],
              fingerprint: dict[str, Any] | QwenEdgeError, ckpt: CheckpointEntry, entry: TargetEntry) -> dict[str, Any]:
    output = config.output / ckpt.name / entry.name
    cell: dict[str, Any] = {"checkpoint": ckpt.name, "target": entry.name, "output": str(output), "key": None,
                            "status": "failed", "passed": False, "error": None, "stages": {}}
    start = time.perf_counter()
    try:
        with _Stage(cell, "fingerprint"):
            if isinstance(fingerprint, QwenEdgeError):
                raise fingerprint
            key, inputs = build_key(fingerprint, _recipe(entry), tool)
            cell["key"] = key
        with _Stage(cell, "build") as record:
            cell["status"] = _build_or_reuse(cache, key, inputs, ckpt, entry, output)
            record["cache_hit"] = cell["status"] != "built"
        with _Stage(cell, "integrity") as record:
            if cell["status"] == "up-to-date":  # checked just now, by _build_or_reuse
                record["problems"] = []
                record["checked_by"] = "build"
            else:
                problems = manifest_mod.check_integrity(output)
                record["problems"] = problems
                if problems:
                    raise BundleError(f"{output}: integrity check failed: {problems[0]}")
        if entry.gate is not None:
            with _Stage(cell, "gate") as record:
                record.update(_gate(cache, key, ckpt, entry, output))
                if not record["passed"]:
                    raise _GateFailed(record["failure"])
        cell["passed"] = True
    except Exception as exc:  # one cell's failure (or a bug) is reported; the other cells still run
        text = str(exc).splitlines()[0] if str(exc) else ""
        cell["error"] = text if isinstance(exc, QwenEdgeError) else f"{type(exc).__name__}: {text}"
    cell["seconds"] = round(time.perf_counter() - start, 4)
    return cell


class _GateFailed(QwenEdgeError):
    exit_code = 6


def _build_or_reuse(cache: BuildCache, key: str, inputs: dict[str, Any], ckpt: CheckpointEntry,
                    entry: TargetEntry, output: Path) -> str:
    """Leave, copy or build the cell's output; returns which of the three happened."""
    if same_manifest(cache.bundle_dir(key), output) and not manifest_mod.check_integrity(output):
        return "up-to-date"  # the output is this build, intact: the cache entry is not even read
    cached = cache.lookup(key)
    status = "copied-from-cache"
    if cached is None:
        from ..build import BuildRequest, build
        from ..graph.decoder import DecoderOptions

        cached = cache.bundle_dir(key)
        cached.parent.mkdir(parents=True, exist_ok=True)
        build(BuildRequest(ckpt.path, cached, entry.precision, target=entry.target,
                           options=DecoderOptions(max_positions=entry.max_length)))
        cache.write_inputs(key, inputs)
        status = "built"
    place(cached, output)
    return status


def _gate(cache: BuildCache, key: str, ckpt: CheckpointEntry, entry: TargetEntry, output: Path) -> dict[str, Any]:
    """Parity of the bundle against its checkpoint; the result is cached by bundle key and gate."""
    gate_key = digest({"bundle": key, "gate": entry.gate.to_dict()})
    result = cache.gate_result(gate_key)
    if result is not None:
        return result | {"cache_hit": True}
    from ..targets.verification import verify_bundle

    report = verify_bundle(output, ckpt.path, reference_kind=entry.gate.reference)
    parity = report["parity"]
    min_top1 = entry.gate.min_top1 if entry.gate.min_top1 is not None else report["tolerance"]["min_top1"]
    max_kl = entry.gate.max_kl if entry.gate.max_kl is not None else report["tolerance"]["max_kl"]
    failure = None
    for name, rep in (("prefill", parity), ("kv-cache", report["parity_kv_cache"])):
        if rep["top1_agreement"] < min_top1 or rep["kl_divergence_mean"] > max_kl:
            failure = failure or (f"{output.name}: {name} parity top-1 {rep['top1_agreement']:.4f} / KL "
                                  f"{rep['kl_divergence_mean']:.3g} outside min_top1 {min_top1} / max_kl {max_kl}")
    result = {"reference": report["reference"], "top1_agreement": parity["top1_agreement"],
              "kl_divergence_mean": parity["kl_divergence_mean"], "min_top1": min_top1, "max_kl": max_kl,
              "passed": failure is None, "failure": failure}
    cache.store_gate_result(gate_key, result)
    return result | {"cache_hit": False}
