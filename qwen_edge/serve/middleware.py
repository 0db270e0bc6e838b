"""ASGI middleware: one log line per request, and the API key check.

The log line has the method, path, status, token counts and milliseconds; never the prompt or the
reply. The library only logs (logger `qwen_edge.serve`); `qwen-edge serve` decides where lines go.
"""

from __future__ import annotations

import hmac
import json
import logging
import time

from .errors import Unauthorized

LOG = logging.getLogger("qwen_edge.serve")
USAGE_KEY = "qwen_edge.usage"  # where a handler leaves (prompt_tokens, completion_tokens) in the scope


class RequestLog:
    def __init__(self, app, logger: logging.Logger = LOG):
        self.app = app
        self.logger = logger

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 0

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except BaseException:
            status = status or 500  # the outermost error middleware answers it
            raise
        finally:
            usage = scope.get(USAGE_KEY)
            tokens = f"tokens={usage[0]}+{usage[1]}" if usage else "tokens=-"
            self.logger.info("%s %s %s %s %.1fms", scope.get("method", "?"), scope.get("path", "?"), status or "-",
                             tokens, (time.perf_counter() - start) * 1e3)


class ApiKey:
    """Requests under /v1/ need `Authorization: Bearer <key>`; /health stays open (for probes)."""

    def __init__(self, app, key: str | None):
        self.app = app
        self.key = key.encode() if key else None

    async def __call__(self, scope, receive, send):
        if self.key is None or scope["type"] != "http" or not scope.get("path", "").startswith("/v1/"):
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or ()).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.key):
            return await self.app(scope, receive, send)
        error = Unauthorized("missing or wrong API key (send 'Authorization: Bearer <key>')")
        body = json.dumps(error.body()).encode()
        await send({"type": "http.response.start", "status": error.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})


__all__ = ["ApiKey", "LOG", "RequestLog", "USAGE_KEY"]
