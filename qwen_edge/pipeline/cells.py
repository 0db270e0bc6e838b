"""The matrix as a list of cells, each with its cache key (or the reason it has none).

A cell is named `<checkpoint>/<target>` (both names are directory names without '/', so the name is
unambiguous and safe in a CI matrix). Its key comes from the checkpoint's source fingerprint, the
resolved recipe and the tool (cache.build_key); working it out hashes the checkpoint's files once per
checkpoint, through the stat-keyed FileHashes table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import Checkpoint
from ..errors import BundleError, QwenEdgeError
from ..targets import get_target
from .cache import FileHashes, build_key, digest
from .config import CheckpointEntry, PipelineConfig, TargetEntry


@dataclass(frozen=True)
class Cell:
    index: int  # position in the whole matrix (checkpoint-major), the report's order
    name: str
    checkpoint: CheckpointEntry
    target: TargetEntry
    output: Path
    key: str | None = None
    inputs: dict[str, Any] | None = None
    error: str | None = None  # why the key could not be made (the fingerprint stage's failure)
    fingerprint_seconds: float = 0.0


def cell_name(checkpoint: str, target: str) -> str:
    return f"{checkpoint}/{target}"


def recipe(entry: TargetEntry) -> dict[str, Any]:
    target = get_target(entry.target)
    return {
        "target": entry.target,
        "target_file_sha256": digest(Path(target.source).read_text(encoding="utf-8")),
        "precision": entry.precision.to_dict(),
        "max_length": entry.max_length,
        "smoke_test": True,
    }


def fingerprint(ckpt: CheckpointEntry, hashes: FileHashes) -> dict[str, Any]:
    """The checkpoint's source fingerprint (as Checkpoint.source_fingerprint), through the hash cache;
    the checkpoint is fully validated on every run."""
    try:
        with Checkpoint.open(ckpt.path) as opened:
            return {"files": {name: hashes.sha256(path) for name, path in opened.source_files().items()}}
    except OSError as exc:
        raise BundleError(f"{ckpt.path}: cannot read ({exc.strerror or exc})") from None


def plan_cells(config: PipelineConfig, tool: dict[str, Any], hashes: FileHashes) -> list[Cell]:
    """Every cell of the matrix with its key; a checkpoint that cannot be read gives its cells an error."""
    cells = []
    for ckpt in config.checkpoints:
        start = time.perf_counter()
        try:
            source: dict[str, Any] | None = fingerprint(ckpt, hashes)
            problem = None
        except QwenEdgeError as exc:
            source, problem = None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        seconds = time.perf_counter() - start
        for entry in config.targets:
            key = inputs = None
            error = problem
            if source is not None:
                try:
                    key, inputs = build_key(source, recipe(entry), tool)
                except QwenEdgeError as exc:
                    error = str(exc).splitlines()[0]
            cells.append(Cell(len(cells), cell_name(ckpt.name, entry.name), ckpt, entry,
                              config.output / ckpt.name / entry.name, key, inputs, error, round(seconds, 4)))
    return cells
