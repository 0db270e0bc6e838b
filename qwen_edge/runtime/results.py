"""What a generation hands back: its statistics and its result."""

from __future__ import annotations

from dataclasses import dataclass, field

from .chat_types import ToolCall


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    time_to_first_token_s: float = 0.0
    decode_s: float = 0.0
    finish_reason: str = ""  # "eos", "length", or "cancelled" (closed before the end)
    # speculative decoding: verify passes (passes that checked guesses), guessed and accepted tokens
    verify_passes: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        steps = self.new_tokens - 1
        return steps / self.decode_s if steps > 0 and self.decode_s > 0 else 0.0


FINISH_REASONS = ("stop", "length", "tool_calls")


@dataclass
class GenerationResult:
    """A finished generation. `text` is everything generated (for chat: reasoning, tags and tool calls
    included, as the model wrote it); `content`, `reasoning` and `tool_calls` are the parsed parts of a chat
    answer. For a plain completion `content` is `text`, `reasoning` None and `tool_calls` empty.
    `finish_reason` is OpenAI's: "stop" (a stop token, or closed early: `stats.finish_reason` then says
    "cancelled"), "length" (max_new_tokens reached) or "tool_calls" (stopped after calling tools)."""

    text: str
    token_ids: list[int]
    stats: GenerationStats = field(default_factory=GenerationStats)
    content: str = None  # type: ignore[assignment]  # None when made: becomes `text`
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = ""  # "" when made: derived from stats.finish_reason and tool_calls

    def __post_init__(self) -> None:
        if self.content is None:
            self.content = self.text
        if not self.finish_reason:
            self.finish_reason = finish_reason(self.stats.finish_reason, bool(self.tool_calls))


def finish_reason(stats_reason: str, has_tool_calls: bool) -> str:
    """OpenAI's finish_reason from the runtime's ("eos", "length", "cancelled")."""
    if stats_reason == "length":
        return "length"
    return "tool_calls" if has_tool_calls and stats_reason == "eos" else "stop"


__all__ = ["FINISH_REASONS", "GenerationResult", "GenerationStats", "finish_reason"]
