"""OpenAI response objects, built from a generation's events: whole responses and streamed chunks.

Chat streams follow the rules clients check: the first chunk carries `role: assistant`, every chunk has
the same id, the last choice chunk carries `finish_reason`, and with `stream_options.include_usage` a
chunk with empty `choices` and the usage follows (every other chunk then has `usage: null`).
Reasoning goes out under both names in use, `reasoning_content` (llama.cpp, SGLang) and `reasoning`
(vLLM, Ollama).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from .adapter import Piece, ToolCallPiece
from .stream import Finished


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def usage(finished: Finished) -> dict[str, int]:
    return {"prompt_tokens": finished.prompt_tokens, "completion_tokens": finished.completion_tokens,
            "total_tokens": finished.prompt_tokens + finished.completion_tokens}


def _tool_call_delta(call: ToolCallPiece, call_id: str | None) -> dict[str, Any]:
    if call.name is not None:  # the first piece of a call
        return {"index": call.index, "id": call_id, "type": "function",
                "function": {"name": call.name, "arguments": call.arguments}}
    return {"index": call.index, "function": {"arguments": call.arguments}}


class ChatAssembler:
    """Collects a chat generation's pieces into a message and makes the stream's chunks."""

    def __init__(self, model: str, *, include_usage: bool = False):
        self.id = new_id("chatcmpl")
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}

    def _chunk(self, choices: list[dict], **extra: Any) -> dict[str, Any]:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "system_fingerprint": None, "choices": choices}
        if self.include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return chunk

    def _choice(self, delta: dict, finish_reason: str | None = None) -> list[dict]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

    def first_chunk(self) -> dict[str, Any]:
        return self._chunk(self._choice({"role": "assistant", "content": ""}))

    def add(self, piece: Piece) -> dict[str, Any] | None:
        """Record a piece; return its chunk (None when it adds nothing)."""
        delta: dict[str, Any] = {}
        if piece.reasoning:
            self.reasoning.append(piece.reasoning)
            delta["reasoning_content"] = delta["reasoning"] = piece.reasoning
        if piece.content:
            self.content.append(piece.content)
            delta["content"] = piece.content
        if piece.tool_call is not None:
            delta["tool_calls"] = [self._add_call(piece.tool_call)]
        return self._chunk(self._choice(delta)) if delta else None

    def _add_call(self, call: ToolCallPiece) -> dict[str, Any]:
        entry = self.calls.get(call.index)
        if entry is None or call.name is not None:
            entry = {"id": call.id or new_id("call"), "type": "function",
                     "function": {"name": call.name or "", "arguments": ""}}
            self.calls[call.index] = entry
            call = ToolCallPiece(call.index, entry["id"], call.name or "", call.arguments)
        entry["function"]["arguments"] += call.arguments
        return _tool_call_delta(call, entry["id"])

    def finish_reason(self, finished: Finished) -> str:
        if self.calls and finished.finish_reason == "stop":
            return "tool_calls"
        return finished.finish_reason

    def last_chunks(self, finished: Finished) -> list[dict[str, Any]]:
        chunks = [self._chunk(self._choice({}, self.finish_reason(finished)))]
        if self.include_usage:
            chunks.append(self._chunk([], usage=usage(finished)))
        return chunks

    def message(self) -> dict[str, Any]:
        content = "".join(self.content)
        message: dict[str, Any] = {"role": "assistant", "content": content if content or not self.calls else None}
        if self.reasoning:
            message["reasoning_content"] = message["reasoning"] = "".join(self.reasoning)
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        return message

    def response(self, finished: Finished) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "message": self.message(), "logprobs": None,
                             "finish_reason": self.finish_reason(finished)}],
                "usage": usage(finished)}


class CompletionAssembler:
    """The same for /v1/completions (text in, text out)."""

    def __init__(self, model: str, *, include_usage: bool = False):
        self.id = new_id("cmpl")
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.text: list[str] = []

    def _chunk(self, text: str, finish_reason: str | None, **extra: Any) -> dict[str, Any]:
        chunk = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                 "system_fingerprint": None,
                 "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]}
        if self.include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return chunk

    def first_chunk(self) -> None:
        return None

    def add(self, piece: Piece) -> dict[str, Any] | None:
        if not piece.content:
            return None
        self.text.append(piece.content)
        return self._chunk(piece.content, None)

    def last_chunks(self, finished: Finished) -> list[dict[str, Any]]:
        chunks = [self._chunk("", finished.finish_reason)]
        if self.include_usage:
            last = self._chunk("", None, usage=usage(finished))
            last["choices"] = []
            chunks.append(last)
        return chunks

    def response(self, finished: Finished) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "text": "".join(self.text), "logprobs": None,
                             "finish_reason": finished.finish_reason}],
                "usage": usage(finished)}


def models_list(model: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(model, created)]}


def model_card(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "qwen-edge"}


__all__ = ["ChatAssembler", "CompletionAssembler", "model_card", "models_list", "new_id", "usage"]
