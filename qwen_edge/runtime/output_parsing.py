"""Splitting a chat answer, as it streams, into reasoning, visible content and tool calls.

(Skeleton: everything is content for now.)
"""

from __future__ import annotations

from typing import Callable

from .chat_types import ChatDelta, ToolCall


class OutputParser:
    """Feed text pieces in order with push(), then finish(); each returns the ChatDeltas it completes."""

    def __init__(self, *, reasoning: bool = False, starts_in_reasoning: bool = False, tools: list[dict] | None = None,
                 new_id: Callable[[], str] | None = None):
        self.content = ""
        self.reasoning: str | None = None
        self.tool_calls: list[ToolCall] = []
        self.finished = False

    @property
    def in_reasoning(self) -> bool:
        return False

    def push(self, text: str) -> list[ChatDelta]:
        if not text:
            return []
        self.content += text
        return [ChatDelta(content=text)]

    def finish(self) -> list[ChatDelta]:
        self.finished = True
        return []


__all__ = ["OutputParser"]
