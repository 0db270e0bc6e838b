"""`qwen-edge verify`: a bundle's signature, its files' hashes, or its outputs against the checkpoint
it was built from (through the executor its kind has here, qwen_edge.targets.verification)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .output import add_common, emit, native_stdout_to_stderr, progress_for

EXIT_INTEGRITY = 5
EXIT_VERIFICATION = 6


def add_parser(sub) -> None:
    v = sub.add_parser("verify", help="check a bundle against its reference checkpoint, or its file hashes")
    v.add_argument("bundle")
    v.add_argument("--reference", help="the checkpoint directory the bundle was built from")
    v.add_argument("--reference-kind", choices=["auto", "transformers", "numpy"], default="auto")
    v.add_argument("--integrity", action="store_true", help="only check every file's sha256 against the manifest")
    v.add_argument("--public-key", help="check the manifest's Ed25519 signature by this key (PEM file), then every file")
    v.add_argument("--text", help="a text file for perplexity")
    v.add_argument("--context", type=int, default=1024)
    v.add_argument("--max-tokens", type=int, default=65536)
    v.add_argument("--max-ppl-increase", type=float, default=None, help="fail above this perplexity increase (%%)")
    v.add_argument("--threads", type=int, default=None)
    add_common(v)
    v.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from ..bundle import manifest as manifest_mod

    if args.public_key:
        from ..bundle.signing import verify_bundle_signature

        verify_bundle_signature(Path(args.bundle), args.public_key)
        if not args.reference:
            emit(args, {"bundle": args.bundle, "intact": True, "signed": True}, "signature valid; intact")
            return 0
    if args.integrity:
        problems = manifest_mod.check_integrity(Path(args.bundle))
        emit(args, {"bundle": args.bundle, "intact": not problems, "problems": problems},
             "intact" if not problems else "\n".join(problems))
        return 0 if not problems else EXIT_INTEGRITY
    if not args.reference:
        raise ConfigError("verify: give --reference CHECKPOINT (or --integrity)")
    from ..targets.verification import verify_bundle

    with native_stdout_to_stderr():  # a backend's native library may print when it loads
        report = verify_bundle(Path(args.bundle), Path(args.reference), reference_kind=args.reference_kind,
                               text_file=Path(args.text) if args.text else None, context=args.context,
                               max_tokens=args.max_tokens, threads=args.threads, progress=progress_for(args),
                               max_ppl_increase=args.max_ppl_increase)
    emit(args, report, format_verification(report))
    return 0 if report["passed"] else EXIT_VERIFICATION


def format_verification(report: dict) -> str:
    p = report["parity"]
    lines = [f"reference: {report['reference']} (bundle run by {report['executed_with']})"]
    lines += [f"  {k}: {where['on_npu']}/{where['nodes']} nodes on the QNN HTP"
              for k, where in report.get("placement", {}).items() if "on_npu" in where]
    lines.append(f"parity on {p['prompts']} prompts / {p['positions']} positions: max |dlogits| "
                 f"{p['max_abs_logits_diff']:.3g}, top-1 agreement {p['top1_agreement'] * 100:.2f}%, "
                 f"KL mean {p['kl_divergence_mean']:.3g}")
    kv = report["parity_kv_cache"]
    if kv.get("positions"):
        lines.append(f"through the cache, {kv['positions']} positions: top-1 agreement "
                     f"{kv['top1_agreement'] * 100:.2f}%, KL mean {kv['kl_divergence_mean']:.3g}")
    if "perplexity" in report:
        ppl, tp = report["perplexity"], report["text_parity"]
        lines.append(f"perplexity ({ppl['bundle']['tokens_scored']} tokens, context {ppl['bundle']['context']}): "
                     f"bundle {ppl['bundle']['perplexity']:.4f}, reference {ppl['reference']['perplexity']:.4f} "
                     f"({ppl['increase_percent']:+.3f}%)")
        lines.append(f"{tp['text']}: top-1 agreement {tp['top1_agreement'] * 100:.2f}%, KL mean "
                     f"{tp['kl_divergence_mean']:.3g} over {tp['positions']} positions ({tp['windows']} windows "
                     f"of {tp['context']})")
    lines.append("PASSED" if report["passed"] else f"FAILED: {report['failure']}")
    return "\n".join(lines)
