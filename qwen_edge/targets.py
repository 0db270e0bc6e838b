"""Targets are data: one TOML file per device class in `targets/`, validated on load."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

TARGETS_DIR = Path(os.environ.get("QWEN_EDGE_TARGETS_DIR", Path(__file__).resolve().parent.parent / "targets"))
DIALECTS = ("ort-contrib", "standard")
FALLBACKS = ("none", "cpu")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    device_class: str
    execution_provider: str
    fallback: str
    dialect: str
    executed_here: bool
    onnxruntime_package: str
    min_onnxruntime_version: str
    default_precision: str
    precisions: tuple[str, ...]
    runtime: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        where = self.source or self.name
        if self.dialect not in DIALECTS:
            raise ConfigError(f"{where}: 'dialect' must be one of {', '.join(DIALECTS)}, got '{self.dialect}'")
        if self.fallback not in FALLBACKS:
            raise ConfigError(f"{where}: 'fallback' must be one of {', '.join(FALLBACKS)}, got '{self.fallback}'")
        if self.default_precision not in self.precisions:
            raise ConfigError(f"{where}: 'default_precision' {self.default_precision} is not in 'precisions'")


_FIELDS = {
    "name": str, "description": str, "device_class": str, "execution_provider": str, "fallback": str,
    "dialect": str, "executed_here": bool, "onnxruntime_package": str, "min_onnxruntime_version": str,
    "default_precision": str, "precisions": list, "runtime": dict,
}
_OPTIONAL = {"runtime"}


def load_target_file(path: Path) -> Target:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read target file ({exc})") from None
    for key in data:
        if key not in _FIELDS:
            raise ConfigError(f"{path}: unknown key '{key}'")
    for key, kind in _FIELDS.items():
        if key not in data:
            if key in _OPTIONAL:
                continue
            raise ConfigError(f"{path}: required key '{key}' is missing")
        if not isinstance(data[key], kind):
            raise ConfigError(f"{path}: '{key}' must be a {kind.__name__}")
    if data["name"] != Path(path).stem:
        raise ConfigError(f"{path}: 'name' {data['name']!r} must match the file name")
    return Target(**{**data, "precisions": tuple(data["precisions"]), "source": str(path)})


def available_targets(directory: Path = TARGETS_DIR) -> dict[str, Target]:
    return {p.stem: load_target_file(p) for p in sorted(Path(directory).glob("*.toml"))}


def get_target(name: str, directory: Path = TARGETS_DIR) -> Target:
    path = Path(directory) / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(available_targets(directory))) or "none"
        raise ConfigError(f"target '{name}' not found in {directory} (available: {known})")
    return load_target_file(path)
