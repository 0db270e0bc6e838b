"""Draft proposers for speculative decoding: guesses of the next tokens that the target model then verifies.

A drafter is deterministic (it proposes tokens, not a distribution), which keeps the acceptance rule simple
and exact for sampling too: a one-hot proposal is accepted with the target's probability of it
(sampling.Sampler.verify_draft). Every drafter has `propose(history, k) -> list[int]` (at most k tokens that
continue `history`, the prompt and the output so far; [] when it has no guess) and `close()`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .errors import InvalidRequestError


class NgramDrafter:
    """Prompt lookup: find the latest earlier occurrence of the history's last n tokens (n from `max_ngram`
    down to `min_ngram`) and propose the tokens that followed it. An index of every n-gram's latest end
    position makes each proposal O(max_ngram) however long the history is."""

    def __init__(self, min_ngram: int = 2, max_ngram: int = 4):
        if not 1 <= min_ngram <= max_ngram:
            raise InvalidRequestError(f"ngram sizes must satisfy 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.min_ngram, self.max_ngram = min_ngram, max_ngram
        self._history: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}  # n-gram -> where the token after its latest occurrence is

    def _extend(self, history: Sequence[int]) -> None:
        h = self._history
        if len(history) < len(h) or (h and history[len(h) - 1] != h[-1]):
            h.clear()  # a different sequence: start over
            self._index.clear()
        for tok in history[len(h):]:
            # the n-grams that end just before this token now have a continuation
            end = len(h)
            for n in range(self.min_ngram, min(self.max_ngram, end) + 1):
                self._index[tuple(h[end - n:end])] = end
            h.append(int(tok))

    def propose(self, history: Sequence[int], k: int) -> list[int]:
        self._extend(history)
        h = self._history
        for n in range(min(self.max_ngram, len(h)), self.min_ngram - 1, -1):
            start = self._index.get(tuple(h[len(h) - n:]))
            if start is not None:
                return h[start:start + k]
        return []

    def close(self) -> None:
        pass


@dataclass
class DraftMemory:
    """What one Generator has learnt about one draft bundle, kept across its generations so that each starts
    where the last one left off (a short answer would otherwise spend itself measuring, and drafting): the
    bundle's seconds per guess, the decayed acceptance counts, the rest after the next fruitless verify pass,
    the target's measured pass costs (n -> seconds, n -> runs), and that the two vocabularies match. A
    generation with another drafter keeps the same fields for itself alone."""

    per_guess: float | None = None
    accepted: float = 0.0
    trials: float = 0.0
    next_rest: int | None = None
    pass_seconds: dict = field(default_factory=dict)
    pass_runs: dict = field(default_factory=dict)
    same_vocabulary: bool = False  # the draft's tokenizer was checked against the target's


class DraftModelDrafter:
    """A smaller bundle with the same tokenizer proposes greedily, k one-token steps on its own cache. Each
    proposal first rolls the cache back to the history it last saw (every later history extends it: the
    verified guesses and one new token): a key/value cache just forgets the drafted positions, a hybrid
    model's states are restored from a copy taken before drafting."""

    def __init__(self, draft, target, memory: DraftMemory | None = None):
        self.memory = DraftMemory() if memory is None else memory
        if not self.memory.same_vocabulary:  # compared once per memory: 30 ms for a 16k vocabulary
            if draft.vocab_size > target.vocab_size or draft.tokenizer.get_vocab() != target.tokenizer.get_vocab():
                raise InvalidRequestError(f"draft bundle {draft.path}: tokenizer.json differs from the target's "
                                          "(speculative decoding needs the same vocabulary)")
            self.memory.same_vocabulary = True
        self.model = draft
        self._cache = None  # taken from the draft model's pool at the first proposal
        self._mask = np.ones((1, draft.context_length), np.int64)
        self._seen: list[int] = []  # the history of the last proposal, in the cache
        self._buf = np.zeros(1, np.int64)
        self._saved: list[np.ndarray] = []

    def cost(self, k: int) -> float | None:
        """Seconds to guess k tokens (the catch-up pass over the verified tokens included), once measured."""
        return None if self.memory.per_guess is None else k * self.memory.per_guess

    def propose(self, history: Sequence[int], k: int) -> list[int]:
        if self._cache is None:
            self._cache = self.model.acquire_cache()
            self._saved = [np.empty_like(a) for a in self._cache.state_arrays()]
        cache, seen = self._cache, self._seen
        k = min(k, cache.capacity - len(history))
        if k <= 0 or not history:
            return []
        if len(history) <= len(seen) or list(history[:len(seen)]) != seen:
            seen.clear()  # not an extension of what the cache holds: start over
            cache.reset()
        cache.length = len(seen)
        for live, saved in zip(self._cache.state_arrays(), self._saved):
            np.copyto(live, saved)  # the states after `seen` (zeros at the start)
        new = np.asarray(history[len(seen):], np.int64)
        start = time.perf_counter()
        logits = self.model.step(cache, new, self._mask, last_only=True)[-1]
        # Catching up on a long stretch (the prompt, the tokens of a rest) is a one-off: it counts as a pass
        # over two tokens, the usual catch-up (a verified guess and the next token).
        seconds = (time.perf_counter() - start) * min(1.0, 2.0 / len(new))
        seen.extend(int(t) for t in new)
        for live, saved in zip(self._cache.state_arrays(), self._saved):
            np.copyto(saved, live)
        out = [int(np.argmax(logits))]
        start = time.perf_counter()
        while len(out) < k:
            self._buf[0] = out[-1]
            logits = self.model.step(cache, self._buf, self._mask)[-1]
            out.append(int(np.argmax(logits)))
        per_guess, m = (seconds + time.perf_counter() - start) / len(out), self.memory
        m.per_guess = per_guess if m.per_guess is None else m.per_guess + 0.2 * (per_guess - m.per_guess)
        return out

    def close(self) -> None:
        if self._cache is not None:
            self.model.release_cache(self._cache)
            self._cache = None


__all__ = ["DraftMemory", "DraftModelDrafter", "NgramDrafter"]
