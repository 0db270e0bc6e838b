"""What this installation can build and run with: the built-in builders, passes and executors.

The registries (`builders`, `passes.registry`, `executors`) hold entries; this module imports the
modules that declare them and answers every lookup, so that no registry imports its entries and no
entry imports its users. Two halves, because a build needs onnx (two seconds to import) and
`qwen-edge run` must not pay for it:

* executors (what runs a built bundle here) are registered when this module is imported;
* builders and passes (what makes a bundle) are registered on the first build-side lookup.

The graph builders live in qwen_edge.graph, which does not import qwen_edge.targets; they are
registered here under the names target files use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..bundle import manifest as manifest_mod
from ..errors import ConfigError
from ..verify.executor import BundleExecutor, OnnxRuntimeExecutor
from .builders import BuilderInfo, all_builders, lookup_builder, register_graph_builder
from .executors import bundle_kind, lookup_executor, register_executor
from .openvino.runner import OpenVINOModel
from .passes.base import Pass
from .passes.registry import all_passes, lookup_pass
from .qnn import executor as _qnn_executor  # noqa: F401  (registers the "qnn-static" executor)


def _onnxruntime_generator(bundle: Path, options=None):
    from ..runtime import Generator, Model, RuntimeOptions

    return Generator(Model(bundle, options or RuntimeOptions()))


register_executor("onnx", OnnxRuntimeExecutor, _onnxruntime_generator, "onnxruntime (qwen_edge.runtime)")
register_executor("ort-format", OnnxRuntimeExecutor, _onnxruntime_generator, "onnxruntime from the .ort file")
register_executor("openvino-ir", OpenVINOModel, None, "openvino on CPU")

_build_side_loaded = False


def _load_build_side() -> None:
    global _build_side_loaded
    if _build_side_loaded:
        return
    _build_side_loaded = True
    from ..graph.ort_contrib import ort_contrib_decoder, required_ops
    from ..graph.standard_decoder import StandardDecoderBuilder, unsupported
    from .openvino import passes as _openvino_passes  # noqa: F401  (modules register their passes)
    from .passes import op_support as _op_support, ort_format as _ort_format  # noqa: F401
    from .qnn import build as _qnn_build  # noqa: F401  (registers the "qnn-static" bundle builder)

    register_graph_builder("ort-contrib", provides=("onnx",), accepts_plan=True,
                           required_ops=required_ops)(ort_contrib_decoder)
    register_graph_builder("standard", provides=("onnx", "onnx-standard"), unsupported=unsupported)(StandardDecoderBuilder)


# Build side ---------------------------------------------------------------------------------------
def get_builder(name: str, target: str) -> BuilderInfo:
    _load_build_side()
    return lookup_builder(name, f"target '{target}'")


def registered_builders() -> dict[str, BuilderInfo]:
    _load_build_side()
    return all_builders()


def get_pass(name: str, where: str = "") -> type[Pass]:
    _load_build_side()
    return lookup_pass(name, where)


def registered_passes() -> dict[str, type[Pass]]:
    _load_build_side()
    return all_passes()


def check_target(target) -> None:
    """A loaded target's builder exists and fits its graph constraints, and each pass's required
    artifacts exist when it runs (what the builder and the passes before it leave)."""
    _load_build_side()
    where = target.source or target.name
    builder = lookup_builder(target.builder, where)
    if target.graph.static_shapes and not builder.static_shapes:
        raise ConfigError(f"{where}: [graph] static_shapes = true, but builder '{builder.name}' makes dynamic shapes")
    have = set(builder.provides)
    for k, step in enumerate(target.passes):
        cls = get_pass(step.name, where=f"{where}: passes[{k}]")
        cls.Config.from_params(step.params, where=f"{where}: passes[{k}] ({step.name})")
        missing = [kind for kind in cls.requires if kind not in have]
        if missing:
            raise ConfigError(f"{where}: passes[{k}] '{step.name}' needs {', '.join(missing)}, which "
                              f"the builder '{target.builder}' and the passes before it do not provide")
        have = (have - set(cls.removes)) | set(cls.provides)


# Run side -----------------------------------------------------------------------------------------
def load_executor(bundle: Path, threads: int | None = None) -> BundleExecutor:
    """The executor that runs this bundle here, chosen by its manifest."""
    manifest = manifest_mod.load(Path(bundle))
    return lookup_executor(bundle_kind(manifest), Path(bundle)).executor(Path(bundle), threads=threads)


def load_generator(bundle: Path, options=None) -> Any:
    """A text generator for `qwen-edge run` (qwen_edge.runtime.Generator's interface)."""
    manifest = manifest_mod.load(Path(bundle))
    kind = bundle_kind(manifest)
    info = lookup_executor(kind, Path(bundle))
    if info.generator is None:
        raise ConfigError(f"{bundle}: '{kind}' bundles cannot generate text here ({info.description} runs them "
                          f"for verification only)")
    return info.generator(Path(bundle), options)
