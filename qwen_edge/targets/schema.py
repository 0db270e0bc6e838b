"""The target schema: one TOML file per device class in `targets/`, validated on load.

Top-level keys name the device, its execution provider and fallback, how the graph is made
(`builder`, `dialect`) and whether the target runs on this machine (`executed_here`) or is only
checked against the provider's documented operator support. Tables:

  [graph]             constraints on the built graph (static shapes, opset, activation dtype,
                      where weight quantization happens, operator-support tables to check)
  [[passes]]          ordered passes, each `name` + `[passes.params]` checked against the pass's
                      typed config (qwen_edge.targets.passes)
  [provider_options]  options for the execution provider (written to genai_config / manifest)
  [parity.<family>]   tolerances per precision family (top-1, KL, perplexity increase)
  [runtime]           session settings the runtime applies

Every table is closed: an unknown key is an error naming the file and the key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..verify.tolerances import Tolerance

TARGETS_DIR = Path(os.environ.get("QWEN_EDGE_TARGETS_DIR", Path(__file__).resolve().parents[2] / "targets"))
DIALECTS = ("ort-contrib", "standard")
FALLBACKS = ("none", "cpu")
DEVICE_CLASSES = ("cpu", "gpu", "npu", "mobile")
# w8a16 / w4a16: QDQ with 16-bit activations, made by builders that write their own bundle (npu-qnn).
PRECISION_FAMILIES = ("fp32", "fp16", "int8", "int4", "w8a16", "w4a16")
WEIGHT_STAGES = ("builder", "passes")


def _check_table(data: Any, spec: dict[str, type | tuple[type, ...]], where: str,
                 required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A closed table: unknown keys, missing required keys and wrong types are errors naming the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a table")
    for key in data:
        if key not in spec:
            raise ConfigError(f"{where}: unknown key '{key}'")
    for key in required:
        if key not in data:
            raise ConfigError(f"{where}: required key '{key}' is missing")
    for key, kind in spec.items():
        if key in data and (not isinstance(data[key], kind) or (kind is int and isinstance(data[key], bool))):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigError(f"{where}: '{key}' must be a {names}")
    return data


@dataclass(frozen=True)
class GraphConstraints:
    static_shapes: bool = False
    opset: int = 21
    dtype: str | None = None                   # force the activation dtype (fp16 for DirectML)
    weights: str = "builder"                   # who quantizes weights: the graph builder or a pass
    op_support: tuple[str, ...] = ()           # operator-support tables (qwen_edge/data/op_support/*.toml)
    embeddings: str | None = None              # force the embedding storage (DirectML has no GatherBlockQuantized)

    _SPEC = {"static_shapes": bool, "opset": int, "dtype": str, "weights": str, "op_support": list,
             "embeddings": str}

    @classmethod
    def from_toml(cls, data: dict, where: str) -> "GraphConstraints":
        _check_table(data, cls._SPEC, where)
        g = cls(**{**data, "op_support": tuple(data.get("op_support", ()))})
        if g.dtype is not None and g.dtype not in ("fp32", "fp16"):
            raise ConfigError(f"{where}: 'dtype' must be fp32 or fp16, got '{g.dtype}'")
        if g.embeddings is not None and g.embeddings not in ("float", "int8", "int4"):
            raise ConfigError(f"{where}: 'embeddings' must be float, int8 or int4, got '{g.embeddings}'")
        if g.weights not in WEIGHT_STAGES:
            raise ConfigError(f"{where}: 'weights' must be one of {', '.join(WEIGHT_STAGES)}, got '{g.weights}'")
        if not 13 <= g.opset <= 23:
            raise ConfigError(f"{where}: 'opset' {g.opset} is outside 13..23")
        return g


@dataclass(frozen=True)
class PassStep:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


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
    builder: str = "ort-contrib"
    graph: GraphConstraints = field(default_factory=GraphConstraints)
    passes: tuple[PassStep, ...] = ()
    provider_options: dict[str, Any] = field(default_factory=dict)
    validated_providers: tuple[str, ...] = ()
    genai_provider: str | None = None
    parity: dict[str, Tolerance] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = self.source or self.name
        if self.dialect not in DIALECTS:
            raise ConfigError(f"{where}: 'dialect' must be one of {', '.join(DIALECTS)}, got '{self.dialect}'")
        if self.fallback not in FALLBACKS:
            raise ConfigError(f"{where}: 'fallback' must be one of {', '.join(FALLBACKS)}, got '{self.fallback}'")
        if self.device_class not in DEVICE_CLASSES:
            raise ConfigError(f"{where}: 'device_class' must be one of {', '.join(DEVICE_CLASSES)}, "
                              f"got '{self.device_class}'")
        for p in self.precisions:
            if p not in PRECISION_FAMILIES:
                raise ConfigError(f"{where}: 'precisions' entry '{p}' is not one of {', '.join(PRECISION_FAMILIES)}")
        if self.default_precision not in self.precisions:
            raise ConfigError(f"{where}: 'default_precision' {self.default_precision} is not in 'precisions'")
        for family in self.parity:
            if family not in PRECISION_FAMILIES:
                raise ConfigError(f"{where}: [parity.{family}] is not a precision family")

    @property
    def execution(self) -> str:
        """What this machine does with the target, in the words the CLI and manifest use."""
        return "executed" if self.executed_here else "validated, not executed"

    def tolerance(self, family: str) -> Tolerance:
        """Parity tolerance for a precision family: the file's [parity.<family>], else the defaults."""
        return self.parity.get(family) or Tolerance.default(family)


_TOLERANCE_KEYS = {"min_top1": (int, float), "max_kl": (int, float), "max_ppl_increase_percent": (int, float)}
_FIELDS = {
    "name": str, "description": str, "device_class": str, "execution_provider": str, "fallback": str,
    "dialect": str, "executed_here": bool, "onnxruntime_package": str, "min_onnxruntime_version": str,
    "default_precision": str, "precisions": list, "runtime": dict, "builder": str, "graph": dict,
    "passes": list, "provider_options": dict, "validated_providers": list, "genai_provider": str, "parity": dict,
}
_OPTIONAL = {"runtime", "builder", "graph", "passes", "provider_options", "validated_providers", "genai_provider",
             "parity"}


def _passes(entries: list, where: str) -> tuple[PassStep, ...]:
    steps = []
    for k, entry in enumerate(entries):
        _check_table(entry, {"name": str, "params": dict}, f"{where}: passes[{k}]", required=("name",))
        steps.append(PassStep(entry["name"], dict(entry.get("params", {}))))
    return tuple(steps)


def _parity(data: dict, where: str) -> dict[str, Tolerance]:
    out = {}
    for family, table in data.items():
        here = f"{where}: [parity.{family}]"
        _check_table(table, _TOLERANCE_KEYS, here, required=("min_top1", "max_kl"))
        try:
            out[family] = Tolerance(**{k: float(v) for k, v in table.items()})
        except ConfigError as exc:  # its message names the key; add the file and table
            raise ConfigError(f"{here}: {str(exc).removeprefix('tolerance: ')}") from None
    return out


def load_target_file(path: Path) -> Target:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read target file ({exc})") from None
    _check_table(data, _FIELDS, str(path), required=tuple(k for k in _FIELDS if k not in _OPTIONAL))
    if data["name"] != Path(path).stem:
        raise ConfigError(f"{path}: 'name' {data['name']!r} must match the file name")
    values = dict(data)
    values["precisions"] = tuple(data["precisions"])
    values["graph"] = GraphConstraints.from_toml(data.get("graph", {}), f"{path}: [graph]")
    values["passes"] = _passes(data.get("passes", []), str(path))
    values["validated_providers"] = tuple(data.get("validated_providers", ()))
    values["parity"] = _parity(data.get("parity", {}), str(path))
    target = Target(**values, source=str(path))
    from .catalog import check_target  # the builders and passes it names exist and fit together

    check_target(target)
    return target


def available_targets(directory: Path = TARGETS_DIR) -> dict[str, Target]:
    return {p.stem: load_target_file(p) for p in sorted(Path(directory).glob("*.toml"))}


def get_target(name: str, directory: Path = TARGETS_DIR) -> Target:
    path = Path(directory) / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(available_targets(directory))) or "none"
        raise ConfigError(f"target '{name}' not found in {directory} (available: {known})")
    return load_target_file(path)


def resolve_targets(spec: str, directory: Path = TARGETS_DIR) -> list[Target]:
    """'cpu', 'cpu,openvino' or 'all' -> targets, in the order given (all: sorted by name)."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ConfigError("--target: no target named")
    if names == ["all"]:
        return list(available_targets(directory).values())
    if len(set(names)) != len(names):
        raise ConfigError(f"--target: a target is named twice in '{spec}'")
    return [get_target(n, directory) for n in names]
