"""The ASGI application: routes, request bodies, responses (JSON or server-sent events), errors.

    POST /v1/chat/completions   chat, streamed or not
    POST /v1/completions        text completion, streamed or not
    GET  /v1/models             the one model served (and /v1/models/{id})
    GET  /health                liveness and slot occupancy

Every error is OpenAI-shaped JSON with a one-line message; unknown routes are 404 and wrong methods
405 in the same shape. A client that goes away while its request waits or runs gets its generation
cancelled (the slot is freed after the current decode step).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from functools import partial
from typing import Any, AsyncIterator, Awaitable

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .adapter import Engine
from .errors import BadRequest, NotFound, PayloadTooLarge, ServeError, for_status, one_line
from .middleware import LOG, USAGE_KEY, ApiKey, RequestLog
from .options import ServeOptions
from .protocol import parse_chat, parse_completion, parse_json
from .responses import ChatAssembler, CompletionAssembler, model_card, models_list
from .scheduler import Job, Scheduler
from .stream import Finished, events

SSE_PING_S = 15


class ClientGone(Exception):
    """The client disconnected before its response started."""


async def read_json(request: Request, limit: int) -> dict:
    """The body as a JSON object; 413 past `limit` bytes (by Content-Length, or while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_size = int(declared)
        except ValueError:
            raise BadRequest("the Content-Length header is not a number") from None
        if declared_size > limit:
            raise PayloadTooLarge(f"the request body has {declared_size} bytes, more than the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return parse_json(b"".join(chunks))


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_gone(request: Request, awaitable: Awaitable[Any]) -> Any:
    """Await `awaitable`, unless the client disconnects first (then cancel it and raise ClientGone)."""
    task = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientGone()
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


def _data(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


async def _collect(job: Job, assembler) -> Finished:
    async for event in job:
        if isinstance(event, Finished):
            return event
        assembler.add(event)
    raise ServeError("the generation ended without a result")


async def _sse(job: Job, assembler, scope: dict) -> AsyncIterator[str]:
    try:
        first = assembler.first_chunk()
        if first is not None:
            yield _data(first)
        async for event in job:
            if isinstance(event, Finished):
                scope[USAGE_KEY] = (event.prompt_tokens, event.completion_tokens)
                for chunk in assembler.last_chunks(event):
                    yield _data(chunk)
            else:
                chunk = assembler.add(event)
                if chunk is not None:
                    yield _data(chunk)
    except ServeError as exc:  # after the 200 went out: the error travels as an event
        yield _data(exc.body())
    finally:
        job.cancel()  # a client that went away: the worker stops after its current step
    yield "[DONE]"


def create_app(engine: Engine, options: ServeOptions = ServeOptions()) -> Starlette:
    scheduler = Scheduler(options.parallel, options.queue)
    created = int(time.time())

    def check_model(name: str | None) -> None:
        if name is not None and name != engine.model_id:
            raise NotFound(f"model {name!r} is not served here (this server serves {engine.model_id!r})",
                           param="model", code="model_not_found")

    async def generate(request: Request, open_stream, req, assembler) -> Response:
        work = partial(events, open_stream, req.sampling.stop)
        job = await unless_gone(request, scheduler.submit(work))
        try:
            await unless_gone(request, job.next())  # Opened: the prompt fits and the template rendered
            if not req.stream:
                finished = await unless_gone(request, _collect(job, assembler))
                request.scope[USAGE_KEY] = (finished.prompt_tokens, finished.completion_tokens)
                return JSONResponse(assembler.response(finished))
        except BaseException:
            job.cancel()
            raise
        async def on_close(_message) -> None:
            job.cancel()

        # The stream's own finally cancels the job; these also cover a client gone before it started.
        return EventSourceResponse(_sse(job, assembler, request.scope), ping=SSE_PING_S, sep="\n",
                                   client_close_handler_callable=on_close, background=BackgroundTask(job.cancel))

    async def chat_completions(request: Request) -> Response:
        req = parse_chat(await read_json(request, options.max_body_bytes))
        check_model(req.model)
        assembler = ChatAssembler(engine.model_id, include_usage=req.include_usage)
        return await generate(request, partial(engine.open_chat, req), req, assembler)

    async def completions(request: Request) -> Response:
        req = parse_completion(await read_json(request, options.max_body_bytes))
        check_model(req.model)
        assembler = CompletionAssembler(engine.model_id, include_usage=req.include_usage)
        return await generate(request, partial(engine.open_completion, req), req, assembler)

    async def models(request: Request) -> Response:
        return JSONResponse(models_list(engine.model_id, created))

    async def model(request: Request) -> Response:
        name = request.path_params["name"]
        check_model(name)
        return JSONResponse(model_card(name, created))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": engine.model_id,
                             "slots": {"parallel": scheduler.parallel, "running": scheduler.running,
                                       "queue": scheduler.queue_size, "waiting": scheduler.waiting}})

    async def serve_error(request: Request, exc: ServeError) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            error = for_status(404, f"no route {request.method} {request.url.path}")
        elif exc.status_code == 405:
            error = for_status(405, f"method {request.method} is not allowed on {request.url.path}")
        else:
            error = for_status(exc.status_code, one_line(exc.detail))
        return JSONResponse(error.body(), status_code=error.status, headers=dict(exc.headers or {}))

    async def client_gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nobody reads it; the log line records the disconnect

    async def unexpected(request: Request, exc: Exception) -> Response:
        LOG.error("unexpected error on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__,
                  one_line(exc))
        error = ServeError(f"internal error: {type(exc).__name__}")
        return JSONResponse(error.body(), status_code=500)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        scheduler.close()

    app = Starlette(
        routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"]),
                Route("/v1/completions", completions, methods=["POST"]),
                Route("/v1/models", models, methods=["GET"]),
                Route("/v1/models/{name:path}", model, methods=["GET"]),
                Route("/health", health, methods=["GET"])],
        middleware=[Middleware(RequestLog), Middleware(ApiKey, key=options.api_key)],
        exception_handlers={ServeError: serve_error, HTTPException: http_error, ClientGone: client_gone,
                            Exception: unexpected},
        lifespan=lifespan,
    )
    app.state.scheduler = scheduler
    app.state.engine = engine
    return app


__all__ = ["ClientGone", "create_app", "read_json", "unless_gone"]
