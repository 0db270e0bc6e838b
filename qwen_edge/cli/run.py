"""`qwen-edge run` (generate with a bundle, one prompt or a chat) and `qwen-edge bench`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .output import add_common, add_runtime_options, emit, native_stdout_to_stderr


def add_parsers(sub) -> None:
    r = sub.add_parser("run", help="generate text with a bundle")
    r.add_argument("bundle")
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("--prompt")
    g.add_argument("--chat", nargs="?", const="", metavar="MESSAGE",
                   help="chat with the bundle's template: one MESSAGE, or without one, a conversation on stdin")
    r.add_argument("--image", action="append", default=[], metavar="PATH",
                   help="--chat MESSAGE with a vision-language bundle: an image before the text (repeat for more, "
                        "in order)")
    r.add_argument("--max-pixels", type=int, default=None, help="--image: resize each image to at most this many pixels")
    r.add_argument("--template-vars", help='JSON object of extra chat template variables, e.g. {"enable_thinking": false}')
    r.add_argument("--max-new-tokens", type=int, default=128)
    r.add_argument("--thinking-budget", type=int, default=None, metavar="N",
                   help="--chat: close the reasoning after N reasoning tokens and let the model answer")
    r.add_argument("--greedy", action="store_true",
                   help="greedy decoding (default: the checkpoint's recommended sampling, greedy if it has none)")
    r.add_argument("--temperature", type=float, default=None, help="sample at this temperature (0 = greedy)")
    r.add_argument("--top-k", type=int, default=None)
    r.add_argument("--top-p", type=float, default=None)
    r.add_argument("--repetition-penalty", type=float, default=None)
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--speculative", default=None, metavar="ngram|draft:BUNDLE|mtp",
                   help="speculative decoding: guess tokens by prompt lookup (ngram) or with a smaller bundle of "
                        "the same tokenizer (draft:BUNDLE) and verify them several per pass; same output")
    add_runtime_options(r)
    add_common(r)
    r.set_defaults(func=cmd_run)

    be = sub.add_parser("bench", help="time to first token and decode speed of a bundle")
    be.add_argument("bundle")
    be.add_argument("--prompt-tokens", type=int, default=128)
    be.add_argument("--new-tokens", type=int, default=128)
    be.add_argument("--runs", type=int, default=5)
    be.add_argument("--warmup", type=int, default=1)
    add_runtime_options(be)
    add_common(be)
    be.set_defaults(func=cmd_bench)


def _runtime_options(args: argparse.Namespace):
    from ..runtime import RuntimeOptions

    return RuntimeOptions(intra_op_threads=args.threads, verify_integrity=args.check_integrity,
                          verify_signature=getattr(args, "public_key", None))


_SAMPLING_FLAGS = ("temperature", "top_k", "top_p", "repetition_penalty", "seed")


def _sampling(args: argparse.Namespace, gen):
    """None (the bundle's defaults) unless --greedy or a sampling flag is given; flags override the bundle's
    defaults one by one."""
    import dataclasses

    from ..runtime import SamplingParams

    given = {k: getattr(args, k) for k in _SAMPLING_FLAGS if getattr(args, k) is not None}
    if args.greedy:
        if set(given) - {"repetition_penalty", "seed"}:
            raise ConfigError("--greedy: do not combine with --temperature, --top-k or --top-p")
        return SamplingParams.greedy(repetition_penalty=given.get("repetition_penalty", 1.0))
    if not given:
        return None
    base = getattr(gen, "default_sampling", None) or SamplingParams.greedy()
    if given.get("temperature") == 0:
        given.pop("temperature")
        return dataclasses.replace(base, do_sample=False, **given)
    if "temperature" in given or "top_k" in given or "top_p" in given:
        given["do_sample"] = True
    return dataclasses.replace(base, **given)


def _template_vars(args: argparse.Namespace) -> dict:
    if not args.template_vars:
        return {}
    try:
        value = json.loads(args.template_vars)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--template-vars: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError("--template-vars: must be a JSON object")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from ..targets.catalog import load_generator

    with native_stdout_to_stderr():  # a backend's native library may print when it loads
        gen = load_generator(Path(args.bundle), _runtime_options(args))
    if args.thinking_budget is not None and args.chat is None:
        raise ConfigError("--thinking-budget: only with --chat")
    if args.image and not args.chat:
        raise ConfigError("--image: only with --chat MESSAGE (the images, then the text, in one user message)")
    if args.chat == "":
        return _interactive_chat(gen, args)
    if args.chat is not None and callable(getattr(gen, "start_chat", None)):
        return _one_chat(gen, args)
    if args.image:
        raise ConfigError("--image: this bundle's runtime has no chat layer to take images")
    if args.thinking_budget is not None:
        raise ConfigError("--thinking-budget: this bundle's runtime has no chat layer")
    if args.chat is not None:
        prompt = gen.render_chat([{"role": "user", "content": args.chat}], **_template_vars(args))
    else:
        prompt = args.prompt
    g = gen.start(prompt, max_new_tokens=args.max_new_tokens, sampling=_sampling(args, gen), **_speculative(args, gen))
    if args.json:
        with native_stdout_to_stderr():
            text = "".join(g)
        details = getattr(gen, "details", dict)()  # e.g. where a device backend placed the graphs
        emit(args, {"text": text, "token_ids": g.token_ids, "stats": _stats(g.stats), **details}, text)
    else:
        for piece in g:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        _print_stats(args, g.stats)
    return 0


def _speculative(args: argparse.Namespace, gen) -> dict:
    """The start() keyword for --speculative (checked before any generation runs)."""
    if args.speculative is None:
        return {}
    from ..runtime import Generator, Speculative

    if not isinstance(gen, Generator):
        raise ConfigError("--speculative: this bundle's runtime does not support speculative decoding")
    spec = Speculative.parse(args.speculative)
    if not gen.model.exact_speculation and not args.quiet:
        sys.stderr.write("note: this bundle was built without --exact-speculation: a token whose top two logits "
                         "nearly tie may differ from plain decoding's\n")
    return {"speculative": spec}


def _stats(stats) -> dict:
    return vars(stats) | {"decode_tokens_per_s": stats.decode_tokens_per_s}


def _print_stats(args: argparse.Namespace, s) -> None:
    if not args.quiet:
        spec = (f", {s.accepted_tokens}/{s.draft_tokens} guesses accepted in {s.verify_passes} verify passes"
                if s.verify_passes else "")
        sys.stderr.write(f"[{s.prompt_tokens} prompt tokens, {s.new_tokens} new, TTFT {s.time_to_first_token_s * 1e3:.1f} ms, "
                         f"{s.decode_tokens_per_s:.1f} tok/s, stop: {s.finish_reason}{spec}]\n")


def _stream_chat(gen, messages: list[dict], args: argparse.Namespace):
    """Run one chat turn: the answer to stdout as it comes, the reasoning to stderr (so that stdout holds
    only the answer), tool calls as JSON lines at the end. Returns the GenerationResult."""
    images = {"max_pixels": args.max_pixels} if getattr(args, "image", None) and args.max_pixels else {}
    chat = gen.start_chat(messages, template_vars=_template_vars(args) or None, thinking_budget=args.thinking_budget,
                          max_new_tokens=args.max_new_tokens, sampling=_sampling(args, gen), **images,
                          **_speculative(args, gen))
    if args.json:
        return chat.result()
    for delta in chat:
        if delta.reasoning and not args.quiet:
            sys.stderr.write(delta.reasoning)
            sys.stderr.flush()
        if delta.content:
            sys.stdout.write(delta.content)
            sys.stdout.flush()
    result = chat.result()
    for call in result.tool_calls:
        sys.stdout.write("\n" + json.dumps(call.as_openai(), ensure_ascii=False))
    sys.stdout.write("\n")
    return result


def _one_chat(gen, args: argparse.Namespace) -> int:
    content = args.chat
    if args.image:
        content = [{"type": "image", "image": path} for path in args.image] + [{"type": "text", "text": args.chat}]
    result = _stream_chat(gen, [{"role": "user", "content": content}], args)
    if args.json:
        emit(args, {"content": result.content, "reasoning": result.reasoning,
                    "tool_calls": [c.as_openai() for c in result.tool_calls], "finish_reason": result.finish_reason,
                    "text": result.text, "token_ids": result.token_ids, "stats": _stats(result.stats)}, result.content)
    else:
        _print_stats(args, result.stats)
    return 0


def _interactive_chat(gen, args: argparse.Namespace) -> int:
    """A conversation on stdin/stdout: one user turn per line, history kept, empty line or EOF ends. The
    history keeps each answer's content, and its reasoning as `reasoning_content` for templates that
    show it (Qwen3 and Qwen3.5 drop it from earlier turns themselves)."""
    messages: list[dict] = []
    chat_layer = callable(getattr(gen, "start_chat", None))
    extra = _template_vars(args)
    while True:
        if sys.stdin.isatty():
            sys.stderr.write("you> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line or not line.strip():
            return 0
        messages.append({"role": "user", "content": line.rstrip("\n")})
        if chat_layer:
            result = _stream_chat(gen, messages, args)
            turn = {"role": "assistant", "content": result.content}
            if result.reasoning:
                turn["reasoning_content"] = result.reasoning
            if result.tool_calls:
                turn["tool_calls"] = [c.as_openai() for c in result.tool_calls]
            messages.append(turn)
            continue
        g = gen.start(gen.render_chat(messages, **extra), max_new_tokens=args.max_new_tokens,
                      sampling=_sampling(args, gen), **_speculative(args, gen))
        reply = []
        for piece in g:
            reply.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(reply)})


def cmd_bench(args: argparse.Namespace) -> int:
    """Times qwen_edge.runtime on an onnxruntime bundle."""
    from ..runtime import Generator, Model
    from ..runtime.bench import benchmark

    gen = Generator(Model(args.bundle, _runtime_options(args)))
    result = benchmark(gen, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, runs=args.runs,
                       warmup=args.warmup)
    emit(args, result, (f"prompt {args.prompt_tokens} tokens, {args.new_tokens} new, median of {args.runs}: "
                        f"TTFT {result['ttft_ms_median']:.1f} ms, decode {result['decode_tokens_per_s_median']:.1f} tok/s, "
                        f"peak RSS {result['peak_rss_mb']:.0f} MB"))
    return 0
