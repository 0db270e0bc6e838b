"""ORT format (.ort) conversion and the required-operators config for a reduced onnxruntime build.

The same session settings onnxruntime.tools.convert_onnx_models_to_ort uses (save format ORT,
graph optimizations without the x86-only NCHWc transformer), through the Python API so that no
tool output is printed; the file is then made byte-reproducible (ort_canonical). The .ort file holds
its initializers inline, so it replaces model.onnx and its external data in the bundle. The default level is "all", the same optimizations the CPU
session applies to model.onnx: with a lower level the .ort graph is fused differently and its
logits drift from the CPU bundle's (greedy tokens then split on near-ties).
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from typing import Any

from ...errors import GraphError
from .base import Pass, PassConfig, PassContext
from .ort_canonical import canonical_ort
from .registry import register_pass

ORT_NAME = "model.ort"
CONFIG_NAME = "required_operators.config"


@dataclass(frozen=True)
class OrtFormatConfig(PassConfig):
    optimization: str = field(default="all", metadata={"choices": ("disable", "basic", "extended", "all")})
    size_budget_mb: float = 0.0  # fail the build when the .ort file exceeds this many MB (0: no budget)
    type_reduction: bool = False  # also reduce the per-operator element types in the config


@register_pass
class ToOrtFormat(Pass):
    name = "ort.to_ort_format"
    Config = OrtFormatConfig
    requires = ("onnx",)
    provides = ("ort-format",)
    removes = ("onnx",)

    def run(self, ctx: PassContext) -> dict[str, Any]:
        import onnxruntime as ort
        from onnxruntime.tools.ort_format_model import create_config_from_models

        levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        source = ctx.stage / ctx.artifacts["onnx"]
        target = ctx.stage / ORT_NAME
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = levels[self.config.optimization]
        so.optimized_model_filepath = str(target)
        so.add_session_config_entry("session.save_model_format", "ORT")
        so.add_session_config_entry("session.qdqisint8allowed", "1")
        try:
            ort.InferenceSession(str(source), so, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=["NchwcTransformer"])
        except Exception as exc:  # onnxruntime raises untyped errors
            raise GraphError(f"{source.name}: ORT format conversion failed: {str(exc).splitlines()[0]}") from exc
        if not target.is_file():
            raise GraphError(f"{source.name}: ORT format conversion wrote no {ORT_NAME}")
        target.write_bytes(canonical_ort(target.read_bytes()))  # the same bytes from every conversion
        tool_logger = logging.getLogger("ort_format_model.utils")
        level = tool_logger.level
        tool_logger.setLevel(logging.WARNING)  # the tool logs an INFO line per file; library code stays quiet
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                create_config_from_models([target], ctx.stage / CONFIG_NAME, self.config.type_reduction)
        finally:
            tool_logger.setLevel(level)
        config = ctx.stage / CONFIG_NAME  # it names the file it was made from: the bundle's name, not the stage's path
        config.write_text(config.read_text(encoding="utf-8").replace(str(target), ORT_NAME), encoding="utf-8")
        for name in (source.name, source.name + ".data"):
            (ctx.stage / name).unlink(missing_ok=True)
        ctx.artifacts.pop("onnx", None)
        ctx.artifacts.pop("onnx-standard", None)
        ctx.artifacts["ort-format"] = ORT_NAME
        ctx.model_file = ORT_NAME
        size = target.stat().st_size
        budget = self.config.size_budget_mb
        if budget and size > budget * 1e6:
            raise GraphError(f"{ctx.target.name}: {ORT_NAME} is {size / 1e6:.2f} MB, over the size budget "
                             f"of {budget} MB")
        # Lines read "domain;opset;Op1,Op2": kept as they are, for the report.
        ops = sorted(line.strip() for line in (ctx.stage / CONFIG_NAME).read_text().splitlines()
                     if line.strip() and not line.startswith("#"))
        return {"ort_bytes": size, "size_budget_bytes": int(budget * 1e6) if budget else None,
                "within_budget": (size <= budget * 1e6) if budget else None,
                "required_operators_config": CONFIG_NAME, "required_operators": ops}
