"""Exception types of the runtime. Every message is one line."""

from __future__ import annotations

from ..errors import QwenEdgeError


class GenerationError(QwenEdgeError):
    """Base class of every error the runtime raises on purpose (also: the model produced unusable logits)."""


class InvalidRequestError(GenerationError, ValueError):
    """The caller asked for something invalid: bad sampling parameters, bad max_new_tokens, an empty prompt,
    a token id out of range, malformed chat messages..."""


class ContextOverflowError(InvalidRequestError):
    """The prompt plus max_new_tokens do not fit in the model's context."""


class TemplateError(GenerationError):
    """The chat template does not compile, or failed (or refused, via raise_exception) while rendering."""


__all__ = ["GenerationError", "InvalidRequestError", "ContextOverflowError", "TemplateError"]
