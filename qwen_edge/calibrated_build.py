"""The data-aware part of a build: calibration, per-tensor precision under a budget, and the
quality report that goes into the manifest. build.py calls in here; the logic lives here."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .checkpoint import Checkpoint
from .quant.data_aware import CalibrationConfig, QuantPlan, calibration_ids, plan_quantization
from .quant.forward import EMBED_SCOPE, HEAD_SCOPE


def prepare_plan(request, adapter, spec, progress=None) -> tuple[QuantPlan, Any]:
    """Quantize ahead of the graph build; returns the plan and the precision the graph must use
    (embeddings / lm_head formats as the plan chose them)."""
    config: CalibrationConfig = request.calibration or CalibrationConfig()
    precision = request.precision
    with Checkpoint.open(request.checkpoint) as ckpt:
        ids, info = calibration_ids(ckpt, config)
        formats: dict[str, str] = {}
        block_sizes: dict[str, int] = {}
        budget = getattr(request, "budget", None)
        selection = None
        if budget is not None:
            from .mixed_precision import choose_formats

            formats, block_sizes, selection = choose_formats(ckpt, adapter, spec, precision, config, budget,
                                                             ids, progress)
        plan = plan_quantization(ckpt, adapter, spec, precision, config, formats, block_sizes, ids, progress)
    plan.report["text"] = info
    if selection is not None:
        plan.report["mixed_precision"] = selection
    precision = replace(precision, embeddings=formats.get(EMBED_SCOPE, precision.embeddings),
                        lm_head=formats.get(HEAD_SCOPE, precision.lm_head))
    return plan, precision


def add_build_arguments(parser) -> None:
    """The build command's options for data-aware quantization, budgets and the quality report."""
    from .quant.data_aware import DATA_AWARE_METHODS

    parser.add_argument("--calibration", metavar="FILE|builtin", default=None,
                        help="calibration text for data-aware int4/int8 ('builtin': standard-library Python)")
    parser.add_argument("--method", choices=DATA_AWARE_METHODS, default=None,
                        help="data-aware method (default gptq when --calibration or a budget is given)")
    parser.add_argument("--calibration-tokens", type=int, default=None, help="calibration tokens (default 8192)")
    parser.add_argument("--max-size", type=float, default=None, metavar="MB",
                        help="mixed precision: upgrade the most sensitive tensors to int8 within this bundle size")
    parser.add_argument("--max-ppl-increase", type=float, default=None, metavar="PCT",
                        help="mixed precision: upgrade tensors until the predicted perplexity increase is below this")
    parser.add_argument("--eval-text", default=None, metavar="FILE|builtin",
                        help="evaluation text of the manifest's quality report (default builtin)")
    quality = parser.add_mutually_exclusive_group()
    quality.add_argument("--quality", dest="quality", action="store_true", default=None,
                         help="write the manifest's quality report (default: on for data-aware or budgeted builds)")
    quality.add_argument("--no-quality", dest="quality", action="store_false", help="skip the quality report")


def request_options(args) -> dict[str, Any]:
    """BuildRequest fields from the options above."""
    from .mixed_precision import Budget
    from .quality import QualityConfig
    from .quant.calibration import BUILTIN

    budget = None
    if args.max_size is not None or args.max_ppl_increase is not None:
        budget = Budget(max_size_mb=args.max_size, max_ppl_increase=args.max_ppl_increase)
    calibration = None
    if args.calibration is not None or args.method is not None or budget is not None:
        values: dict[str, Any] = {"source": args.calibration or BUILTIN}
        if args.method is not None:
            values["method"] = args.method
        if args.calibration_tokens is not None:
            values["tokens"] = args.calibration_tokens
            values["window"] = min(CalibrationConfig.window, args.calibration_tokens)
        calibration = CalibrationConfig.from_dict(values)
    quality = None
    # The report runs a float reference forward with full-vocabulary logits: on a 0.5B model that is
    # several GB and most of the build's time, so plain builds ask for it explicitly.
    wanted = args.quality if args.quality is not None else calibration is not None
    if wanted:
        quality = QualityConfig(calibration=args.calibration or BUILTIN, evaluation=args.eval_text or BUILTIN)
    return {"calibration": calibration, "budget": budget, "quality": quality}
