"""Prefill-then-decode generation with streaming text, on top of a loaded Model."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Iterator, Sequence

import numpy as np
import onnxruntime as ort

from .chat_generation import DEFAULT_BUDGET_MESSAGE, ChatGeneration, check_template_vars
from .errors import ContextOverflowError, InvalidRequestError
from .model import Model
from .results import GenerationResult, GenerationStats
from .sampling import Sampler, SamplingParams
from .speculative import Speculative, make_drafter, speculative_tokens
from .streaming import TextStreamer
from .vision import split_images

MAX_NEW_TOKENS_LIMIT = 1 << 20


class Generation:
    """One generation: an iterator of text pieces. `token_ids` and `stats` fill in as it runs.

    `close()` ends it early (a client went away): the KV cache goes back to the model's pool at once when
    called from the consuming thread between pieces, otherwise before the next decode step; the stats then
    say "cancelled". Iterating a closed generation yields nothing more.
    """

    def __init__(self, model: Model, prompt_ids: np.ndarray, max_new_tokens: int, sampling: SamplingParams,
                 stop_token_ids: Sequence[int] | None, media=None, speculative: Speculative | None = None,
                 draft_models: dict | None = None):
        if not isinstance(max_new_tokens, (int, np.integer)) or isinstance(max_new_tokens, bool):
            raise InvalidRequestError(f"max_new_tokens must be an integer, got {max_new_tokens!r}")
        if max_new_tokens <= 0 or max_new_tokens > MAX_NEW_TOKENS_LIMIT:
            raise InvalidRequestError(f"max_new_tokens must be in [1, {MAX_NEW_TOKENS_LIMIT}], got {max_new_tokens}")
        prompt_ids = model.check_ids(prompt_ids)
        needed = len(prompt_ids) + int(max_new_tokens)
        if needed > model.context_length:
            raise ContextOverflowError(
                f"prompt of {len(prompt_ids)} tokens plus max_new_tokens {max_new_tokens} = {needed} "
                f"exceeds the context length {model.context_length}",
                n_prompt_tokens=len(prompt_ids), n_ctx=model.context_length)
        self.model = model
        self.prompt_ids = prompt_ids
        self.media = media  # runtime.vision.PromptMedia of a prompt with images
        self.max_new_tokens = int(max_new_tokens)
        self.sampler = Sampler(sampling, model.vocab_size)
        self.stop_ids = frozenset(model.eos_token_ids if stop_token_ids is None else _stop_ids(stop_token_ids))
        self.token_ids: list[int] = []
        self.stats = GenerationStats(prompt_tokens=len(prompt_ids))
        self._streamer = TextStreamer(model.tokenizer, skip_special_tokens=True)
        self._claim = threading.Lock()
        self._claimed = False
        self._forced: deque[int] = deque()
        self._closed = False
        self._running: list = []  # the Python generators of this run, closed by close()
        self.speculative = Speculative.parse(speculative)
        self._drafter = make_drafter(self.speculative, model, {} if draft_models is None else draft_models) \
            if self.speculative is not None else None

    def _start_once(self) -> bool:
        """A Generation runs once, in one thread; a second iteration is an error, not a silent re-run.
        False when it was closed before it started."""
        with self._claim:
            if self._claimed:
                raise InvalidRequestError("this Generation has already been iterated (each one runs once, in one "
                                          "thread); call Generator.start again for another")
            self._claimed = True
            return not self._closed

    def force(self, token_ids: Sequence[int]) -> None:
        """Make the next tokens `token_ids` instead of sampling them (each still runs through the model, is
        yielded and counts against max_new_tokens). For use by the consumer between tokens."""
        ids = self.model.check_ids(np.asarray(list(token_ids), dtype=np.int64))
        self._forced.extend(int(i) for i in ids)

    def close(self) -> None:
        """Stop generating and give the KV cache back (see the class docstring). Safe to call more than once."""
        with self._claim:
            if self._closed:
                return
            self._closed = True
            if self.stats.finish_reason == "":
                self.stats.finish_reason = "cancelled"
        for it in reversed(self._running):
            try:
                it.close()
            except ValueError:  # running in another thread: it sees _closed before its next step
                pass

    @property
    def closed(self) -> bool:
        return self._closed

    def tokens(self) -> Iterator[int]:
        """Yield new token ids (stop tokens are not yielded)."""
        if not self._start_once():
            return iter(())
        it = self._tokens()
        self._running.append(it)
        return it

    def _tokens(self) -> Iterator[int]:
        model = self.model
        cache = model.acquire_cache()
        try:
            mask = np.ones((1, cache.capacity), np.int64)
            self.sampler.observe(self.prompt_ids)
            start = time.perf_counter()
            logits = model.step(cache, self.prompt_ids, mask, last_only=True, media=self.media)[-1]
            first = picks = None
            picks = self._plain_picks(cache, mask, logits) if self._drafter is None else \
                speculative_tokens(self, cache, self._drafter, self.speculative, logits)
            for token, forced in picks:
                if first is None:
                    first = time.perf_counter()
                    self.stats.time_to_first_token_s = first - start
                if token in self.stop_ids and not forced:
                    self.stats.finish_reason = "eos"
                    break
                self.token_ids.append(token)
                self.stats.new_tokens = len(self.token_ids)
                yield token
                if len(self.token_ids) >= self.max_new_tokens:
                    self.stats.finish_reason = "length"
                    break
                if self._closed:
                    break
            self.stats.decode_s = time.perf_counter() - first if first is not None else 0.0
        finally:
            if self._closed and self.stats.finish_reason == "":
                self.stats.finish_reason = "cancelled"
            if picks is not None:
                picks.close()
            model.release_cache(cache)
            if self._drafter is not None:
                self._drafter.close()

    def _plain_picks(self, cache, mask: np.ndarray, logits: np.ndarray) -> Iterator[tuple[int, bool]]:
        """(token, forced) one decode step at a time: forced tokens first, else a sample of the last logits."""
        model = self.model
        step_out = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, 1, model.vocab_size), np.float32))
        token_buf = np.zeros(1, np.int64)
        binding = None  # made after the first token, so that it does not count in its latency
        while not self._closed:
            forced = bool(self._forced)
            token = self._forced.popleft() if forced else self.sampler(logits)
            yield token, forced
            self.sampler.observe((token,))
            token_buf[0] = token
            if binding is None:
                binding = model.decode_binding(cache, step_out)
            logits = model.step(cache, token_buf, mask, step_out, binding=binding)[-1]

    def __iter__(self) -> Iterator[str]:
        if not self._start_once():
            return iter(())
        it = self._pieces()
        self._running.append(it)
        return it

    def _pieces(self) -> Iterator[str]:
        tokens = self._tokens()
        self._running.append(tokens)
        for token in tokens:
            piece = self._streamer.push(token)
            if piece:
                yield piece
        if self._closed:
            return
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
    block each other nor share state, except what speculation learns of a draft bundle's speed and
    acceptance (drafters.DraftMemory: a race only blurs its averages). A single `Generation` (what
    `start` returns) is consumed once, by one thread: iterating it a second time, or from a second
    thread, raises InvalidRequestError.
    """

    def __init__(self, model: Model):
        self.model = model
        self._draft_models: dict = {}  # speculative draft bundles (Model, DraftMemory), loaded on first use

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

    @property
    def default_sampling(self) -> SamplingParams:
        """The bundle's recommended sampling (from the checkpoint's generation_config.json; greedy when it
        has none). `sampling=None` in every call means this; `SamplingParams.greedy()` is greedy."""
        return self.model.default_sampling

    def start(self, prompt, *, max_new_tokens: int = 128, sampling: SamplingParams | None = None,
              stop_token_ids: Sequence[int] | None = None, speculative: Speculative | str | None = None) -> Generation:
        """A raw completion of `prompt` (text or token ids), not templated or parsed. `speculative` ("ngram",
        "draft:BUNDLE" or a Speculative) verifies guessed tokens several at a time: the same output (greedy:
        token for token; sampling: the same distribution), faster when the guesses are often right."""
        return Generation(self.model, self._prompt_ids(prompt), max_new_tokens,
                          self.default_sampling if sampling is None else sampling, stop_token_ids,
                          speculative=speculative, draft_models=self._draft_models)

    def stream(self, prompt, **kwargs) -> Iterator[str]:
        return iter(self.start(prompt, **kwargs))

    def generate(self, prompt, **kwargs) -> GenerationResult:
        gen = self.start(prompt, **kwargs)
        text = "".join(gen)
        return GenerationResult(text=text, token_ids=list(gen.token_ids), stats=gen.stats)

    def render_chat(self, messages, *, add_generation_prompt: bool = True, **template_vars) -> str:
        return self.model.chat_template.render(messages, add_generation_prompt=add_generation_prompt, **template_vars)

    def start_chat(self, messages, *, tools: list[dict] | None = None, template_vars: dict | None = None,
                   thinking_budget: int | None = None, thinking_budget_message: str = DEFAULT_BUDGET_MESSAGE,
                   max_new_tokens: int = 128, sampling: SamplingParams | None = None,
                   stop_token_ids: Sequence[int] | None = None, min_pixels: int | None = None,
                   max_pixels: int | None = None, speculative: Speculative | str | None = None) -> ChatGeneration:
        """Render `messages` (OpenAI shape: content parts, tool_calls) with the bundle's template and start
        answering. The answer streams as ChatDelta pieces split into reasoning, content and tool calls (tool
        calls are parsed when `tools` are given). A vision-language bundle takes image parts
        ({"type": "image", "image": path, PIL image or uint8 array}); `min_pixels` / `max_pixels` bound
        each image's resized area (the processor's defaults when None). `template_vars` reach the template (e.g.
        {"enable_thinking": False}). With `thinking_budget=N`, after N reasoning tokens the runtime inserts
        `thinking_budget_message` (which must contain "</think>") and the model goes on with the answer."""
        extra = check_template_vars(template_vars)
        messages, images = split_images(messages, self.model.vision is not None)
        prompt = self.render_chat(messages, tools=tools, **extra)
        sampling = self.default_sampling if sampling is None else sampling
        if images or self.model.vision is not None:  # a VL bundle: pads expanded, 3-D positions
            options = self.model.vision.image_options(min_pixels, max_pixels)
            media = self.model.vision.prepare(self._prompt_ids(prompt), images, options)
            generation = Generation(self.model, media.ids, max_new_tokens, sampling, stop_token_ids, media=media,
                                    speculative=speculative, draft_models=self._draft_models)
        else:
            generation = self.start(prompt, max_new_tokens=max_new_tokens, sampling=sampling,
                                    stop_token_ids=stop_token_ids, speculative=speculative)
        return ChatGeneration.for_prompt(generation, prompt, self.model, tools=tools,
                                         thinking_budget=thinking_budget, budget_message=thinking_budget_message)

    def chat(self, messages, **kwargs) -> GenerationResult:
        """start_chat(...).result(): the whole answer, parsed."""
        return self.start_chat(messages, **kwargs).result()

    def stream_chat(self, messages, *, template_vars: dict | None = None, **kwargs) -> Iterator[str]:
        """The answer's raw text pieces (reasoning and tags included); start_chat gives them parsed."""
        return self.stream(self.render_chat(messages, **check_template_vars(template_vars)), **kwargs)
