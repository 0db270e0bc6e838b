"""One cell through its stages: fingerprint (done while planning), build, integrity, gate.

A cell whose inputs are unchanged is not rebuilt: its output is left as it is when it still
matches the cache entry and passes its integrity check, or copied from the cache otherwise. A new
build is made in place (atomically, as every build) and published to the cache only when it
succeeded and passes its integrity check. A gate result is cached only when it passed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..bundle import manifest as manifest_mod
from ..errors import BundleError, QwenEdgeError
from .cache import digest, manifest_sha256
from .cache_backends import CacheBackend
from .cells import Cell


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


class _GateFailed(QwenEdgeError):
    exit_code = 6


class _CellFailed(QwenEdgeError):
    pass


def new_record(cell: Cell) -> dict[str, Any]:
    return {"name": cell.name, "index": cell.index, "checkpoint": cell.checkpoint.name, "target": cell.target.name,
            "output": str(cell.output), "key": cell.key, "status": "failed", "passed": False, "error": None,
            "peak_rss_bytes": None, "stages": {}}


def failed_record(cell: Cell, error: str) -> dict[str, Any]:
    """The record of a cell that failed outside its stages (its worker died): a failed build stage, so
    that the JUnit report shows it."""
    return new_record(cell) | {"error": error, "stages": {"build": {"passed": False, "error": error, "seconds": 0.0}}}


def run_cell(cell: Cell, cache: CacheBackend, threads: int | None = None) -> dict[str, Any]:
    record = new_record(cell)
    start = time.perf_counter()
    try:
        with _Stage(record, "fingerprint") as stage:
            if cell.error is not None or cell.key is None:
                raise _CellFailed(cell.error or "no cache key")
        stage["seconds"] = cell.fingerprint_seconds
        with _Stage(record, "build") as stage:
            record["status"], stage["published"] = _build_or_reuse(cache, cell)
            stage["cache_hit"] = record["status"] != "built"
        with _Stage(record, "integrity") as stage:
            if record["status"] == "up-to-date":  # checked just now, by _build_or_reuse
                stage["problems"] = []
                stage["checked_by"] = "build"
            else:
                problems = manifest_mod.check_integrity(cell.output)
                stage["problems"] = problems
                if problems:
                    raise BundleError(f"{cell.output}: integrity check failed: {problems[0]}")
        if cell.target.gate is not None:
            with _Stage(record, "gate") as stage:
                stage.update(_gate(cache, cell, threads))
                if not stage["passed"]:
                    raise _GateFailed(stage["failure"])
        record["passed"] = True
    except Exception as exc:  # one cell's failure (or a bug) is reported; the other cells still run
        text = str(exc).splitlines()[0] if str(exc) else ""
        record["error"] = text if isinstance(exc, QwenEdgeError) else f"{type(exc).__name__}: {text}"
    record["seconds"] = round(time.perf_counter() - start + cell.fingerprint_seconds, 4)
    return record


def _build_or_reuse(cache: CacheBackend, cell: Cell) -> tuple[str, bool | None]:
    """Leave, copy or build the cell's output: which of the three happened, and for a build whether
    this job published the cache entry (False: another job had published it first)."""
    output = cell.output
    cached = cache.bundle_manifest_sha256(cell.key)
    if cached is not None and manifest_sha256(output) == cached and not manifest_mod.check_integrity(output):
        return "up-to-date", None  # the output is this build, intact: the entry's bundle is not read
    if cache.fetch(cell.key, output):
        return "copied-from-cache", None
    from ..build import BuildRequest, build
    from ..graph.decoder import DecoderOptions

    build(BuildRequest(cell.checkpoint.path, output, cell.target.precision, target=cell.target.target,
                       options=DecoderOptions(max_positions=cell.target.max_length)))
    return "built", cache.publish(cell.key, output, cell.inputs or {})


def _gate(cache: CacheBackend, cell: Cell, threads: int | None) -> dict[str, Any]:
    """Parity of the bundle against its checkpoint; a passed result is cached by bundle key and gate."""
    gate = cell.target.gate
    gate_key = digest({"bundle": cell.key, "gate": gate.to_dict()})
    result = cache.gate_result(gate_key)
    if result is not None:
        return result | {"cache_hit": True}
    from ..targets.verification import verify_bundle

    output: Path = cell.output
    report = verify_bundle(output, cell.checkpoint.path, reference_kind=gate.reference, threads=threads)
    parity = report["parity"]
    min_top1 = gate.min_top1 if gate.min_top1 is not None else report["tolerance"]["min_top1"]
    max_kl = gate.max_kl if gate.max_kl is not None else report["tolerance"]["max_kl"]
    failure = None
    for name, rep in (("prefill", parity), ("kv-cache", report["parity_kv_cache"])):
        if rep["top1_agreement"] < min_top1 or rep["kl_divergence_mean"] > max_kl:
            failure = failure or (f"{output.name}: {name} parity top-1 {rep['top1_agreement']:.4f} / KL "
                                  f"{rep['kl_divergence_mean']:.3g} outside min_top1 {min_top1} / max_kl {max_kl}")
    result = {"reference": report["reference"], "top1_agreement": parity["top1_agreement"],
              "kl_divergence_mean": parity["kl_divergence_mean"], "min_top1": min_top1, "max_kl": max_kl,
              "passed": failure is None, "failure": failure}
    if failure is None:
        cache.store_gate_result(gate_key, cell.key, result)
    return result | {"cache_hit": False}
