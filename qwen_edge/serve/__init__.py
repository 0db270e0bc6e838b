"""An OpenAI-compatible HTTP server for a bundle (`qwen-edge serve`, the `serve` extra).

    protocol    request bodies -> typed, checked requests (BadRequest names the field)
    adapter     the one door to the runtime: Engine opens chat / completion generations
    stream      a generation as events, with the `stop` strings applied
    scheduler   N generations at once in worker threads, a bounded queue, cancellation
    responses   OpenAI response objects and stream chunks
    app         the starlette application: routes, bodies, SSE, errors
    middleware  the request log line and the API key check
    server      uvicorn, in the foreground or on a background thread
    options     ServeOptions; errors: ServeError and its HTTP statuses

May import qwen_edge.runtime and qwen_edge.errors only (nothing from the build side). starlette,
uvicorn and sse-starlette are imported by `app` and `server` alone, so importing this package costs
nothing until a server is made.
"""

from .adapter import Engine
from .errors import ServeError
from .options import ServeOptions


def create_app(engine: Engine, options: ServeOptions = ServeOptions()):
    """The ASGI application (imports starlette)."""
    from .app import create_app as _create_app

    return _create_app(engine, options)


__all__ = ["Engine", "ServeError", "ServeOptions", "create_app"]
