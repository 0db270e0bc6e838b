"""The CLI's target commands: `qwen-edge targets` and multi-target `build` (logic for cli.py)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def targets_table() -> list[dict[str, Any]]:
    from .targets import available_targets

    rows = []
    for t in available_targets().values():
        here = t.execution
        if t.executed_here and t.validated_providers:
            here = f"executed on CPU; {', '.join(t.validated_providers)} validated, not executed"
        rows.append({"name": t.name, "device_class": t.device_class, "provider": t.execution_provider,
                     "fallback": t.fallback, "builder": t.builder, "executed_here": t.executed_here,
                     "execution": here, "precisions": list(t.precisions), "default_precision": t.default_precision,
                     "passes": [p.name for p in t.passes], "description": t.description})
    return rows


def format_targets(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'name':10} {'device':7} {'provider':24} {'precisions':22} here"]
    for r in rows:
        lines.append(f"{r['name']:10} {r['device_class']:7} {r['provider']:24} {','.join(r['precisions']):22} "
                     f"{r['execution']}")
    return "\n".join(lines)


def precision_from_args(args, default: str) -> "Precision":
    """The --precision preset (or `default`) with the build command's weight-format options applied."""
    from .precision import Precision

    return Precision.preset(
        args.precision or default, block_size=args.block_size, symmetric=True if args.symmetric else None,
        accuracy_level=args.accuracy_level, method=args.quant_method, embeddings=args.embeddings,
        lm_head=args.lm_head, scale_dtype=args.scale_dtype)


def build_many(args: argparse.Namespace, progress) -> tuple[dict[str, Any], str]:
    from .graph.decoder import DecoderOptions
    from .precision import Precision
    from .target_build import build_targets
    from .target_parity import ParityRequest
    from .targets import resolve_targets

    targets = resolve_targets(args.target)

    def precision_for(target) -> Precision:
        return precision_from_args(args, target.default_precision)

    parity = None
    if args.verify:
        parity = ParityRequest(reference_kind=args.reference_kind, text_file=Path(args.verify_text) if args.verify_text else None,
                               context=args.verify_context, max_tokens=args.verify_max_tokens,
                               gate=not args.no_parity_gate)
    start = time.perf_counter()
    manifests = build_targets(Path(args.checkpoint), Path(args.output), targets, precision_for,
                              DecoderOptions(max_positions=args.max_length), parity=parity, progress=progress,
                              precision_name=args.precision)
    seconds = time.perf_counter() - start
    summary = {}
    lines = []
    for name, m in manifests.items():
        size = sum(f["bytes"] for f in m["files"].values())
        out = Path(args.output) if len(manifests) == 1 else Path(args.output) / name
        entry = {"output": str(out), "bundle_bytes": size, "precision": m["precision"]["name"],
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
        lines.append(f"built {out} [{name}: {m['precision']['name']}, {size / 1e6:.2f} MB, "
                     f"{m['target']['execution']}{verdict}]")
    lines.append(f"{len(manifests)} target(s) in {seconds:.1f}s")
    return {"targets": summary, "seconds": round(seconds, 3)}, "\n".join(lines)
