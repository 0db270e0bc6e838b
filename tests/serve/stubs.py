"""A generator with the runtime's app-facing interface and no model: scripted deltas, adjustable speed.

It lets the server's tests drive what no random tiny model produces on demand (tool calls, reasoning,
a generation that runs until it is closed) and check what the server passes to the runtime.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

from qwen_edge.runtime import ContextOverflowError, SamplingParams


@dataclass
class Delta:  # the runtime's ChatDelta, by attribute names
    content: str | None = None
    reasoning: str | None = None
    tool_call: object = None


@dataclass
class CallDelta:  # the runtime's ToolCallDelta
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


def overflow(n_prompt: int, max_new: int, n_ctx: int) -> ContextOverflowError:
    return ContextOverflowError(f"prompt of {n_prompt} tokens plus max_new_tokens {max_new} exceeds the context "
                                f"{n_ctx}", n_prompt_tokens=n_prompt, n_ctx=n_ctx)


class StubGeneration:
    def __init__(self, owner: "StubGenerator", script: list, max_new_tokens: int, prompt_tokens: int):
        self.owner, self.script, self.max_new_tokens = owner, script, max_new_tokens
        self.prompt_tokens = prompt_tokens
        self.token_ids: list[int] = []
        self.closed_at: float | None = None
        self.finish = ""

    def __iter__(self):
        self.owner.running += 1
        try:
            i = 0
            while self.closed_at is None:
                if self.owner.endless:
                    item = self.script[i % len(self.script)]
                elif i < len(self.script):
                    item = self.script[i]
                else:
                    self.finish = self.owner.finish
                    return
                if len(self.token_ids) >= self.max_new_tokens:
                    self.finish = "length"
                    return
                self.owner.gate.wait()
                time.sleep(self.owner.step_s)
                self.token_ids.append(i)
                i += 1
                yield item
        finally:
            self.owner.running -= 1

    def result(self):
        return SimpleNamespace(finish_reason=self.finish, stats=SimpleNamespace(new_tokens=len(self.token_ids)))

    def close(self):
        if self.closed_at is None:
            self.closed_at = time.monotonic()
            self.owner.closed.append(self)


@dataclass
class StubGenerator:
    script: list = field(default_factory=lambda: [Delta(content="Hello"), Delta(content=" world")])
    text_script: list = field(default_factory=lambda: ["x = ", "1"])
    finish: str = "stop"
    context_length: int = 64
    prompt_tokens: int = 10
    step_s: float = 0.0
    endless: bool = False
    default_sampling: SamplingParams = SamplingParams(do_sample=True, temperature=0.7, top_k=20, top_p=0.8,
                                                      repetition_penalty=1.05)
    calls: list = field(default_factory=list)
    closed: list = field(default_factory=list)
    running: int = 0
    gate: threading.Event = field(default_factory=lambda: _set_event())

    def _check(self, max_new_tokens: int) -> None:
        if self.prompt_tokens + max_new_tokens > self.context_length:
            raise overflow(self.prompt_tokens, max_new_tokens, self.context_length)

    def start_chat(self, messages, *, tools=None, template_vars=None, thinking_budget=None, max_new_tokens=128,
                   sampling=None, stop_token_ids=None):
        self.calls.append(dict(messages=messages, tools=tools, template_vars=template_vars,
                               thinking_budget=thinking_budget, max_new_tokens=max_new_tokens, sampling=sampling))
        self._check(max_new_tokens)
        return StubGeneration(self, self.script, max_new_tokens, self.prompt_tokens)

    def start(self, prompt, *, max_new_tokens=128, sampling=None, stop_token_ids=None):
        self.calls.append(dict(prompt=prompt, max_new_tokens=max_new_tokens, sampling=sampling))
        self._check(max_new_tokens)
        return StubGeneration(self, self.text_script, max_new_tokens, self.prompt_tokens)


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event
