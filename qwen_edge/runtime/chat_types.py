"""What a chat generation hands back: tool calls, and the pieces of a streamed answer.

These are plain frozen dataclasses, shaped after OpenAI's chat completion objects so that a server can
serialise them directly (`ToolCall.as_openai()`), and independent of how the model spelled its output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    """One function call the model made. `arguments` is a JSON object serialised as a string, as in
    OpenAI's API (parse it with json.loads)."""

    id: str
    name: str
    arguments: str

    def as_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call. The first piece of call `index` carries its `id` and `name`
    (`arguments` may be ""); later pieces carry only argument text. Joining every `arguments` of one
    index gives that call's final `ToolCall.arguments`."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True)
class ChatDelta:
    """A streamed piece of a chat answer: visible text, reasoning text, or a tool-call piece (one of them
    set, the others None)."""

    content: str | None = None
    reasoning: str | None = None
    tool_call: ToolCallDelta | None = None


__all__ = ["ChatDelta", "ToolCall", "ToolCallDelta"]
