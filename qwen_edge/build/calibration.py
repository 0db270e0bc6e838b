"""The data-aware stage of a build: calibration text, per-tensor precision under a budget and the
quantization plan the graph builder then stores."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..checkpoint import Checkpoint
from ..quant.data_aware import CalibrationConfig, QuantPlan, calibration_ids, plan_quantization
from ..quant.forward import EMBED_SCOPE, HEAD_SCOPE
from ..quant.mixed_precision import choose_formats


def prepare_plan(request, adapter, spec, progress=None) -> tuple[QuantPlan, Any]:
    """Quantize ahead of the graph build; returns the plan and the precision the graph must use
    (embeddings / lm_head formats as the plan chose them)."""
    config: CalibrationConfig = request.calibration or CalibrationConfig()
    precision = request.precision
    with Checkpoint.open(request.checkpoint) as ckpt:
        ids, info = calibration_ids(ckpt, config)
        formats: dict[str, str] = {}
        block_sizes: dict[str, int] = {}
        selection = None
        if request.budget is not None:
            formats, block_sizes, selection = choose_formats(ckpt, adapter, spec, precision, config, request.budget,
                                                             ids, progress)
        plan = plan_quantization(ckpt, adapter, spec, precision, config, formats, block_sizes, ids, progress)
    plan.report["text"] = info
    if selection is not None:
        plan.report["mixed_precision"] = selection
    precision = replace(precision, embeddings=formats.get(EMBED_SCOPE, precision.embeddings),
                        lm_head=formats.get(HEAD_SCOPE, precision.lm_head))
    return plan, precision
