"""The one door between the server and the runtime: every call into a generator is made here.

The server serves whatever `qwen-edge run` loads (`targets.catalog.load_generator`): the runtime's
`Generator`, or a backend's generator that offers only part of its interface (the QNN one has
`start(prompt, max_new_tokens, sampling)` and no chat). So this module asks for what it needs by
name and falls back where a generator lacks it:

* chat: `start_chat(messages, tools=, template_vars=, thinking_budget=, max_new_tokens=, sampling=)`
  yielding deltas with `content` / `reasoning` / `tool_call`; else `render_chat` + `start`, all text
  as content (no reasoning split, no tool calls, no thinking budget: asked for, that is a 400);
* the bundle's sampling defaults: `default_sampling`, else `SamplingParams()`;
* a context overflow's numbers: the error's `n_prompt_tokens` / `n_ctx`;
* counts and the finish reason: `stats`, `token_ids`, `result()`, whichever the generation has;
* `close()` where the generation has one (it frees the KV cache at once).

A difference between the runtime and this contract is a fix in this file only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..errors import QwenEdgeError
from ..runtime import ContextOverflowError, InvalidRequestError, SamplingParams, TemplateError
from .errors import BadRequest, ServeError
from .protocol import ChatRequest, CompletionRequest, Sampling

# The length of a generation when the request names none and the context length is unknown.
FALLBACK_MAX_TOKENS = 256
_FINISH = {"eos": "stop", "stop": "stop", "length": "length", "tool_calls": "tool_calls"}


@dataclass(frozen=True)
class ToolCallPiece:
    """A piece of one tool call: the first of a call has its id and name, later ones argument text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Piece:
    """What one step of a generation adds: answer text, reasoning text or a piece of a tool call."""

    content: str = ""
    reasoning: str = ""
    tool_call: ToolCallPiece | None = None


class Stream:
    """One opened generation: iterate it for Pieces; `close()` ends it (safe to call more than once)."""

    def __init__(self, handle: Any, chat: bool):
        self._handle = handle
        self._chat = chat
        self.prompt_tokens = _prompt_tokens(handle)
        self._closed = False
        self._exhausted = False

    def __iter__(self) -> Iterator[Piece]:
        try:
            for item in self._handle:
                piece = _piece(item) if self._chat else Piece(content=item or "")
                if piece.content or piece.reasoning or piece.tool_call is not None:
                    yield piece
        except (InvalidRequestError, TemplateError) as exc:
            raise BadRequest(exc) from None
        self._exhausted = True

    def finish_reason(self) -> str:
        """stop | length | tool_calls, once the iteration has ended."""
        reason = getattr(_result(self._handle), "finish_reason", None) if self._exhausted else None
        if not reason:
            stats = getattr(self._handle, "stats", None) or result_stats(self._handle)
            reason = getattr(stats, "finish_reason", None)
        return _FINISH.get(reason or "", "stop")

    def completion_tokens(self) -> int:
        ids = getattr(self._handle, "token_ids", None)
        if ids is not None:
            return len(ids)
        stats = getattr(self._handle, "stats", None) or result_stats(self._handle)
        return int(getattr(stats, "new_tokens", 0) or 0)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._handle, "close", None)
        if callable(close):
            close()


def result_stats(handle: Any) -> Any:
    result = _result(handle)
    return getattr(result, "stats", None) if result is not None else None


def _result(handle: Any) -> Any:
    result = getattr(handle, "result", None)
    if not callable(result):
        return None
    try:
        return result()
    except Exception:  # not finished, or closed early: the caller falls back to the running counts
        return None


def _prompt_tokens(handle: Any) -> int:
    value = getattr(handle, "prompt_tokens", None)
    if value is None:
        value = getattr(getattr(handle, "stats", None), "prompt_tokens", None)
    if value is None:
        ids = getattr(handle, "prompt_ids", None)
        value = len(ids) if ids is not None else 0
    return int(value)


def _piece(delta: Any) -> Piece:
    if isinstance(delta, str):
        return Piece(content=delta)
    call = getattr(delta, "tool_call", None)
    tool = None
    if call is not None:
        tool = ToolCallPiece(int(getattr(call, "index", 0) or 0), getattr(call, "id", None), getattr(call, "name", None),
                             getattr(call, "arguments", None) or "")
    return Piece(getattr(delta, "content", None) or "", getattr(delta, "reasoning", None) or "", tool)


def _overflow(exc: ContextOverflowError, max_tokens: int, param: str) -> BadRequest:
    return context_error(exc.n_prompt_tokens, max_tokens, exc.n_ctx, param)


def context_error(n_prompt: int | None, max_tokens: int, n_ctx: int | None, param: str) -> BadRequest:
    return BadRequest(f"the prompt ({n_prompt} tokens) plus max_tokens ({max_tokens}) exceed the context "
                      f"(n_prompt_tokens={n_prompt}, n_ctx={n_ctx}); shorten the prompt or lower max_tokens",
                      param=param, code="context_length_exceeded")


class Engine:
    """A loaded generator and what the server needs from it."""

    def __init__(self, generator: Any, model_id: str):
        self.generator = generator
        self.model_id = model_id
        self.n_ctx = _context_length(generator)
        defaults = getattr(generator, "default_sampling", None)
        self.default_sampling: SamplingParams = defaults if isinstance(defaults, SamplingParams) else SamplingParams()
        self.has_chat = callable(getattr(generator, "start_chat", None))

    # sampling -----------------------------------------------------------------------------------
    def sampling(self, request: Sampling) -> SamplingParams:
        """The bundle's defaults with the request's fields on top (temperature 0 = greedy)."""
        changes: dict[str, Any] = {}
        if request.temperature is not None:
            if request.temperature == 0:
                changes["do_sample"] = False
            else:
                changes.update(do_sample=True, temperature=request.temperature)
        for name in ("top_p", "top_k", "repetition_penalty", "seed"):
            value = getattr(request, name)
            if value is not None:
                changes[name] = value
        try:
            return dataclasses.replace(self.default_sampling, **changes)
        except InvalidRequestError as exc:
            raise BadRequest(exc) from None

    # opening generations -------------------------------------------------------------------------
    def open_chat(self, request: ChatRequest) -> Stream:
        sampling = self.sampling(request.sampling)
        gen = self.generator
        if self.has_chat:
            def start(n: int):
                return gen.start_chat(request.messages, tools=request.tools, template_vars=request.template_vars or None,
                                      thinking_budget=request.thinking_budget, max_new_tokens=n, sampling=sampling)
        else:
            if request.thinking_budget is not None:
                raise BadRequest("'thinking_budget' is not supported by this bundle's runtime", param="thinking_budget")
            extra = dict(request.template_vars)
            if request.tools:
                extra["tools"] = request.tools
            prompt = self._call(lambda: gen.render_chat(request.messages, **extra), "messages")

            def start(n: int):
                return gen.start(prompt, max_new_tokens=n, sampling=sampling)
        return Stream(self._open(start, request.sampling.max_tokens, "messages"), chat=True)

    def open_completion(self, request: CompletionRequest) -> Stream:
        sampling = self.sampling(request.sampling)
        gen = self.generator

        def start(n: int):
            return gen.start(request.prompt, max_new_tokens=n, sampling=sampling)
        return Stream(self._open(start, request.sampling.max_tokens, "prompt"), chat=False)

    def _open(self, start: Callable[[int], Any], max_tokens: int | None, param: str) -> Any:
        """Start with `max_tokens` new tokens; with none, as many as the context leaves. A prompt plus
        max_tokens over the context is a 400 with both numbers, never a silent cut."""
        if max_tokens is not None and (self.n_ctx is None or max_tokens < self.n_ctx):
            return self._call(lambda: start(max_tokens), param, max_tokens)
        probe = self._call(lambda: start(1), param, max_tokens or 1)  # counts the prompt; runs nothing
        n_prompt = _prompt_tokens(probe)
        Stream(probe, chat=False).close()
        if self.n_ctx is None:
            wanted = max_tokens or FALLBACK_MAX_TOKENS
        else:
            wanted = max_tokens or self.n_ctx - n_prompt
            if wanted <= 0 or n_prompt + wanted > self.n_ctx:
                raise context_error(n_prompt, wanted if max_tokens else 1, self.n_ctx, param)
        return self._call(lambda: start(wanted), param, wanted)

    def _call(self, fn: Callable[[], Any], param: str, max_tokens: int = 0) -> Any:
        try:
            return fn()
        except ContextOverflowError as exc:
            raise _overflow(exc, max_tokens, param) from None
        except (InvalidRequestError, TemplateError) as exc:
            raise BadRequest(exc, param=param) from None
        except ServeError:
            raise
        except QwenEdgeError as exc:  # e.g. a backend that cannot chat or sample: the request asks too much
            raise BadRequest(exc, param=param) from None


def _context_length(generator: Any) -> int | None:
    for owner in (generator, getattr(generator, "model", None)):
        value = getattr(owner, "context_length", None) if owner is not None else None
        if isinstance(value, int) and value > 0:
            return value
    runner = getattr(getattr(generator, "qb", None), "runner", None)  # the QNN generator's static context
    value = getattr(getattr(runner, "geo", None), "context", None)
    return value if isinstance(value, int) and value > 0 else None


__all__ = ["Engine", "Piece", "Stream", "ToolCallPiece", "context_error"]
