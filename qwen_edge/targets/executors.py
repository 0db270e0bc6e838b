"""The executor registry: what runs a built bundle on this machine, for verification and for `run`.

A bundle's kind is its builder's name when an executor is registered under that name (a bundle
builder's own kind: the static QNN pair), else the artifact kind of its model file (`onnx`,
`ort-format`, `openvino-ir`). Each kind registers
a loader of a `qwen_edge.verify.executor.BundleExecutor` (logits for parity) and, where the kind can
generate text here, a loader of a generator (the `Generator` interface of qwen_edge.runtime:
`start`, `render_chat`, `model`).

Only the registry: which modules register executors is `qwen_edge.targets.catalog`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import BundleError

# A model file's suffix -> its artifact kind (qwen_edge.targets.passes.base.ARTIFACTS).
SUFFIX_KINDS = {".onnx": "onnx", ".ort": "ort-format", ".xml": "openvino-ir"}


@dataclass(frozen=True)
class ExecutorInfo:
    kind: str
    executor: Callable[..., Any]  # (bundle_dir, threads=None) -> BundleExecutor
    generator: Callable[..., Any] | None = None  # (bundle_dir, runtime_options) -> a Generator-like object
    description: str = ""


_EXECUTORS: dict[str, ExecutorInfo] = {}


def register_executor(kind: str, executor: Callable[..., Any], generator: Callable[..., Any] | None = None,
                      description: str = "") -> None:
    if kind in _EXECUTORS:
        raise BundleError(f"executor for '{kind}' bundles registered twice")
    _EXECUTORS[kind] = ExecutorInfo(kind, executor, generator, description)


def bundle_kind(manifest: dict[str, Any]) -> str:
    """The kind of a bundle from its manifest (see the module docstring)."""
    builder = manifest.get("target", {}).get("builder")
    if builder in _EXECUTORS:
        return builder
    model_file = str(manifest.get("io", {}).get("model_file", ""))
    kind = SUFFIX_KINDS.get(Path(model_file).suffix)
    if kind is None:
        raise BundleError(f"manifest.json: model file '{model_file}' is of no kind this qwen-edge can run")
    return kind


def lookup_executor(kind: str, bundle: Path) -> ExecutorInfo:
    if kind not in _EXECUTORS:
        raise BundleError(f"{bundle}: no executor for '{kind}' bundles on this machine "
                          f"(known: {', '.join(sorted(_EXECUTORS))})")
    return _EXECUTORS[kind]
