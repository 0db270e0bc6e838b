"""The pass interface: a typed, closed config and a declared contract.

A pass reads and writes files in the bundle's staging directory. Its contract says which
artifact kinds it needs (`requires`) and which it leaves behind (`provides`, `removes`), so a
target's pass list is checked for order when the target file is loaded, not half-way through a
build. Each run returns a record (name, resolved params, Olive pass and version when Olive did
the work, and what the pass measured) that goes into the manifest's `passes` list.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from ...errors import ConfigError

# Artifact kinds a model file can be.
ARTIFACTS = ("onnx", "onnx-standard", "openvino-ir", "ort-format")


@dataclass(frozen=True)
class PassConfig:
    """Base of every pass config: frozen dataclass, built from a TOML table with closed keys.

    A field's allowed values go in `metadata={"choices": (...)}`.
    """

    @classmethod
    def from_params(cls, params: dict[str, Any], where: str) -> "PassConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        for key, value in params.items():
            if key not in known:
                raise ConfigError(f"{where}: unknown parameter '{key}' (known: {', '.join(sorted(known)) or 'none'})")
            if not _matches(value, hints[key]):
                raise ConfigError(f"{where}: parameter '{key}' must be {_type_name(hints[key])}, got {value!r}")
            choices = known[key].metadata.get("choices")
            if choices is not None and value not in choices:
                raise ConfigError(f"{where}: parameter '{key}' must be one of {', '.join(map(str, choices))}, "
                                  f"got {value!r}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        inner = typing.get_args(hint)[0]
        return isinstance(value, (list, tuple)) and all(_matches(v, inner) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


@dataclass
class PassContext:
    """What a pass sees: the staging directory and what is in it."""

    stage: Path
    target: Any                       # qwen_edge.targets.Target
    spec: Any                         # qwen_edge.arch.ArchSpec
    precision_family: str             # fp32 / fp16 / int8 / int4, as the target lists them
    context_length: int
    artifacts: dict[str, str]         # kind -> file name (relative to stage)
    model_file: str                   # the bundle's primary model file
    progress: Callable[[str, int, int], None] = field(default=lambda stage, done, total: None)
    extra_manifest: dict[str, Any] = field(default_factory=dict)  # sections passes add to the manifest


class Pass:
    """Subclasses set `name`, `Config`, `requires`, `provides` (and `removes`) and implement `run`."""

    name: ClassVar[str]
    Config: ClassVar[type[PassConfig]]
    requires: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()
    removes: ClassVar[tuple[str, ...]] = ()
    olive_pass: ClassVar[str | None] = None   # the olive-ai pass class this wraps, if any

    def __init__(self, config: PassConfig):
        self.config = config

    def run(self, ctx: PassContext) -> dict[str, Any]:
        """Do the work in ctx.stage, update ctx.artifacts / ctx.model_file; return what it measured."""
        raise NotImplementedError

    def record(self, result: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "params": self.config.to_dict(),
                                 "implementation": "olive" if self.olive_pass else "qwen-edge"}
        if self.olive_pass:
            import importlib.metadata

            entry["olive_pass"] = self.olive_pass
            entry["olive_version"] = importlib.metadata.version("olive-ai")
        if result:
            entry["result"] = result
        return entry
