"""The manifest sections every build writes, whatever made the model files: the tool, the source
checkpoint, the architecture, the target, the runtime settings, the generation ids and the checkpoint's
recommended sampling."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
from pathlib import Path
from typing import Any

from .. import __version__
from ..bundle.manifest import SCHEMA_VERSION

DEPENDENCIES = ("onnx", "onnxruntime", "numpy", "tokenizers")


def tool_versions() -> dict[str, Any]:
    deps = {}
    for name in DEPENDENCIES:
        try:
            deps[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            deps[name] = None
    return {"name": "qwen-edge", "version": __version__, "python": platform.python_version(), "dependencies": deps}


def target_section(target) -> dict[str, Any]:
    return {
        "name": target.name, "provider": target.execution_provider, "fallback": target.fallback,
        "executed": target.executed_here, "onnxruntime_package": target.onnxruntime_package,
        "min_onnxruntime_version": target.min_onnxruntime_version,
        "execution": target.execution,
        "device_class": target.device_class,
        "builder": target.builder,
        "dialect": target.dialect,
        "graph": dataclasses.asdict(target.graph) | {"op_support": list(target.graph.op_support)},
        "provider_options": target.provider_options,
        "validated_providers": list(target.validated_providers),
        "validated_only": {p: "validated, not executed" for p in target.validated_providers}
        if target.validated_providers else ({} if target.executed_here
                                            else {target.execution_provider: "validated, not executed"}),
    }


SAMPLING_FIELDS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty")


def sampling_record(generation) -> dict[str, Any]:
    """generation_config.json's sampling fields as the checkpoint gives them (absent ones left out): the
    runtime's default sampling (SamplingParams.from_generation_config reads this)."""
    return {k: getattr(generation, k) for k in SAMPLING_FIELDS if getattr(generation, k) is not None}


def common_sections(ckpt, request, spec, target, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The sections below; a builder's own sections (precision, io, weights, passes...) are added to them."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": tool_versions(),
        "source": {
            "path_name": Path(request.checkpoint).name,
            "architecture": ckpt.architecture,
            "model_type": ckpt.config.get("model_type"),
            "dtype": ckpt.torch_dtype,
            "weight_bytes": ckpt.weight_bytes(),
            "fingerprint": fingerprint,
        },
        "architecture": spec.to_dict(),
        "target": target_section(target),
        "runtime": dict(target.runtime),
        "generation": {
            "eos_token_ids": list(ckpt.generation.eos_token_ids),
            "bos_token_id": ckpt.generation.bos_token_id,
            "pad_token_id": ckpt.generation.pad_token_id,
            "sampling": sampling_record(ckpt.generation),
        },
    }
