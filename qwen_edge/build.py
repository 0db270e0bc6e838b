"""The build pipeline: checkpoint -> spec -> graph -> bundle directory."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import __version__
from .arch import adapter_for
from .bundle import AheadDigests, copy_tokenizer_files, staged_output, write_manifest
from .checkpoint import Checkpoint
from .errors import CheckpointError, ConfigError, GraphError
from .genai_config import genai_config
from .graph.builder import GraphBuilder
from .graph.decoder import DecoderOptions, io_names
from .graph.registry import get_builder
from .graph.writer import ExternalDataWriter, save_model
from .limits import check_build_budget
from .manifest import SCHEMA_VERSION
from .precision import Precision
from .targets import get_target
from .worker_threads import worker_pool

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
DEPENDENCIES = ("onnx", "onnxruntime", "numpy", "tokenizers")

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BuildRequest:
    checkpoint: Path
    output: Path
    precision: Precision = field(default_factory=Precision)
    target: str = "cpu"
    options: DecoderOptions = field(default_factory=DecoderOptions)
    smoke_test: bool = True
    parity: Any = None  # qwen_edge.target_parity.ParityRequest: verify executed targets, gate the build
    calibration: Any = None  # quant.data_aware.CalibrationConfig: data-aware quantization
    budget: Any = None  # mixed_precision.Budget: per-tensor precision under a size / quality budget
    quality: Any = None  # quality.QualityConfig: measure the graph against the float reference


def tool_versions() -> dict[str, Any]:
    deps = {}
    for name in DEPENDENCIES:
        try:
            deps[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            deps[name] = None
    return {"name": "qwen-edge", "version": __version__, "python": platform.python_version(), "dependencies": deps}


def build(request: BuildRequest, progress: Progress | None = None) -> dict[str, Any]:
    """Build one bundle and return its manifest. The output appears only when complete."""
    target = get_target(request.target)
    check_precision(target, request.precision)
    with Checkpoint.open(request.checkpoint) as ckpt:
        return build_with_checkpoint(ckpt, request, target, progress)


def check_precision(target, precision: Precision) -> None:
    if precision.family not in target.precisions:
        raise ConfigError(f"target '{target.name}' does not support precision '{precision.name}' "
                          f"(supported: {', '.join(target.precisions)})")


def build_with_checkpoint(ckpt, request: BuildRequest, target, progress: Progress | None = None) -> dict[str, Any]:
    """Build one target's bundle from an open checkpoint (several targets can share one load)."""
    # The source files are hashed for the manifest on a thread of their own at the lowest priority:
    # hashlib releases the GIL, so the hashing fills the cores' idle moments (the serial reads, the
    # smoke test's single-threaded load) instead of taking turns with the quantizer's workers.
    stop = threading.Event()
    with worker_pool(1, "qwen-edge-fingerprint", background=True) as pool:
        fingerprint = pool.submit(ckpt.source_fingerprint, stop)
        try:
            return _build(ckpt, request, target, progress, fingerprint)
        finally:
            stop.set()  # a failed build does not wait for the hashing


def _build(ckpt, request: BuildRequest, target, progress: Progress | None, fingerprint: Future) -> dict[str, Any]:
    from . import target_build

    adapter = adapter_for(ckpt.architecture)
    spec = adapter.spec(ckpt.config, ckpt.architecture)
    context = request.options.context_length(spec)
    check_build_budget(spec, context, np.dtype(request.precision.numpy_dtype).itemsize,
                       context_from_user=request.options.max_positions is not None)
    precision = target_build.bundle_precision(target, request.precision)
    builder = get_builder(target.builder, target.name)
    if builder.bundle is not None:
        raise ConfigError(f"target '{target.name}' writes its own bundle and precision "
                          f"({', '.join(target.precisions)}): build it with build_targets() or "
                          f"`qwen-edge build --target {target.name}`")
    plan = None
    if (request.calibration is not None or request.budget is not None) and precision.family in ("int4", "int8"):
        if not getattr(builder.factory, "accepts_plan", False):
            raise ConfigError(f"target '{target.name}': data-aware quantization and size budgets need the "
                              f"ort-contrib builder, not '{target.builder}'")
        from .calibrated_build import prepare_plan

        plan, precision = prepare_plan(replace(request, precision=precision), adapter, spec, progress)
    graph_precision = target_build.graph_precision(target, precision)
    with staged_output(request.output) as stage, worker_pool(1, "qwen-edge-digest", background=True) as digest_pool:
        writer = ExternalDataWriter(stage / DATA_FILE)
        try:
            g = GraphBuilder(writer, name=f"qwen_edge_{spec.architecture}")
            extra = (plan,) if plan is not None else ()
            decoder = builder.factory(ckpt, adapter, spec, graph_precision, g, request.options, progress, *extra)
            decoder.build()
        finally:
            writer.close()
        leftover = ckpt.unconsumed()
        if leftover:
            raise CheckpointError(
                f"{Path(request.checkpoint).name}: {len(leftover)} tensor(s) not used by the "
                f"{spec.architecture} adapter, first '{leftover[0]}'"
            )
        model = g.model(doc=f"{spec.architecture} {request.precision.name} built by qwen-edge {__version__}")
        save_model(model, stage / MODEL_FILE)
        copy_tokenizer_files(ckpt, stage)
        if ckpt.chat_template is not None:
            (stage / "chat_template.jinja").write_text(ckpt.chat_template, encoding="utf-8")
        ahead = AheadDigests(digest_pool)
        if (stage / DATA_FILE).is_file():
            ahead.start(stage / DATA_FILE)  # hashed while the smoke test loads the graph on one core
        if request.smoke_test:
            if progress:
                progress("smoke test", 0, 1)
            _smoke_test(stage / MODEL_FILE, spec, graph_precision)
            if progress:
                progress("smoke test", 1, 1)
        passes = target_build.run_passes(target, stage, spec, precision, context, builder, progress)
        if passes.model_file.endswith((".onnx", ".ort")):
            gen = genai_config(spec, model_type=str(ckpt.config.get("model_type", "qwen2")),
                               context_length=context, generation=ckpt.generation, filename=passes.model_file,
                               provider_options=target_build.genai_provider_options(target))
            (stage / "genai_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "tool": tool_versions(),
            "source": {
                "path_name": Path(request.checkpoint).name,
                "architecture": ckpt.architecture,
                "model_type": ckpt.config.get("model_type"),
                "dtype": ckpt.torch_dtype,
                "weight_bytes": ckpt.weight_bytes(),
                "fingerprint": fingerprint.result(),
            },
            "architecture": spec.to_dict(),
            "precision": precision.to_dict() | {"name": precision.name},
            "target": {"name": target.name, "provider": target.execution_provider,
                       "fallback": target.fallback, "executed": target.executed_here,
                       "onnxruntime_package": target.onnxruntime_package,
                       "min_onnxruntime_version": target.min_onnxruntime_version,
                       **target_build.target_manifest(target)},
            "runtime": dict(target.runtime),
            "passes": passes.records,
            "io": {
                **io_names(spec.num_layers),
                "model_file": passes.model_file,
                "context_length": context,
                "kv_dtype": request.precision.dtype,
                "num_layers": spec.num_layers,
                "num_kv_heads": spec.num_kv_heads,
                "head_dim": spec.head_dim,
                "vocab_size": spec.vocab_size,
            },
            "generation": {
                "eos_token_ids": list(ckpt.generation.eos_token_ids),
                "bos_token_id": ckpt.generation.bos_token_id,
                "pad_token_id": ckpt.generation.pad_token_id,
            },
            "weights": decoder.stats.to_dict(),
            "graph": {"nodes": len(g.nodes), "op_counts": dict(sorted(g.op_counts.items()))},
        }
        if plan is not None:
            manifest["quantization"] = plan.report
        if request.quality is not None:
            from .quality import quality_report

            if progress:
                progress("quality", 0, 1)
            staged_bytes = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())
            manifest["quality"] = quality_report(stage / MODEL_FILE, request.checkpoint, adapter, spec, precision,
                                                 request.quality, manifest["weights"], staged_bytes, context)
            if progress:
                progress("quality", 1, 1)
        manifest = write_manifest(stage, manifest, ahead)
        return target_build.verify_target(stage, manifest, target, precision, request, progress)


def _smoke_test(model_path: Path, spec, precision: Precision) -> None:
    """Load the graph in onnxruntime and run a two-token prefill: a broken graph never lands."""
    import onnxruntime as ort

    from .lean_session import smoke_test_session_options

    try:
        # Expert-heavy graphs load without pre-packing: experts stay memory-mapped, only routed ones are read.
        opts = smoke_test_session_options(spec, precision)
        session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        dtype = precision.numpy_dtype
        feeds: dict[str, np.ndarray] = {
            "input_ids": np.zeros((1, 2), np.int64),
            "attention_mask": np.ones((1, 2), np.int64),
        }
        for i in range(spec.num_layers):
            for kind in ("key", "value"):
                feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, spec.num_kv_heads, 0, spec.head_dim), dtype)
        logits = session.run(["logits"], feeds)[0]
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise GraphError(f"{model_path.name}: onnxruntime could not run the built graph: {exc}".splitlines()[0]) from exc
    if logits.shape != (1, 2, spec.vocab_size) or not np.isfinite(logits).all():
        raise GraphError(f"{model_path.name}: smoke test produced logits of shape {logits.shape} with non-finite values")
