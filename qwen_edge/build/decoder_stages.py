"""The stages around a graph builder: precision for the target, the data-aware plan, the graph,
the smoke test, the target's passes, genai_config.json and the quality report.

`DecoderStages.prepare` runs before the output is staged (checks and calibration); `write` fills
the staging directory and returns the manifest sections the graph and passes produced.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..bundle.files import AheadDigests
from ..bundle.genai_config import genai_config, special_token_ids
from ..checkpoint.limits import check_build_budget
from ..errors import CheckpointError, ConfigError
from ..graph.builder import GraphBuilder
from ..graph.decoder_io import cache_io, empty_feeds, spare_row_io
from ..graph.writer import ExternalDataWriter, save_model
from ..precision import Precision
from ..targets.catalog import get_pass
from ..targets.passes.base import PassContext
from .smoke_test import smoke_test
from .vision_language_stages import check_vision_language_request, write_stages

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"

Progress = Callable[[str, int, int], None]


def bundle_precision(target, precision: Precision) -> Precision:
    """The precision the bundle is described with: the target may force the activation dtype."""
    if target.graph.dtype is not None and precision.dtype != target.graph.dtype:
        precision = dataclasses.replace(precision, dtype=target.graph.dtype)
    if target.graph.embeddings is not None and precision.embeddings != target.graph.embeddings:
        precision = dataclasses.replace(precision, embeddings=target.graph.embeddings)
    return precision


def graph_precision(target, precision: Precision) -> Precision:
    """The precision the builder uses: float weights when a pass quantizes them later."""
    if target.graph.weights == "passes":
        return Precision(dtype="fp32")
    return precision


@dataclass
class PassesResult:
    model_file: str
    records: list[dict[str, Any]]


def run_passes(target, stage: Path, spec, precision: Precision, context: int, builder,
               progress: Progress | None = None) -> PassesResult:
    ctx = PassContext(stage=stage, target=target, spec=spec, precision_family=precision.family,
                      context_length=context, artifacts={kind: MODEL_FILE for kind in builder.provides},
                      model_file=MODEL_FILE)
    if progress:
        ctx.progress = progress
    records = []
    for k, step in enumerate(target.passes):
        if progress:
            progress(f"pass {step.name}", k, len(target.passes))
        cls = get_pass(step.name)
        p = cls(cls.Config.from_params(step.params, where=f"{target.source}: passes[{k}]"))
        records.append(p.record(p.run(ctx)))
        if progress:
            progress(f"pass {step.name}", k + 1, len(target.passes))
    return PassesResult(ctx.model_file, records)


def genai_provider_options(target) -> list[dict[str, Any]]:
    if target.genai_provider is None:
        return []
    return [{target.genai_provider: {k: str(v) for k, v in target.provider_options.items()}}]


class DecoderStages:
    def __init__(self, ckpt, adapter, spec, request, target, builder, progress: Progress | None):
        self.ckpt, self.adapter, self.spec = ckpt, adapter, spec
        self.request, self.target, self.builder, self.progress = request, target, builder, progress

    def prepare(self) -> None:
        """Checks what the config asks the build to allocate, and quantizes ahead of the graph
        when the request is data-aware or budgeted."""
        request, spec, target = self.request, self.spec, self.target
        self.context = request.options.context_length(spec)
        check_build_budget(spec, self.context, np.dtype(request.precision.numpy_dtype).itemsize,
                           context_from_user=request.options.max_positions is not None)
        self.precision = bundle_precision(target, request.precision)
        self.plan = None
        if spec.mrope is not None:
            check_vision_language_request(request, target)
        if (request.calibration is not None or request.budget is not None) and self.precision.family in ("int4", "int8"):
            if not self.builder.accepts_plan:
                raise ConfigError(f"target '{target.name}': data-aware quantization and size budgets need the "
                                  f"ort-contrib builder, not '{target.builder}'")
            from .calibration import prepare_plan

            self.plan, self.precision = prepare_plan(dataclasses.replace(request, precision=self.precision),
                                                     self.adapter, spec, self.progress)
        self.graph_precision = graph_precision(target, self.precision)

    def write(self, stage: Path, ahead: AheadDigests) -> dict[str, Any]:
        ckpt, spec, request, target, progress = self.ckpt, self.spec, self.request, self.target, self.progress
        if spec.mrope is not None:
            return self._write_vision_language(stage)
        writer = ExternalDataWriter(stage / DATA_FILE)
        try:
            g = GraphBuilder(writer, name=f"qwen_edge_{spec.architecture}")
            extra = (self.plan,) if self.plan is not None else ()
            decoder = self.builder.graph(ckpt, self.adapter, spec, self.graph_precision, g, request.options, progress,
                                         *extra)
            decoder.build()
        finally:
            writer.close()
        left_out, leftover = self.adapter.split_unused(ckpt.unconsumed())
        if leftover:
            raise CheckpointError(
                f"{Path(request.checkpoint).name}: {len(leftover)} tensor(s) not used by the "
                f"{spec.architecture} adapter, first '{leftover[0]}'"
            )
        model = g.model(doc=f"{spec.architecture} {request.precision.name} built by qwen-edge {__version__}")
        save_model(model, stage / MODEL_FILE)
        if (stage / DATA_FILE).is_file():
            ahead.start(stage / DATA_FILE)  # hashed while the smoke test loads the graph on one core
        if request.smoke_test:
            if progress:
                progress("smoke test", 0, 1)
            smoke_test(stage / MODEL_FILE, spec, self.graph_precision)
            if progress:
                progress("smoke test", 1, 1)
        passes = run_passes(target, stage, spec, self.precision, self.context, self.builder, progress)
        if passes.model_file.endswith((".onnx", ".ort")):
            tokenizer = stage / "tokenizer.json"
            gen = genai_config(spec, model_type=str(ckpt.config.get("model_type", "qwen2")),
                               context_length=self.context, generation=ckpt.generation, filename=passes.model_file,
                               provider_options=genai_provider_options(target),
                               special_tokens=special_token_ids(tokenizer) if tokenizer.is_file() else None,
                               speculative=request.genai_speculative,
                               # the spare attention row's present is one position longer than genai's
                               # per-step tensors: genai's fixed buffers (max_length positions) take it
                               share_buffer=request.options.exact_speculation)
            (stage / "genai_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")
        sections: dict[str, Any] = {
            "precision": self.precision.to_dict() | {"name": self.precision.name},
            "passes": passes.records,
            "io": {
                **cache_io(spec, request.precision.dtype),
                "model_file": passes.model_file,
                "context_length": self.context,
                "kv_dtype": request.precision.dtype,
                "num_layers": spec.num_layers,
                "num_kv_heads": spec.num_kv_heads,
                "head_dim": spec.head_dim,
                "vocab_size": spec.vocab_size,
                **spare_row_io(request.options),
            },
            "weights": decoder.stats.to_dict(),
            "graph": {"nodes": len(g.nodes), "op_counts": dict(sorted(g.op_counts.items()))},
        }
        if left_out:  # a text-only build of a multimodal checkpoint: what it did not convert, said
            sections["left_out"] = left_out
        if self.plan is not None:
            sections["quantization"] = self.plan.report
        if request.quality is not None:
            from ..quant.quality import quality_report

            if progress:
                progress("quality", 0, 1)
            staged_bytes = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())
            sections["quality"] = quality_report(stage / MODEL_FILE, request.checkpoint, self.adapter, spec,
                                                 request.quality, sections["weights"], staged_bytes,
                                                 self.context,
                                                 feeds=lambda n: empty_feeds(spec, self.precision.dtype, n))
            if progress:
                progress("quality", 1, 1)
        return sections

    def genai_provider_options(self) -> list[dict[str, Any]]:
        return genai_provider_options(self.target)

    def _write_vision_language(self, stage: Path) -> dict[str, Any]:
        """vision.onnx + embedding.onnx + the M-RoPE decoder (build/vision_language_stages.py)."""
        sections = write_stages(self, stage)
        return sections
