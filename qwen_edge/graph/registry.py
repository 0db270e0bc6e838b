"""Graph builders keyed by the name a target file gives in `builder`.

A builder makes the target's first model file from the checkpoint; passes take it from there.
Builders that live in optional modules register themselves when that module is imported; the
table below says which module to import for a name, so a missing module is a ConfigError that
names the target instead of an ImportError.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError


@dataclass(frozen=True)
class BuilderInfo:
    name: str
    factory: Callable  # (checkpoint, adapter, spec, precision, graph_builder, options, progress) -> has .build(), .stats
    provides: tuple[str, ...]  # artifact kinds of the model it writes (see qwen_edge.passes.base.ARTIFACTS)
    static_shapes: bool = False
    # A builder that writes a whole bundle itself (several graphs, its own quantization and checks):
    # (checkpoint, output, precision_name, max_positions, progress) -> manifest. `factory` is unused then.
    bundle: Callable | None = None


_BUILDERS: dict[str, BuilderInfo] = {}
# name -> module that registers it on import
_MODULES = {
    "ort-contrib": "qwen_edge.graph.decoder",
    "standard": "qwen_edge.graph.standard_decoder",
    "qnn-static": "qwen_edge.qnn",
}


def register_builder(name: str, provides: tuple[str, ...], static_shapes: bool = False):
    def wrap(factory):
        _BUILDERS[name] = BuilderInfo(name, factory, provides, static_shapes)
        return factory
    return wrap


def register_bundle_builder(name: str, provides: tuple[str, ...], static_shapes: bool = False):
    def wrap(fn):
        _BUILDERS[name] = BuilderInfo(name, None, provides, static_shapes, bundle=fn)
        return fn
    return wrap


def check_builder_name(name: str, where: str, static_shapes: bool = False) -> None:
    if name not in _MODULES and name not in _BUILDERS:
        raise ConfigError(f"{where}: unknown builder '{name}' (known: {', '.join(sorted(set(_MODULES) | set(_BUILDERS)))})")
    info = _BUILDERS.get(name)
    if static_shapes and info is not None and not info.static_shapes:
        raise ConfigError(f"{where}: [graph] static_shapes = true, but builder '{name}' makes dynamic shapes")


def builder_provides(name: str) -> tuple[str, ...]:
    """Artifact kinds a builder writes; a builder in a module not imported yet is assumed to write ONNX."""
    info = _BUILDERS.get(name)
    return info.provides if info is not None else ("onnx",)


def get_builder(name: str, target: str) -> BuilderInfo:
    if name not in _BUILDERS:
        module = _MODULES.get(name)
        if module is None:
            raise ConfigError(f"target '{target}': unknown builder '{name}'")
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"target '{target}': builder '{name}' needs module {module}, which is not "
                              f"installed ({exc.name})") from None
        if name not in _BUILDERS:
            raise ConfigError(f"target '{target}': module {module} did not register builder '{name}'")
    return _BUILDERS[name]


def _register_core() -> None:
    from .decoder import DecoderBuilder
    from .standard_decoder import StandardDecoderBuilder

    register_builder("ort-contrib", provides=("onnx",))(DecoderBuilder)
    register_builder("standard", provides=("onnx", "onnx-standard"))(StandardDecoderBuilder)


_register_core()
