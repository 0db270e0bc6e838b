"""Command-line glue for the npu-qnn target (kept apart from cli.py so it merges cleanly)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from ..errors import ConfigError

DEFAULT_CONTEXT = 1024


@contextlib.contextmanager
def native_stdout_to_stderr():
    """Qualcomm's HTP library prints a line to file descriptor 1 when it first loads; keep stdout
    for our results (`--json` must stay parseable) by pointing fd 1 at stderr meanwhile."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (embedded use): nothing to protect
        yield
        return
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("npu-qnn")
    g.add_argument("--chunk", type=int, default=128, help="npu-qnn: prefill graph chunk (tokens)")
    g.add_argument("--calibration-text", default=None,
                   help="npu-qnn: local text file for QDQ calibration (default: a built-in corpus)")
    g.add_argument("--quantizer", choices=["olive", "onnxruntime"], default="olive",
                   help="npu-qnn: run QDQ through olive-ai's OnnxStaticQuantization pass or onnxruntime directly")
    g.add_argument("--context-binary", action="store_true",
                   help="npu-qnn: also compile each graph to an EPContext model (QNN context binary)")


def build_command(args: argparse.Namespace, progress, emit) -> int:
    from .build import build_qnn
    from .options import QnnOptions

    precision = args.precision or "w8a16"
    if precision not in ("w8a16", "w4a16"):
        raise ConfigError(f"--precision {precision}: npu-qnn builds w8a16 or w4a16")
    options = QnnOptions(
        precision=precision, context=args.max_length or DEFAULT_CONTEXT, chunk=args.chunk,
        calibration_text=Path(args.calibration_text) if args.calibration_text else None,
        calibration_tokens=args.calibration_tokens or 1024, context_binary=args.context_binary, quantizer=args.quantizer,
        enforce_parity=not args.no_parity_gate,
    )
    start = time.perf_counter()
    with native_stdout_to_stderr():
        manifest = build_qnn(Path(args.checkpoint), Path(args.output), options=options, progress=progress)
    seconds = time.perf_counter() - start
    size = sum(f["bytes"] for f in manifest["files"].values())
    placement = manifest["qnn"]["placement"]
    parity = manifest["quality"]["parity"]
    emit(args, {"output": str(args.output), "seconds": round(seconds, 3), "bundle_bytes": size,
                "precision": manifest["precision"], "weights": manifest["weights"], "placement": placement,
                "quality": manifest["quality"]},
         f"built {args.output} (npu-qnn {precision}, {size / 1e6:.2f} MB) in {seconds:.1f}s\n"
         + "\n".join(f"  {k}: {p['on_npu']}/{p['nodes']} nodes on the QNN HTP" for k, p in placement.items())
         + f"\n  parity vs float: prefill top-1 {parity['prefill']['top1_agreement'] * 100:.2f}%, "
           f"decode top-1 {parity['decode']['top1_agreement'] * 100:.2f}%, "
           f"KL {parity['prefill']['kl_divergence_mean']:.3g}")
    return 0


def verify_command(args: argparse.Namespace, progress, emit, format_report) -> int:
    from .verification import run_qnn_verification

    with native_stdout_to_stderr():
        report = run_qnn_verification(Path(args.bundle), Path(args.reference), reference_kind=args.reference_kind,
                                      text_file=Path(args.text) if args.text else None, context=args.context,
                                      max_tokens=args.max_tokens, progress=progress,
                                      max_ppl_increase=args.max_ppl_increase)
    lines = format_report(report).split("\n")
    if "text_parity" in report:  # before the verdict line
        tp = report["text_parity"]
        lines.insert(len(lines) - 1, f"{tp['text']}: top-1 agreement {tp['top1_agreement'] * 100:.2f}%, KL mean "
                     f"{tp['kl_divergence_mean']:.3g} over {tp['positions']} positions ({tp['windows']} windows "
                     f"of {tp['context']})")
    text = "\n".join(lines)
    placement = "; ".join(f"{k}: {p['on_npu']}/{p['nodes']} nodes on the QNN HTP"
                          for k, p in report["placement"].items())
    emit(args, report, f"{placement}\n{text}")
    return 0 if report["passed"] else 6


def is_qnn_bundle(bundle: Path) -> bool:
    import json

    try:
        manifest = json.loads((Path(bundle) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("target", {}).get("builder") == "qnn-static"


def run_command(args: argparse.Namespace, emit) -> int:
    """Greedy generation on the HTP (sampling and chat stay with the CPU runtime for now)."""
    from .bundle_runner import load_qnn_bundle

    if args.prompt is None or args.temperature > 0:
        raise ConfigError("npu-qnn bundles run greedy with --prompt only (no --chat or sampling yet)")
    start = time.perf_counter()
    with native_stdout_to_stderr():
        qb = load_qnn_bundle(Path(args.bundle))
        ids = qb.encode(args.prompt)
        eos = tuple(qb.manifest["generation"]["eos_token_ids"])
        new = qb.runner.generate(ids, args.max_new_tokens, eos)
    text = qb.decode([t for t in new if t not in eos])
    emit(args, {"text": text, "token_ids": new, "seconds": round(time.perf_counter() - start, 3),
                "placement": qb.placement}, text)
    return 0
