"""The `qwen-edge` parser and entry point: each command group adds its own subparsers, and every
failure exits non-zero with one line, the exit code being the error type's `exit_code`."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import QwenEdgeError
from . import build, bundle, demo, pipeline, run, serve, targets, verify

EXIT_INTERRUPTED = 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qwen-edge", description="Qwen checkpoints to verified edge bundles")
    p.add_argument("--version", action="version", version=f"qwen-edge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    build.add_parser(sub)
    run.add_parsers(sub)
    serve.add_parser(sub)
    verify.add_parser(sub)
    bundle.add_parsers(sub)
    pipeline.add_parser(sub)  # also `cache`
    targets.add_parser(sub)
    demo.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
