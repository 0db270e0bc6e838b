"""Prefill-then-decode generation with streaming text, on top of a loaded Model."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import onnxruntime as ort

from .errors import ContextOverflowError, InvalidRequestError
from .model import Model
from .sampling import Sampler, SamplingParams
from .streaming import TextStreamer

MAX_NEW_TOKENS_LIMIT = 1 << 20


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    time_to_first_token_s: float = 0.0
    decode_s: float = 0.0
    finish_reason: str = ""  # "eos", "length"

    @property
    def decode_tokens_per_s(self) -> float:
        steps = self.new_tokens - 1
        return steps / self.decode_s if steps > 0 and self.decode_s > 0 else 0.0


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    stats: GenerationStats = field(default_factory=GenerationStats)


class Generation:
    """One generation: an iterator of text pieces. `token_ids` and `stats` fill in as it runs."""

    def __init__(self, model: Model, prompt_ids: np.ndarray, max_new_tokens: int, sampling: SamplingParams,
                 stop_token_ids: Sequence[int] | None):
        if not isinstance(max_new_tokens, (int, np.integer)) or isinstance(max_new_tokens, bool):
            raise InvalidRequestError(f"max_new_tokens must be an integer, got {max_new_tokens!r}")
        if max_new_tokens <= 0 or max_new_tokens > MAX_NEW_TOKENS_LIMIT:
            raise InvalidRequestError(f"max_new_tokens must be in [1, {MAX_NEW_TOKENS_LIMIT}], got {max_new_tokens}")
        prompt_ids = model.check_ids(prompt_ids)
        needed = len(prompt_ids) + int(max_new_tokens)
        if needed > model.context_length:
            raise ContextOverflowError(
                f"prompt of {len(prompt_ids)} tokens plus max_new_tokens {max_new_tokens} = {needed} "
                f"exceeds the context length {model.context_length}"
            )
        self.model = model
        self.prompt_ids = prompt_ids
        self.max_new_tokens = int(max_new_tokens)
        self.sampler = Sampler(sampling, model.vocab_size)
        self.stop_ids = frozenset(model.eos_token_ids if stop_token_ids is None else _stop_ids(stop_token_ids))
        self.token_ids: list[int] = []
        self.stats = GenerationStats(prompt_tokens=len(prompt_ids))
        self._streamer = TextStreamer(model.tokenizer, skip_special_tokens=True)
        self._claim = threading.Lock()
        self._claimed = False

    def _start_once(self) -> None:
        """A Generation runs once, in one thread; a second iteration is an error, not a silent re-run."""
        with self._claim:
            if self._claimed:
                raise InvalidRequestError("this Generation has already been iterated (each one runs once, in one "
                                          "thread); call Generator.start again for another")
            self._claimed = True

    def tokens(self) -> Iterator[int]:
        """Yield new token ids (stop tokens are not yielded)."""
        self._start_once()
        return self._tokens()

    def _tokens(self) -> Iterator[int]:
        model = self.model
        cache = model.acquire_cache()
        try:
            mask = np.ones((1, cache.capacity), np.int64)
            step_logits = np.zeros((1, 1, model.vocab_size), np.float32)
            step_out = ort.OrtValue.ortvalue_from_numpy(step_logits)
            token_buf = np.zeros(1, np.int64)
            self.sampler.observe(self.prompt_ids)
            start = time.perf_counter()
            logits = model.step(cache, self.prompt_ids, mask, last_only=True)[-1]
            binding = None  # made after the first token, so that it does not count in its latency
            first = None
            while True:
                token = self.sampler(logits)
                if first is None:
                    first = time.perf_counter()
                    self.stats.time_to_first_token_s = first - start
                if token in self.stop_ids:
                    self.stats.finish_reason = "eos"
                    break
                self.token_ids.append(token)
                self.stats.new_tokens = len(self.token_ids)
                yield token
                if len(self.token_ids) >= self.max_new_tokens:
                    self.stats.finish_reason = "length"
                    break
                self.sampler.observe((token,))
                token_buf[0] = token
                if binding is None:
                    binding = model.decode_binding(cache, step_out)
                logits = model.step(cache, token_buf, mask, step_out, binding=binding)[-1]
            self.stats.decode_s = time.perf_counter() - first if first is not None else 0.0
        finally:
            model.release_cache(cache)

    def __iter__(self) -> Iterator[str]:
        self._start_once()
        return self._pieces()

    def _pieces(self) -> Iterator[str]:
        for token in self._tokens():
            piece = self._streamer.push(token)
            if piece:
                yield piece
        tail = self._streamer.flush()
        if tail:
            yield tail


def _stop_ids(values) -> list[int]:
    try:
        ids = list(values)
    except TypeError:
        raise InvalidRequestError(f"stop_token_ids must be a sequence of integers, got {type(values).__name__}") from None
    for v in ids:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise InvalidRequestError(f"stop_token_ids must be integers, got {v!r}")
    return [int(v) for v in ids]


class Generator:
    """The app-facing API: text in, text out, with chat and streaming.

    Thread safety: one Generator (and its Model) may be used from several threads at once. Each
    generation takes its own KV cache from the model's pool and its own sampler and detokenizer,
    and onnxruntime runs concurrent requests on one session safely, so concurrent calls neither
    block each other nor share state. A single `Generation` (what `start` returns) is consumed
    once, by one thread: iterating it a second time, or from a second thread, raises
    InvalidRequestError.
    """

    def __init__(self, model: Model):
        self.model = model

    def _prompt_ids(self, prompt) -> np.ndarray:
        if isinstance(prompt, (bytes, bytearray, memoryview)):
            try:
                prompt = bytes(prompt).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidRequestError(f"prompt bytes are not valid UTF-8 (byte {exc.start})") from None
        if isinstance(prompt, str):
            if prompt == "":
                raise InvalidRequestError("prompt is empty")
            return self.model.encode(prompt)
        if isinstance(prompt, np.ndarray):
            return prompt
        try:
            ids = list(prompt)
        except TypeError:
            raise InvalidRequestError(f"prompt must be a str or a sequence of token ids, got "
                                      f"{type(prompt).__name__}") from None
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
            bad = next(i for i in ids if not isinstance(i, (int, np.integer)) or isinstance(i, bool))
            raise InvalidRequestError(f"token ids must be integers, got {bad!r}")
        if any(not -2**63 <= int(i) < 2**63 for i in ids):
            raise InvalidRequestError("token id out of the int64 range")
        return np.asarray(ids, dtype=np.int64)

    def start(self, prompt, *, max_new_tokens: int = 128, sampling: SamplingParams | None = None,
              stop_token_ids: Sequence[int] | None = None) -> Generation:
        return Generation(self.model, self._prompt_ids(prompt), max_new_tokens, sampling or SamplingParams(),
                          stop_token_ids)

    def stream(self, prompt, **kwargs) -> Iterator[str]:
        return iter(self.start(prompt, **kwargs))

    def generate(self, prompt, **kwargs) -> GenerationResult:
        gen = self.start(prompt, **kwargs)
        text = "".join(gen)
        return GenerationResult(text=text, token_ids=list(gen.token_ids), stats=gen.stats)

    def render_chat(self, messages, *, add_generation_prompt: bool = True, **template_vars) -> str:
        return self.model.chat_template.render(messages, add_generation_prompt=add_generation_prompt, **template_vars)

    def chat(self, messages, *, template_vars: dict | None = None, **kwargs) -> GenerationResult:
        return self.generate(self.render_chat(messages, **(template_vars or {})), **kwargs)

    def stream_chat(self, messages, *, template_vars: dict | None = None, **kwargs) -> Iterator[str]:
        return self.stream(self.render_chat(messages, **(template_vars or {})), **kwargs)
