"""`qwen-edge build`: one checkpoint, one or several targets, through qwen_edge.build.

The flags are the union of what the targets' builders take: weight-format flags become each graph
builder's Precision, builder flags (--chunk, --calibration-text, --quantizer, --context-binary) go
to the builders whose options have them, and a builder flag no chosen target takes is an error.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .output import add_common, emit, native_stdout_to_stderr, progress_for

# Flags that exist only for a builder's own options: option name -> flag.
BUILDER_FLAGS = {"chunk": "--chunk", "calibration_text": "--calibration-text", "quantizer": "--quantizer",
                 "context_binary": "--context-binary"}


def add_parser(sub) -> None:
    b = sub.add_parser("build", help="build a bundle from a Hugging Face checkpoint directory")
    b.add_argument("checkpoint")
    b.add_argument("-o", "--output", required=True)
    b.add_argument("--target", default="cpu", help="a target, a comma-separated list (OUT/<target>/ each), or 'all'")
    b.add_argument("--precision", default=None, choices=["fp32", "fp16", "int8", "int4", "w8a16", "w4a16"],
                   help="default: each target's default (cpu: int4, npu-qnn: w8a16)")
    b.add_argument("--verify", action="store_true",
                   help="run parity against the checkpoint for every target executed here; outside tolerance fails")
    b.add_argument("--no-parity-gate", action="store_true",
                   help="record parity numbers, never fail on them (--verify, and npu-qnn's own check)")
    b.add_argument("--verify-text", help="with --verify: a text file for perplexity")
    b.add_argument("--verify-context", type=int, default=1024)
    b.add_argument("--verify-max-tokens", type=int, default=65536)
    b.add_argument("--reference-kind", choices=["auto", "transformers", "numpy"], default="numpy")
    b.add_argument("--block-size", type=int, default=None)
    b.add_argument("--symmetric", action=argparse.BooleanOptionalAction, default=None,
                   help="int4/int8 without zero points, or with them (--no-symmetric); default: the "
                        "architecture's choice (symmetric for Qwen3.5, asymmetric otherwise)")
    b.add_argument("--accuracy-level", type=int, default=None, help="MatMulNBits accuracy_level (0-4)")
    b.add_argument("--quant-method", choices=["rtn", "search"], default=None)
    b.add_argument("--embeddings", choices=["float", "int8", "int4"], default=None)
    b.add_argument("--lm-head", choices=["float", "int8", "int4"], default=None)
    b.add_argument("--scale-dtype", choices=["fp16", "fp32"], default=None,
                   help="how block scales are stored (int4/int8 default: fp16, cast to the graph's type on load)")
    b.add_argument("--max-length", type=int, default=None,
                   help="context length of the bundle (default: the model's; npu-qnn: 1024 static cache slots)")
    b.add_argument("--genai-speculative", choices=["ngram"], default=None,
                   help="write onnxruntime-genai's `speculative` block into genai_config.json (prompt lookup; "
                        "not for Qwen3.5, whose state genai 0.18 cannot rewind)")
    b.add_argument("--exact-speculation", action="store_true",
                   help="cpu target: attention takes a spare row, so that speculative decoding gives plain "
                        "decoding's tokens bit for bit; decode costs ~1%% more at short contexts, far more at "
                        "long ones (README, Speculative decoding), and the context is one token shorter")
    _add_data_aware_arguments(b)
    g = b.add_argument_group("builder options (npu-qnn's static builder)")
    g.add_argument("--chunk", type=int, default=None, help="prefill graph chunk in tokens (default 128)")
    g.add_argument("--calibration-text", default=None,
                   help="local text file for QDQ calibration (default: a built-in corpus)")
    g.add_argument("--quantizer", choices=["olive", "onnxruntime"], default=None,
                   help="run QDQ through olive-ai's OnnxStaticQuantization pass (default) or onnxruntime directly")
    g.add_argument("--context-binary", action="store_true",
                   help="also compile each graph to an EPContext model (QNN context binary)")
    add_common(b)
    b.set_defaults(func=cmd_build)


def _add_data_aware_arguments(parser) -> None:
    from ..quant.data_aware import DATA_AWARE_METHODS

    parser.add_argument("--calibration", metavar="FILE|builtin", default=None,
                        help="calibration text for data-aware int4/int8 ('builtin': standard-library Python)")
    parser.add_argument("--method", choices=DATA_AWARE_METHODS, default=None,
                        help="data-aware method (default gptq when --calibration or a budget is given)")
    parser.add_argument("--calibration-tokens", type=int, default=None,
                        help="calibration tokens (default 8192; npu-qnn's QDQ calibration: 1024)")
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


def data_aware_fields(args: argparse.Namespace) -> dict[str, Any]:
    """BuildRequest's calibration, budget and quality from the data-aware flags."""
    from ..quant.calibration import BUILTIN
    from ..quant.data_aware import CalibrationConfig
    from ..quant.mixed_precision import Budget
    from ..quant.quality import QualityConfig

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


def weight_options(args: argparse.Namespace) -> dict[str, Any]:
    """The weight-format flags, as Precision.preset overrides (None: the preset's own value)."""
    return {"block_size": args.block_size, "symmetric": args.symmetric,
            "accuracy_level": args.accuracy_level, "method": args.quant_method, "embeddings": args.embeddings,
            "lm_head": args.lm_head, "scale_dtype": args.scale_dtype}


def builder_options(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given that set a builder's own options (each builder takes the ones it has)."""
    values = {"chunk": args.chunk, "calibration_text": args.calibration_text, "quantizer": args.quantizer,
              "context_binary": True if args.context_binary else None, "context": args.max_length,
              "calibration_tokens": args.calibration_tokens,
              "enforce_parity": False if args.no_parity_gate else None}
    return {k: v for k, v in values.items() if v is not None}


def _check_builder_flags(given: dict[str, Any], builders: list) -> None:
    taken = {name for b in builders for name in b.option_names}
    for option, flag in BUILDER_FLAGS.items():
        if option in given and option not in taken:
            raise ConfigError(f"{flag}: none of the chosen targets' builders takes it "
                              f"({', '.join(sorted({b.name for b in builders}))})")


def cmd_build(args: argparse.Namespace) -> int:
    from ..build.run import build_targets, target_outputs
    from ..graph.decoder import DecoderOptions
    from ..targets import resolve_targets
    from ..targets.catalog import get_builder
    from ..verify.parity import ParityRequest

    targets = resolve_targets(args.target)
    builders = [get_builder(t.builder, t.name) for t in targets]
    given = builder_options(args)
    _check_builder_flags(given, builders)
    parity = None
    if args.verify:
        parity = ParityRequest(reference_kind=args.reference_kind,
                               text_file=Path(args.verify_text) if args.verify_text else None,
                               context=args.verify_context, max_tokens=args.verify_max_tokens,
                               gate=not args.no_parity_gate)
    several = len(targets) > 1 or args.target == "all" or args.verify
    outputs = target_outputs(Path(args.output), targets)
    start = time.perf_counter()
    with native_stdout_to_stderr():
        manifests = build_targets(Path(args.checkpoint), Path(args.output), targets, precision=args.precision,
                                  weight_options=weight_options(args), builder_options=given,
                                  progress=progress_for(args), options=DecoderOptions(max_positions=args.max_length,
                                                                            exact_speculation=args.exact_speculation),
                                  parity=parity, genai_speculative=args.genai_speculative, **data_aware_fields(args))
    seconds = time.perf_counter() - start
    if several:
        data, text = _several_summary(manifests, outputs, seconds)
    else:
        data, text = _one_summary(next(iter(manifests.values())), outputs[targets[0].name], seconds)
    emit(args, data, text)
    return 0


def _bundle_bytes(manifest: dict[str, Any]) -> int:
    return sum(f["bytes"] for f in manifest["files"].values())


def _placement_lines(manifest: dict[str, Any]) -> list[str]:
    """What the manifest says beyond the summary: checkpoint tensors a text-only build left out, and
    where a bundle's graphs ran in the build's on-device check."""
    lines = [f"  left out (text-only build): {count} tensor(s) under {prefix}"
             for prefix, count in manifest["source"].get("left_out", {}).items()]
    lines += [f"  {k}: {p['on_npu']}/{p['nodes']} nodes on the QNN HTP"
             for k, p in manifest.get("qnn", {}).get("placement", {}).items()]
    parity = manifest.get("quality", {}).get("parity", {})
    if "prefill" in parity and "decode" in parity:
        lines.append(f"  parity vs float: prefill top-1 {parity['prefill']['top1_agreement'] * 100:.2f}%, "
                     f"decode top-1 {parity['decode'].get('top1_agreement', float('nan')) * 100:.2f}%, "
                     f"KL {parity['prefill']['kl_divergence_mean']:.3g}")
    return lines


def _one_summary(m: dict[str, Any], out: Path, seconds: float) -> tuple[dict[str, Any], str]:
    size = _bundle_bytes(m)
    data = {"output": str(out), "seconds": round(seconds, 3), "bundle_bytes": size, "precision": m["precision"],
            "weights": m["weights"], "quality": m.get("quality"),
            "mixed_precision": m.get("quantization", {}).get("mixed_precision")}
    if "qnn" in m:
        data["placement"] = m["qnn"]["placement"]
    text = "\n".join([f"built {out} ({m['precision']['name']}, {size / 1e6:.2f} MB, "
                      f"{m['weights']['bits_per_weight']:.2f} bits/weight) in {seconds:.1f}s"] + _placement_lines(m))
    return data, text


def _several_summary(manifests: dict[str, dict[str, Any]], outputs: dict[str, Path],
                     seconds: float) -> tuple[dict[str, Any], str]:
    summary, lines = {}, []
    for name, m in manifests.items():
        size = _bundle_bytes(m)
        entry = {"output": str(outputs[name]), "bundle_bytes": size, "precision": m["precision"]["name"],
                 "execution": m["target"]["execution"], "passes": [p["name"] for p in m.get("passes", [])]}
        if "parity" in m:
            entry["parity"] = m["parity"]
        summary[name] = entry
        verdict = ""
        if "parity" in m and "passed" in m["parity"]:
            p = m["parity"]["parity"]
            verdict = f", top-1 {p['top1_agreement'] * 100:.1f}%, KL {p['kl_divergence_mean']:.3g}"
            if "perplexity" in m["parity"]:
                verdict += f", perplexity {m['parity']['perplexity']['bundle']['perplexity']:.3f}"
            verdict += " (passed)" if m["parity"]["passed"] else " (outside tolerance, not gated)"
        lines.append(f"built {outputs[name]} [{name}: {m['precision']['name']}, {size / 1e6:.2f} MB, "
                     f"{m['target']['execution']}{verdict}]")
        lines += _placement_lines(m)
    lines.append(f"{len(manifests)} target(s) in {seconds:.1f}s")
    return {"targets": summary, "seconds": round(seconds, 3)}, "\n".join(lines)
