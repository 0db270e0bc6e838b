"""The `qwen-edge` command line: parses, builds a validated request, calls the library.

Progress goes to stderr, results to stdout (`--json` for machines). Every failure exits
non-zero with one line: the exit code is the error type's `exit_code`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .errors import QwenEdgeError

EXIT_INTERRUPTED = 130
EXIT_PIPELINE_FAILED = 7


class Progress:
    """Progress on stderr: a live line on a terminal, one line per finished stage otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.start = time.perf_counter()
        self.live = enabled and sys.stderr.isatty()
        self._stage = None
        self._open = False

    def _write(self, text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage and self._open:
            self._write("\n")
            self._open = False
        self._stage = stage
        line = f"[{time.perf_counter() - self.start:6.1f}s] {stage}: {done}/{total}"
        if self.live:
            self._write("\r" + line)
            self._open = True
            if done >= total:
                self._write("\n")
                self._open = False
        elif done >= total:
            self._write(line + "\n")

    def note(self, message: str) -> None:
        if self.enabled:
            if self._open:
                self._write("\n")
                self._open = False
            self._write(f"[{time.perf_counter() - self.start:6.1f}s] {message}\n")


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(text)


# Commands ----------------------------------------------------------------------------------
def cmd_build(args: argparse.Namespace) -> int:
    from .build import BuildRequest, build
    from .graph.decoder import DecoderOptions

    if args.target == "npu-qnn":  # alone, it takes its own options (--chunk, --calibration-text, --context-binary)
        from .qnn.cli import build_command

        return build_command(args, Progress(not (args.quiet or args.json)), _emit)
    if "," in args.target or args.target == "all" or args.verify:
        from .cli_targets import build_many

        data, text = build_many(args, Progress(not (args.quiet or args.json)))
        _emit(args, data, text)
        return 0
    from .cli_targets import precision_from_args

    precision = precision_from_args(args, "int4")
    from .calibrated_build import request_options

    request = BuildRequest(
        checkpoint=Path(args.checkpoint), output=Path(args.output), precision=precision, target=args.target,
        options=DecoderOptions(max_positions=args.max_length), **request_options(args),
    )
    progress = Progress(not (args.quiet or args.json))
    start = time.perf_counter()
    manifest = build(request, progress)
    seconds = time.perf_counter() - start
    size = sum(f["bytes"] for f in manifest["files"].values())
    _emit(args, {"output": str(args.output), "seconds": round(seconds, 3), "bundle_bytes": size,
                 "precision": manifest["precision"], "weights": manifest["weights"],
                 "quality": manifest.get("quality"), "mixed_precision": manifest.get("quantization", {}).get("mixed_precision")},
          f"built {args.output} ({precision.name}, {size / 1e6:.2f} MB, "
          f"{manifest['weights']['bits_per_weight']:.2f} bits/weight) in {seconds:.1f}s")
    return 0


def _generator(args: argparse.Namespace):
    from .runtime import Generator, Model, RuntimeOptions

    model = Model(args.bundle, RuntimeOptions(intra_op_threads=args.threads, verify_integrity=args.check_integrity,
                                              verify_signature=getattr(args, "public_key", None)))
    return Generator(model)


def _sampling(args: argparse.Namespace):
    from .runtime import SamplingParams

    return SamplingParams(do_sample=args.temperature > 0, temperature=args.temperature if args.temperature > 0 else 1.0,
                          top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                          seed=args.seed)


def cmd_run(args: argparse.Namespace) -> int:
    from .qnn.cli import is_qnn_bundle

    if is_qnn_bundle(Path(args.bundle)):  # static prefill/decode graphs on the HTP
        from .qnn.cli import run_command

        return run_command(args, _emit)
    gen = _generator(args)
    if args.chat == "":
        return _interactive_chat(gen, args)
    if args.chat is not None:
        prompt = gen.render_chat([{"role": "user", "content": args.chat}], **_template_vars(args))
    else:
        prompt = args.prompt
    g = gen.start(prompt, max_new_tokens=args.max_new_tokens, sampling=_sampling(args))
    if args.json:
        text = "".join(g)
        _emit(args, {"text": text, "token_ids": g.token_ids, "stats": vars(g.stats)
                     | {"decode_tokens_per_s": g.stats.decode_tokens_per_s}}, text)
    else:
        for piece in g:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        if not args.quiet:
            s = g.stats
            sys.stderr.write(f"[{s.prompt_tokens} prompt tokens, {s.new_tokens} new, TTFT {s.time_to_first_token_s * 1e3:.1f} ms, "
                             f"{s.decode_tokens_per_s:.1f} tok/s, stop: {s.finish_reason}]\n")
    return 0


def _template_vars(args: argparse.Namespace) -> dict:
    from .errors import ConfigError

    if not args.template_vars:
        return {}
    try:
        value = json.loads(args.template_vars)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--template-vars: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError("--template-vars: must be a JSON object")
    return value


def _interactive_chat(gen, args: argparse.Namespace) -> int:
    """A conversation on stdin/stdout: one user turn per line, history kept, empty line or EOF ends."""
    messages: list[dict] = []
    extra = _template_vars(args)
    while True:
        if sys.stdin.isatty():
            sys.stderr.write("you> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line or not line.strip():
            return 0
        messages.append({"role": "user", "content": line.rstrip("\n")})
        g = gen.start(gen.render_chat(messages, **extra), max_new_tokens=args.max_new_tokens,
                      sampling=_sampling(args))
        reply = []
        for piece in g:
            reply.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(reply)})


def cmd_verify(args: argparse.Namespace) -> int:
    from . import manifest as manifest_mod

    if args.public_key:
        from .signing import verify_bundle_signature

        verify_bundle_signature(Path(args.bundle), args.public_key)
        if not args.reference:
            _emit(args, {"bundle": args.bundle, "intact": True, "signed": True}, "signature valid; intact")
            return 0
    if args.integrity:
        problems = manifest_mod.check_integrity(Path(args.bundle))
        _emit(args, {"bundle": args.bundle, "intact": not problems, "problems": problems},
              "intact" if not problems else "\n".join(problems))
        return 0 if not problems else 5
    if not args.reference:
        from .errors import ConfigError

        raise ConfigError("verify: give --reference CHECKPOINT (or --integrity)")
    from .verification import run_verification

    progress = Progress(not (args.quiet or args.json))
    from .qnn.cli import is_qnn_bundle

    if is_qnn_bundle(Path(args.bundle)):  # static prefill/decode graphs on the HTP
        from .qnn.cli import verify_command

        return verify_command(args, progress, _emit, _format_verification)
    report = run_verification(Path(args.bundle), Path(args.reference), reference_kind=args.reference_kind,
                              text_file=Path(args.text) if args.text else None, context=args.context,
                              max_tokens=args.max_tokens, threads=args.threads, progress=progress,
                              max_ppl_increase=args.max_ppl_increase)
    _emit(args, report, _format_verification(report))
    return 0 if report["passed"] else 6


def _format_verification(report: dict) -> str:
    p = report["parity"]
    lines = [f"reference: {report['reference']}",
             f"parity on {p['prompts']} prompts / {p['positions']} positions: max |dlogits| {p['max_abs_logits_diff']:.3g}, "
             f"top-1 agreement {p['top1_agreement'] * 100:.2f}%, KL mean {p['kl_divergence_mean']:.3g}"]
    if "perplexity" in report:
        ppl = report["perplexity"]
        lines.append(f"perplexity ({ppl['bundle']['tokens_scored']} tokens, context {ppl['bundle']['context']}): "
                     f"bundle {ppl['bundle']['perplexity']:.4f}, reference {ppl['reference']['perplexity']:.4f} "
                     f"({ppl['increase_percent']:+.3f}%)")
    lines.append("PASSED" if report["passed"] else f"FAILED: {report['failure']}")
    return "\n".join(lines)


def _active_weight_lines(m: dict) -> list[str]:
    """Per-token figures (bundles built before they were recorded have none)."""
    w, moe = m["weights"], m["architecture"].get("moe")
    lines = []
    if moe:
        shared = f", shared expert {moe['shared_expert_intermediate_size']}" \
            if moe["shared_expert_intermediate_size"] else ""
        lines.append(f"experts:      {moe['num_experts']} x {moe['intermediate_size']} wide, top-{moe['top_k']}"
                     f"{' renormalised' if moe['norm_topk_prob'] else ''}, in {len(moe['sparse_layers'])} of "
                     f"{m['architecture']['num_layers']} layers{shared}")
    if "active_parameters" not in w:
        return lines
    return lines + [f"per token:    {w['active_parameters']:,} active of {w['parameters']:,} parameters, "
            f"{w['bytes_read_per_token'] / 1e6:.2f} MB of weights read"]


def cmd_inspect(args: argparse.Namespace) -> int:
    from . import manifest as manifest_mod

    m = manifest_mod.load(Path(args.bundle))
    size = sum(f["bytes"] for f in m["files"].values())
    arch = m["architecture"]
    text = "\n".join([
        f"bundle:       {args.bundle}",
        f"architecture: {m['source']['architecture']} ({arch['num_layers']} layers, hidden {arch['hidden_size']}, "
        f"{arch['num_heads']}/{arch['num_kv_heads']} heads, vocab {arch['vocab_size']})",
        f"precision:    {m['precision']['name']} (block {m['precision']['block_size']}, "
        f"{'symmetric' if m['precision']['symmetric'] else 'asymmetric'}, method {m['precision']['method']})",
        f"weights:      {m['weights']['parameters']:,} parameters, {m['weights']['bits_per_weight']:.2f} bits/weight",
    ] + _active_weight_lines(m) + [
        f"size:         {size / 1e6:.2f} MB in {len(m['files'])} files",
        f"context:      {m['io']['context_length']} tokens",
        f"target:       {m['target']['name']} ({m['target']['provider']})",
        f"built by:     qwen-edge {m['tool']['version']}",
    ] + ([f"quality:      {json.dumps(m['quality'])}"] if "quality" in m else []))
    _emit(args, m | {"bundle_bytes": size}, text)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .runtime.bench import benchmark

    gen = _generator(args)
    result = benchmark(gen, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, runs=args.runs,
                       warmup=args.warmup)
    _emit(args, result, (f"prompt {args.prompt_tokens} tokens, {args.new_tokens} new, median of {args.runs}: "
                         f"TTFT {result['ttft_ms_median']:.1f} ms, decode {result['decode_tokens_per_s_median']:.1f} tok/s, "
                         f"peak RSS {result['peak_rss_mb']:.0f} MB"))
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from .cli_targets import format_targets, targets_table

    rows = targets_table()
    _emit(args, {"targets": rows}, format_targets(rows))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    progress = Progress(not (args.quiet or args.json))
    report = run_demo(Path(args.workdir) if args.workdir else None, progress=progress)
    _emit(args, report, report["summary"])
    return 0 if report["passed"] else 6


def cmd_pipeline(args: argparse.Namespace) -> int:
    from .pipeline import load_pipeline, run_pipeline

    config = load_pipeline(Path(args.pipeline))
    progress = Progress(not (args.quiet or args.json))
    report = run_pipeline(config, progress)
    lines = [f"{c['checkpoint']} x {c['target']}: {c['status']}"
             + (f" ({c['seconds']:.1f}s)" if c["passed"] else f" FAILED: {c['error']}") for c in report["cells"]]
    s = report["summary"]
    lines.append(f"{s['cells_passed']}/{s['cells']} passed ({s['built']} built, {s['copied-from-cache']} from cache, "
                 f"{s['up-to-date']} up to date) in {report['seconds']:.1f}s; report {config.report}, "
                 f"JUnit {config.junit}")
    _emit(args, report, "\n".join(lines))
    return 0 if report["passed"] else EXIT_PIPELINE_FAILED


def cmd_keygen(args: argparse.Namespace) -> int:
    from .signing import write_keypair

    private, public = write_keypair(Path(args.output))
    _emit(args, {"private_key": str(private), "public_key": str(public)}, f"wrote {private} and {public}")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from .signing import sign_bundle

    path = sign_bundle(Path(args.bundle), args.key)
    _emit(args, {"signature": str(path)}, f"signed: {path}")
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    from .archive import package

    archives = package(Path(args.bundle), Path(args.output))
    _emit(args, {"archives": [str(a) for a in archives]}, "\n".join(str(a) for a in archives))
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    from .archive import unpack

    bundle = unpack(Path(args.archive), Path(args.output))
    _emit(args, {"bundle": str(bundle), "intact": True}, f"{bundle} (integrity checked)")
    return 0


# Parser ------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qwen-edge", description="Qwen checkpoints to verified edge bundles")
    p.add_argument("--version", action="version", version=f"qwen-edge {__import__('qwen_edge').__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        sp.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")

    def runtime_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the bundle's setting)")
        sp.add_argument("--check-integrity", action="store_true", help="check file hashes before loading")
        sp.add_argument("--public-key", help="require a valid Ed25519 signature by this key (PEM file) before loading")

    b = sub.add_parser("build", help="build a bundle from a Hugging Face checkpoint directory")
    b.add_argument("checkpoint")
    b.add_argument("-o", "--output", required=True)
    b.add_argument("--target", default="cpu", help="a target, a comma-separated list (OUT/<target>/ each), or 'all'")
    b.add_argument("--precision", default=None, choices=["fp32", "fp16", "int8", "int4", "w8a16", "w4a16"],
                   help="default: int4 (npu-qnn: w8a16), or with several targets each target's default")
    b.add_argument("--verify", action="store_true",
                   help="run parity against the checkpoint for every target executed here; outside tolerance fails")
    b.add_argument("--no-parity-gate", action="store_true", help="with --verify: record the numbers, never fail")
    b.add_argument("--verify-text", help="with --verify: a text file for perplexity")
    b.add_argument("--verify-context", type=int, default=1024)
    b.add_argument("--verify-max-tokens", type=int, default=65536)
    b.add_argument("--reference-kind", choices=["auto", "transformers", "numpy"], default="numpy")
    b.add_argument("--block-size", type=int, default=None)
    b.add_argument("--symmetric", action="store_true", help="symmetric int4/int8 (no zero points)")
    b.add_argument("--accuracy-level", type=int, default=None, help="MatMulNBits accuracy_level (0-4)")
    b.add_argument("--quant-method", choices=["rtn", "search"], default=None)
    b.add_argument("--embeddings", choices=["float", "int8", "int4"], default=None)
    b.add_argument("--lm-head", choices=["float", "int8", "int4"], default=None)
    b.add_argument("--scale-dtype", choices=["fp16", "fp32"], default=None,
                   help="how block scales are stored (int4/int8 default: fp16, cast to the graph's type on load)")
    b.add_argument("--max-length", type=int, default=None, help="context length of the bundle (default: the model's)")
    from .calibrated_build import add_build_arguments
    from .qnn.cli import add_build_arguments as add_qnn_build_arguments

    add_build_arguments(b)
    add_qnn_build_arguments(b)
    common(b)
    b.set_defaults(func=cmd_build)

    r = sub.add_parser("run", help="generate text with a bundle")
    r.add_argument("bundle")
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("--prompt")
    g.add_argument("--chat", nargs="?", const="", metavar="MESSAGE",
                   help="chat with the bundle's template: one MESSAGE, or without one, a conversation on stdin")
    r.add_argument("--template-vars", help='JSON object of extra chat template variables, e.g. {"enable_thinking": false}')
    r.add_argument("--max-new-tokens", type=int, default=128)
    r.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    r.add_argument("--top-k", type=int, default=0)
    r.add_argument("--top-p", type=float, default=1.0)
    r.add_argument("--repetition-penalty", type=float, default=1.0)
    r.add_argument("--seed", type=int, default=None)
    runtime_opts(r)
    common(r)
    r.set_defaults(func=cmd_run)

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
    common(v)
    v.set_defaults(func=cmd_verify)

    be = sub.add_parser("bench", help="time to first token and decode speed of a bundle")
    be.add_argument("bundle")
    be.add_argument("--prompt-tokens", type=int, default=128)
    be.add_argument("--new-tokens", type=int, default=128)
    be.add_argument("--runs", type=int, default=5)
    be.add_argument("--warmup", type=int, default=1)
    runtime_opts(be)
    common(be)
    be.set_defaults(func=cmd_bench)

    i = sub.add_parser("inspect", help="summarise a bundle's manifest")
    i.add_argument("bundle")
    common(i)
    i.set_defaults(func=cmd_inspect)

    pl = sub.add_parser("pipeline", help="build a checkpoints x targets matrix from a PIPELINE.toml, with a cache")
    pl.add_argument("pipeline")
    common(pl)
    pl.set_defaults(func=cmd_pipeline)

    kg = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles (needs qwen-edge[sign])")
    kg.add_argument("-o", "--output", required=True, help="directory for private.pem and public.pem")
    common(kg)
    kg.set_defaults(func=cmd_keygen)

    sg = sub.add_parser("sign", help="sign a bundle's manifest with an Ed25519 private key (manifest.sig)")
    sg.add_argument("bundle")
    sg.add_argument("--key", required=True, help="private key PEM file")
    common(sg)
    sg.set_defaults(func=cmd_sign)

    pk = sub.add_parser("package", help="one reproducible .tar.gz per bundle (a bundle or a directory of them)")
    pk.add_argument("bundle")
    pk.add_argument("-o", "--output", default=".", help="directory for the archives (default: .)")
    common(pk)
    pk.set_defaults(func=cmd_package)

    up = sub.add_parser("unpack", help="safely extract a bundle archive and check its integrity")
    up.add_argument("archive")
    up.add_argument("-o", "--output", required=True, help="destination directory (replaced atomically)")
    common(up)
    up.set_defaults(func=cmd_unpack)

    t = sub.add_parser("targets", help="list the targets: device, provider, executed here or validated only")
    common(t)
    t.set_defaults(func=cmd_targets)

    d = sub.add_parser("demo", help="make a tiny Qwen checkpoint, build it, run it, verify it")
    d.add_argument("--workdir", help="keep the demo's files here (default: a temporary directory)")
    common(d)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .malloc_tuning import reuse_freed_memory

    reuse_freed_memory()
    try:
        return args.func(args)
    except QwenEdgeError as exc:
        sys.stderr.write(f"qwen-edge: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("qwen-edge: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
