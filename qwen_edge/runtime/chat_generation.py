"""A chat generation: the model's text split into reasoning, content and tool calls as it streams, with an
optional thinking budget."""

from __future__ import annotations

import threading
from typing import Iterator

from .chat_types import ChatDelta
from .errors import InvalidRequestError
from .output_parsing import OutputParser
from .results import GenerationResult
from .streaming import TextStreamer

THINK_END = "</think>"
# Qwen's thinking-budget recipe (Qwen3 technical report, section 4.3; Qwen3's docs "thinking budget"):
# when the budget is spent, append this sentence and close the reasoning, then let the model answer.
# The report prints "</think>.\n\n"; the period would become the first character of the answer, so the
# implementations that follow the recipe (and this one) close with "</think>\n\n".
DEFAULT_BUDGET_MESSAGE = ("\n\nConsidering the limited time by the user, I have to give the solution based on the "
                          "thinking directly now.\n</think>\n\n")


THINK_START = "<think>"
# Names ChatTemplate.render sets itself: a template variable may not replace them.
_RESERVED_VARS = ("messages", "tools", "add_generation_prompt")


def check_template_vars(template_vars) -> dict:
    """template_vars as keyword arguments for ChatTemplate.render (a dict with string keys)."""
    if template_vars is None:
        return {}
    if not isinstance(template_vars, dict):
        raise InvalidRequestError(f"template_vars must be a dict, got {type(template_vars).__name__}")
    for key in template_vars:
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidRequestError(f"template_vars: key {key!r} is not a valid variable name")
        if key in _RESERVED_VARS:
            raise InvalidRequestError(f"template_vars: {key!r} is set by the runtime, pass it as its own argument")
    return dict(template_vars)


def reasoning_mode(prompt: str, template_source: str | None) -> tuple[bool, bool]:
    """(whether the answer may hold reasoning, whether the prompt already opened it).

    Templates that know reasoning mention </think>; Qwen3 with enable_thinking and Qwen3.5 end the
    generation prompt with "<think>\n", so the answer starts inside the reasoning."""
    opened = prompt.rstrip().endswith(THINK_START)
    return opened or THINK_END in (template_source or ""), opened


class ChatGeneration:
    """One chat answer: an iterator of ChatDelta, consumed once by one thread (made by
    Generator.start_chat, over a Generation of the rendered prompt).

    `prompt_tokens` is known before iterating. `result()` finishes the generation (if it is not done) and
    returns the parsed GenerationResult; `close()` stops it early and frees its KV cache (see
    Generation.close).
    """

    def __init__(self, generation, parser: OutputParser, tokenizer, *, thinking_budget: int | None = None,
                 budget_ids: list[int] | None = None):
        if thinking_budget is not None:
            if not isinstance(thinking_budget, int) or isinstance(thinking_budget, bool) or thinking_budget < 0:
                raise InvalidRequestError(f"thinking_budget must be an integer >= 0, got {thinking_budget!r}")
        self._gen = generation
        self._parser = parser
        self._streamer = TextStreamer(tokenizer, skip_special_tokens=True)
        self._budget = thinking_budget
        self._budget_ids = list(budget_ids or ())
        self.prompt_tokens = len(generation.prompt_ids)
        self.reasoning_tokens = 0  # tokens generated inside the reasoning (the budget counts these)
        self._budget_spent = False
        self._iterator: Iterator[ChatDelta] | None = None
        self._claim = threading.Lock()
        self._result: GenerationResult | None = None

    @classmethod
    def for_prompt(cls, generation, prompt: str, model, *, tools: list[dict] | None, thinking_budget: int | None,
                   budget_message: str) -> "ChatGeneration":
        """The ChatGeneration of `generation`, a Generation of the rendered chat `prompt`."""
        reasoning, opened = reasoning_mode(prompt, model.chat_template_source)
        budget_ids = None
        if thinking_budget is not None:
            if not isinstance(budget_message, str) or THINK_END not in budget_message:
                raise InvalidRequestError(f"thinking_budget_message must be a string containing {THINK_END!r}")
            budget_ids = [int(i) for i in model.encode(budget_message)]
        parser = OutputParser(reasoning=reasoning, starts_in_reasoning=opened, tools=tools or None)
        return cls(generation, parser, model.tokenizer, thinking_budget=thinking_budget, budget_ids=budget_ids)

    @property
    def token_ids(self) -> list[int]:
        return self._gen.token_ids

    @property
    def stats(self):
        return self._gen.stats

    def __iter__(self) -> Iterator[ChatDelta]:
        with self._claim:
            if self._iterator is not None and not self._gen.closed:
                raise InvalidRequestError("this ChatGeneration has already been iterated (each one runs once, in one "
                                          "thread); call Generator.start_chat again for another")
            if self._iterator is None:
                self._iterator = self._deltas()
        return self._iterator

    def _deltas(self) -> Iterator[ChatDelta]:
        parser, streamer = self._parser, self._streamer
        self._spend_budget()  # a budget of 0 closes reasoning the prompt opened before the first token
        for token in self._gen.tokens():
            if parser.in_reasoning and not self._budget_spent:  # the model's own, not the budget message
                self.reasoning_tokens += 1
            piece = streamer.push(token)
            if piece:
                yield from parser.push(piece)
            self._spend_budget()
        if self._gen.closed:
            return
        yield from parser.push(streamer.flush())
        yield from parser.finish()

    def _spend_budget(self) -> None:
        """Once the reasoning has used the budget, make the next tokens the budget message (once)."""
        if (self._budget is not None and not self._budget_spent and self._parser.in_reasoning
                and self.reasoning_tokens >= self._budget):
            self._budget_spent = True
            self._gen.force(self._budget_ids)

    def close(self) -> None:
        """Stop generating now; result() then holds what was generated so far."""
        self._gen.close()
        with self._claim:
            if self._iterator is None:
                self._iterator = iter(())

    def result(self) -> GenerationResult:
        """The whole answer, parsed (runs the generation to its end first if it is not finished)."""
        if self._result is None:
            for _ in (self if self._iterator is None else self._iterator):
                pass
            if not self._parser.finished:  # closed early: keep what was held back, as text
                self._parser.push(self._streamer.flush())
                self._parser.finish()
            text = self._gen.model.decode(self._gen.token_ids)
            self._result = GenerationResult(
                text=text, token_ids=list(self._gen.token_ids), stats=self._gen.stats, content=self._parser.content,
                reasoning=self._parser.reasoning, tool_calls=list(self._parser.tool_calls))
        return self._result


__all__ = ["ChatGeneration", "DEFAULT_BUDGET_MESSAGE", "check_template_vars", "reasoning_mode"]
