"""The pipeline's JSON report: made from cell records, written with its JUnit twin, and merged from
the reports of a CI matrix's shards.

A shard's report holds its own cells (each with its `index` in the whole matrix) and says which
shard it is; merging checks that the reports come from one pipeline and matrix, that no cell is
there twice and none is missing (the matrix is recognised by its cell names: the jobs' paths may
differ; the merged report takes the first report's), and gives the report the unsharded run would have written, timings
apart (`seconds` is the slowest shard's).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from ..bundle import manifest as manifest_mod
from ..errors import ConfigError
from .junit import write_junit

REPORT_SCHEMA = 1
STATUSES = ("built", "copied-from-cache", "up-to-date", "failed")


def matrix_digest(names: Iterable[str]) -> str:
    """What identifies a matrix across the machines of a CI run: its cells' names, in order."""
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


def make_report(*, pipeline: str, output: str, cache: str, seconds: float, cells: Iterable[dict[str, Any]],
                cells_total: int, matrix: str, shard: str | None = None) -> dict[str, Any]:
    cells = sorted(cells, key=lambda c: c["index"])
    return {
        "schema_version": REPORT_SCHEMA,
        "matrix": matrix,
        "pipeline": pipeline,
        "output": output,
        "cache": cache,
        "shard": shard,
        "seconds": round(seconds, 4),
        "passed": all(c["passed"] for c in cells),
        "summary": {status: sum(c["status"] == status for c in cells) for status in STATUSES}
        | {"cells": len(cells), "cells_passed": sum(c["passed"] for c in cells)},
        "cells_total": cells_total,
        "cells": cells,
    }


def write_report(report: dict[str, Any], path: Path, junit: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(manifest_mod.dumps(report), encoding="utf-8")
    tmp.replace(path)
    write_junit(report, junit)


def read_report(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read a pipeline report ({exc})") from None
    if not isinstance(report, dict) or report.get("schema_version") != REPORT_SCHEMA or \
            not isinstance(report.get("cells"), list) or "cells_total" not in report or "matrix" not in report:
        raise ConfigError(f"{path}: not a pipeline report of schema {REPORT_SCHEMA}")
    return report


def merge_reports(reports: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """One report from the shards' reports (path, report), as the unsharded run would have written it."""
    if not reports:
        raise ConfigError("merge-reports: no reports given")
    first_path, first = reports[0]
    by_index: dict[int, tuple[Path, dict[str, Any]]] = {}
    for path, report in reports:
        for field in ("matrix", "cells_total"):  # paths may differ between the jobs' machines
            if report.get(field) != first.get(field):
                raise ConfigError(f"{path}: its {field} {report.get(field)!r} differs from {first_path}'s "
                                  f"{first.get(field)!r}")
        for cell in report["cells"]:
            if cell["index"] in by_index:
                raise ConfigError(f"{path}: cell {cell['name']!r} is also in {by_index[cell['index']][0]}")
            by_index[cell["index"]] = (path, cell)
    missing = sorted(set(range(first["cells_total"])) - set(by_index))
    if missing:
        raise ConfigError(f"merge-reports: {len(missing)} of {first['cells_total']} cells are in no report "
                          f"(matrix positions {', '.join(str(i) for i in missing[:8])})")
    return make_report(pipeline=first["pipeline"], output=first["output"], cache=first["cache"],
                       seconds=max(r["seconds"] for _, r in reports), cells=[c for _, c in by_index.values()],
                       cells_total=first["cells_total"], matrix=first["matrix"])
