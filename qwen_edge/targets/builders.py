"""The builder registry: a target file's `builder` names the entry that makes its model.

Two kinds of builder, one registry:

* a graph builder (`graph`) makes one decoder graph from the checkpoint; the build's decoder
  stages run around it (data-aware plan, smoke test, the target's passes, genai_config);
* a bundle builder (`bundle`) makes a whole bundle's model files itself (several graphs, its own
  quantization and on-device checks, as the static QNN pair does) and returns its manifest
  sections; it takes its own typed, closed `options` from the build request's `builder_options`,
  and names the precisions it makes (`precisions`).

Only the registry: which modules declare builders is `qwen_edge.targets.catalog`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError


@dataclass(frozen=True)
class BuilderInfo:
    name: str
    provides: tuple[str, ...]  # artifact kinds of the model it writes (qwen_edge.targets.passes.base.ARTIFACTS)
    static_shapes: bool = False
    # (checkpoint, adapter, spec, precision, graph_builder, options, progress[, plan]) -> has .build(), .stats
    graph: Callable | None = None
    # (BundleJob) -> manifest sections; writes its model files into the job's stage directory
    bundle: Callable | None = None
    options: type | None = None  # a bundle builder's options: a closed dataclass with from_dict(values, where)
    precisions: tuple[str, ...] = ()  # precisions a bundle builder makes itself (a graph builder takes a Precision)
    accepts_plan: bool = False  # a graph builder that stores a data-aware quantization plan
    # spec -> why this builder cannot build it (None: it can); checked before anything is built
    unsupported: Callable[[Any], str | None] | None = None
    # spec -> (domain, op) pairs the graph needs beyond the dense decoder's, for targets' operator tables
    required_ops: Callable[[Any], tuple[tuple[str, str], ...]] | None = None

    def __post_init__(self) -> None:
        if (self.graph is None) == (self.bundle is None):
            raise ConfigError(f"builder '{self.name}': give exactly one of a graph or a bundle builder")
        if self.bundle is not None and (self.options is None or not self.precisions):
            raise ConfigError(f"builder '{self.name}': a bundle builder declares its options and precisions")

    @property
    def option_names(self) -> tuple[str, ...]:
        """The keys of `builder_options` this builder takes (none for graph builders)."""
        from dataclasses import fields

        return tuple(f.name for f in fields(self.options)) if self.options is not None else ()

    def parse_options(self, values: dict[str, Any], where: str) -> Any:
        """The builder's typed options from a build request's `builder_options` (unknown keys are errors)."""
        if self.options is None:
            if values:
                raise ConfigError(f"{where}: builder '{self.name}' takes no builder options, got "
                                  f"'{sorted(values)[0]}'")
            return None
        return self.options.from_dict(dict(values), where=where)


@dataclass(frozen=True)
class BundleJob:
    """What a bundle builder gets: the open checkpoint, its spec, the target and the stage to fill."""

    checkpoint: Any  # qwen_edge.checkpoint.Checkpoint
    adapter: Any     # qwen_edge.arch.ArchAdapter
    spec: Any        # qwen_edge.arch.ArchSpec
    target: Any      # qwen_edge.targets.schema.Target
    options: Any     # the builder's typed options
    stage: Any       # pathlib.Path of the staging directory
    progress: Callable[[str, int, int], None]


_BUILDERS: dict[str, BuilderInfo] = {}


def _add(info: BuilderInfo) -> None:
    if info.name in _BUILDERS:
        raise ConfigError(f"builder '{info.name}' registered twice")
    _BUILDERS[info.name] = info


def register_graph_builder(name: str, provides: tuple[str, ...], static_shapes: bool = False, **features: Any):
    """`features`: accepts_plan, unsupported, required_ops (see BuilderInfo)."""
    def wrap(cls):
        _add(BuilderInfo(name, provides, static_shapes, graph=cls, **features))
        return cls
    return wrap


def register_bundle_builder(name: str, provides: tuple[str, ...], *, options: type, precisions: tuple[str, ...],
                            static_shapes: bool = False, unsupported: Callable[[Any], str | None] | None = None):
    def wrap(fn):
        _add(BuilderInfo(name, provides, static_shapes, bundle=fn, options=options, precisions=precisions,
                         unsupported=unsupported))
        return fn
    return wrap


def lookup_builder(name: str, where: str) -> BuilderInfo:
    if name not in _BUILDERS:
        raise ConfigError(f"{where}: unknown builder '{name}' (known: {', '.join(sorted(_BUILDERS))})")
    return _BUILDERS[name]


def all_builders() -> dict[str, BuilderInfo]:
    return dict(_BUILDERS)
