"""PIPELINE.toml: a matrix of checkpoints x targets, parsed into closed, typed entries.

    output = "dist"                   # bundles land in dist/<checkpoint>/<target>/
    cache = ".qwen-edge-cache"        # content-addressed build cache (default shown): a directory, or a
                                      # URL: s3://bucket/prefix, gs://..., az://..., file:///path
    report = "dist/report.json"       # default: <output>/report.json
    junit = "dist/junit.xml"          # default: <output>/junit.xml

    [[checkpoints]]
    name = "coder"
    path = "models/qwen2-code-30m"

    [[targets]]
    name = "cpu-int4"
    target = "cpu"                    # a target file name (default: name)
    precision = "int4"                # fp32 | fp16 | int8 | int4
    precision_options = { block_size = 64 }   # any Precision field
    max_length = 2048                 # optional context length
    gate = { reference = "numpy", min_top1 = 0.8 }   # optional parity gate

Relative paths are relative to the pipeline file. Unknown keys are errors.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..precision import Precision

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REFERENCE_KINDS = ("numpy", "transformers", "auto")


@dataclass(frozen=True)
class Gate:
    """A parity gate: the bundle against its checkpoint; tolerances default to verify's per precision."""

    reference: str = "numpy"
    min_top1: float | None = None
    max_kl: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "min_top1": self.min_top1, "max_kl": self.max_kl}


@dataclass(frozen=True)
class CheckpointEntry:
    name: str
    path: Path


@dataclass(frozen=True)
class TargetEntry:
    name: str
    target: str
    precision: Precision
    max_length: int | None = None
    gate: Gate | None = None


@dataclass(frozen=True)
class PipelineConfig:
    source: Path
    output: Path
    cache: str  # a directory (absolute) or a URL
    report: Path
    junit: Path
    checkpoints: tuple[CheckpointEntry, ...] = field(default_factory=tuple)
    targets: tuple[TargetEntry, ...] = field(default_factory=tuple)


def _closed(where: str, table: Any, required: dict[str, type], optional: dict[str, type]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    for key in table:
        if key not in required and key not in optional:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join([*required, *optional])})")
    for key, kind in {**required, **optional}.items():
        if key not in table:
            if key in required:
                raise ConfigError(f"{where}: required key '{key}' is missing")
            continue
        value = table[key]
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
        if not ok:
            raise ConfigError(f"{where}: '{key}' must be a {kind.__name__ if isinstance(kind, type) else 'number'}")
    return table


def _name(where: str, value: str, seen: set[str]) -> str:
    if not NAME.match(value):
        raise ConfigError(f"{where}: name {value!r} must be letters, digits, '.', '_' or '-' (a directory name)")
    if value in seen:
        raise ConfigError(f"{where}: name '{value}' is used twice")
    seen.add(value)
    return value


def _gate(where: str, table: Any) -> Gate:
    t = _closed(where, table, {}, {"reference": str, "min_top1": (int, float), "max_kl": (int, float)})
    reference = t.get("reference", "numpy")
    if reference not in REFERENCE_KINDS:
        raise ConfigError(f"{where}: 'reference' must be one of {', '.join(REFERENCE_KINDS)}, got '{reference}'")
    min_top1 = t.get("min_top1")
    if min_top1 is not None and not 0.0 <= min_top1 <= 1.0:
        raise ConfigError(f"{where}: 'min_top1' must be in [0, 1], got {min_top1}")
    max_kl = t.get("max_kl")
    if max_kl is not None and max_kl < 0:
        raise ConfigError(f"{where}: 'max_kl' must be non-negative, got {max_kl}")
    return Gate(reference, None if min_top1 is None else float(min_top1), None if max_kl is None else float(max_kl))


def is_url(location: str) -> bool:
    scheme = urlsplit(location).scheme
    return len(scheme) > 1 and "://" in location  # a Windows drive letter is not a scheme


def _cache_location(base: Path, value: str) -> str:
    return value if is_url(value) else str(base / value)


def load_pipeline(path: str | Path) -> PipelineConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read pipeline file ({exc})") from None
    where = str(path)
    top = _closed(where, data, {"output": str, "checkpoints": list, "targets": list},
                  {"cache": str, "report": str, "junit": str})
    base = path.resolve().parent
    output = base / top["output"]

    seen: set[str] = set()
    checkpoints = []
    for i, table in enumerate(top["checkpoints"]):
        w = f"{where}: checkpoints[{i}]"
        t = _closed(w, table, {"name": str, "path": str}, {})
        checkpoints.append(CheckpointEntry(_name(w, t["name"], seen), base / t["path"]))

    seen = set()
    targets = []
    for i, table in enumerate(top["targets"]):
        w = f"{where}: targets[{i}]"
        t = _closed(w, table, {"name": str, "precision": str},
                    {"target": str, "precision_options": dict, "max_length": int, "gate": dict})
        name = _name(w, t["name"], seen)
        try:
            precision = Precision.preset(t["precision"], **t.get("precision_options", {}))
        except TypeError as exc:
            raise ConfigError(f"{w}: 'precision_options': {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"{w}: {exc}") from None
        max_length = t.get("max_length")
        if max_length is not None and max_length <= 0:
            raise ConfigError(f"{w}: 'max_length' must be positive, got {max_length}")
        gate = _gate(f"{w}.gate", t["gate"]) if "gate" in t else None
        targets.append(TargetEntry(name, t.get("target", name), precision, max_length, gate))

    if not checkpoints or not targets:
        raise ConfigError(f"{where}: needs at least one [[checkpoints]] and one [[targets]] entry")
    return PipelineConfig(
        source=path.resolve(), output=output,
        cache=_cache_location(base, top.get("cache", ".qwen-edge-cache")),
        report=base / top["report"] if "report" in top else output / "report.json",
        junit=base / top["junit"] if "junit" in top else output / "junit.xml",
        checkpoints=tuple(checkpoints), targets=tuple(targets))
