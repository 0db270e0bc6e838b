"""`qwen-edge serve BUNDLE`: an OpenAI-compatible HTTP server (the `serve` extra).

The bundle is loaded the way `qwen-edge run` loads it (targets.catalog.load_generator), so whatever
`run` can run, `serve` serves. This module also decides where the request log goes (stderr), which
the library never does.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

from ..errors import ConfigError
from .output import add_runtime_options, native_stdout_to_stderr

SERVE_PACKAGES = ("starlette", "uvicorn", "sse_starlette")


def add_parser(sub) -> None:
    s = sub.add_parser("serve", help="serve a bundle over an OpenAI-compatible HTTP API (pip install 'qwen-edge[serve]')")
    s.add_argument("bundle")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/ requests")
    s.add_argument("--parallel", type=int, default=1, help="generations at once (default: 1)")
    s.add_argument("--queue", type=int, default=16,
                   help="requests that may wait for a slot; beyond that the answer is 429 (default: 16)")
    s.add_argument("--model-id", help="the model name clients use (default: the bundle directory's name)")
    s.add_argument("--quiet", "-q", action="store_true", help="no request log on stderr")
    add_runtime_options(s)
    s.set_defaults(func=cmd_serve)


def _check_extra() -> None:
    missing = [name for name in SERVE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"serve: {', '.join(missing)} not installed; install the extra: pip install 'qwen-edge[serve]'")


def _log_to_stderr(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    for name in ("qwen_edge.serve", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.WARNING if quiet else logging.INFO)
        logger.propagate = False


def cmd_serve(args: argparse.Namespace) -> int:
    _check_extra()
    from ..runtime import RuntimeOptions
    from ..serve import Engine, ServeOptions
    from ..serve.server import serve
    from ..targets.catalog import load_generator

    bundle = Path(args.bundle)
    model_id = args.model_id or bundle.resolve().name
    options = ServeOptions(host=args.host, port=args.port, api_key=args.api_key, parallel=args.parallel,
                           queue=args.queue, model_id=model_id)
    runtime = RuntimeOptions(intra_op_threads=args.threads, verify_integrity=args.check_integrity,
                             verify_signature=args.public_key, max_cached_sequences=max(2, args.parallel))
    with native_stdout_to_stderr():  # a backend's native library may print when it loads
        generator = load_generator(bundle, runtime)
    _log_to_stderr(args.quiet)
    serve(Engine(generator, model_id), options)
    return 0
