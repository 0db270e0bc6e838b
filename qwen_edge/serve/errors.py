"""The server's exception types: each is one HTTP status and one OpenAI-shaped error body
(`{"error": {"message", "type", "param", "code"}}`), with a one-line message."""

from __future__ import annotations

from ..errors import QwenEdgeError


def one_line(text: object) -> str:
    return " ".join(str(text).split()) or "error"


class ServeError(QwenEdgeError):
    """A request the server answers with an error status (never a crash, never a stack trace)."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: object, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(one_line(message))
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}


class BadRequest(ServeError):
    """400: a malformed body, a field of the wrong type or out of range, a conversation the template refuses,
    a prompt plus max_tokens over the context."""

    status = 400
    type = "invalid_request_error"


class Unauthorized(ServeError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ServeError):
    """404: an unknown route or an unknown model."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(ServeError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(ServeError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class QueueFull(ServeError):
    """429: every generation slot is busy and the queue behind them is full; `Retry-After` says when to retry."""

    status = 429
    type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: object, *, retry_after: int):
        super().__init__(message, headers={"Retry-After": str(int(retry_after))})
        self.retry_after = int(retry_after)


class Unavailable(ServeError):
    """503: the server is shutting down."""

    status = 503
    type = "server_error"
    code = "unavailable"


def for_status(status: int, message: str) -> ServeError:
    """The error for a status the routing layer chose itself (404 unknown route, 405 wrong method, ...)."""
    kinds = {400: BadRequest, 401: Unauthorized, 404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge,
             503: Unavailable}
    return kinds.get(status, ServeError)(message)


__all__ = ["BadRequest", "MethodNotAllowed", "NotFound", "PayloadTooLarge", "QueueFull", "ServeError",
           "Unauthorized", "Unavailable", "for_status", "one_line"]
