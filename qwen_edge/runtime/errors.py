"""Exception types of the runtime. Every message is one line."""

from __future__ import annotations

from ..errors import QwenEdgeError


class GenerationError(QwenEdgeError):
    """Base class of every error the runtime raises on purpose (also: the model produced unusable logits)."""


class InvalidRequestError(GenerationError, ValueError):
    """The caller asked for something invalid: bad sampling parameters, bad max_new_tokens, an empty prompt,
    a token id out of range, malformed chat messages..."""


class ContextOverflowError(InvalidRequestError):
    """The prompt plus max_new_tokens do not fit in the model's context.

    `n_prompt_tokens` is the number of tokens the request needs before generating (the prompt, or the
    whole sequence when a running generation outgrows the cache) and `n_ctx` the context length, so
    that a server can answer with both (as llama.cpp's server does)."""

    def __init__(self, message: str, *, n_prompt_tokens: int, n_ctx: int):
        super().__init__(message)
        self.n_prompt_tokens = int(n_prompt_tokens)
        self.n_ctx = int(n_ctx)

    def __reduce__(self):  # keyword-only arguments: pickle (e.g. across processes) needs them spelled out
        return _context_overflow, (str(self), self.n_prompt_tokens, self.n_ctx)


class TemplateError(GenerationError):
    """The chat template does not compile, or failed (or refused, via raise_exception) while rendering."""


def _context_overflow(message: str, n_prompt_tokens: int, n_ctx: int) -> ContextOverflowError:
    return ContextOverflowError(message, n_prompt_tokens=n_prompt_tokens, n_ctx=n_ctx)


__all__ = ["GenerationError", "InvalidRequestError", "ContextOverflowError", "TemplateError"]
