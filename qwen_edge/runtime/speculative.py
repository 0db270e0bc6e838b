"""Speculative decoding: a drafter guesses the next tokens, one pass of the target over all of them verifies.

One decoder pass over K tokens costs far less than K one-token passes on CPU (each int4 weight block is
unpacked once for all K rows), so every accepted guess saves most of a step. The output is the one plain
decoding gives: greedy accepts a guess only when it is the target's argmax at that position; sampling uses
the speculative sampling rule (Sampler.verify_draft), so the distribution of the output is unchanged.

Greedy output equals plain decoding's token for token when the target's logits for a token do not depend on how
many tokens its pass held. On onnxruntime 1.32's CPU kernels every operator of our decoders gives a row the same
bits whatever the number of rows but one: GroupQueryAttention, which takes another MLAS kernel for one new token
than for several (about 1e-6 apart); MatMulNBits at accuracy_level 4 quantizes activations to int8, which makes
that up to 0.21 in the logits of the trained 30M model. A bundle built with `--exact-speculation`
gives its attention a spare row, so that one-token steps take the several-token kernel too: its speculative
output is plain decoding's, bit for bit (`Model.exact_speculation`). Without it the output may differ from plain
decoding where the top two logits are closer than that.

Rejected positions are rolled back: a key/value cache just forgets them (its length goes back; later passes
overwrite them). A hybrid model's linear-attention states are overwritten whole by every pass, so they are
copied before a verify pass and, when a guess is rejected, restored, and the accepted tokens are fed again
at the front of the next pass (recomputed in the same pass that verifies the next guesses).

Speculation backs off by itself: the draft length grows while guesses are all accepted and shrinks to what
was accepted, and after `cooldown_after` verify passes in a row that accepted nothing the drafter rests
(plain decoding costs nothing extra then); after a rest one fruitless verify pass rests it again, twice as
long, until a guess is accepted. A draft bundle is judged by its time too: its draft length is the one with
the most expected tokens per second (pass cost plus drafting time, both measured as it runs), and while no
length beats a plain step it rests the same way, so a draft model that guesses well but slowly costs little.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .drafters import DraftMemory, DraftModelDrafter, NgramDrafter
from .errors import InvalidRequestError
from .model import Model, RuntimeOptions

METHODS = ("ngram", "draft", "mtp")
MAX_REST = 256  # the longest cooldown, in plain decode steps


@dataclass(frozen=True)
class Speculative:
    """How to speculate. `Speculative.parse("ngram")`, `"draft:PATH"` (a bundle with the same tokenizer) or
    `"mtp"`; the other fields tune the draft length and the cooldown."""

    method: str = "ngram"
    draft_bundle: str | None = None
    # The defaults are the best of benchmarks/speculative_replay.py's grid on both trained checkpoints (their
    # greedy outputs replayed on measured pass costs; 2 to 6% faster than 8, 4, 4, 2 on each workload).
    max_draft: int = 16  # most tokens guessed per verify pass
    initial_draft: int = 2
    min_ngram: int = 2
    max_ngram: int = 6
    cooldown_after: int = 3  # verify passes in a row that accept nothing before the drafter rests
    cooldown_steps: int = 4  # the first rest, in plain decode steps; doubles on each further failure, max 256
    # n-gram draft length by acceptance alone, or "cost": by measured pass costs and acceptance (on
    # qwen2-code-30m int4 it decoded no faster: benchmarks/results/speculative-adapt-ab-*.json). A draft
    # bundle's length is always by cost, its own drafting time included.
    adapt: str = "acceptance"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidRequestError(f"speculative method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if (self.method == "draft") != bool(self.draft_bundle):
            raise InvalidRequestError("speculative draft_bundle is required for method 'draft' (and only for it)")
        for name in ("max_draft", "initial_draft", "min_ngram", "max_ngram", "cooldown_after", "cooldown_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"speculative {name} must be an integer >= 1, got {value!r}")
        if self.max_draft > 64:
            raise InvalidRequestError(f"speculative max_draft must be <= 64, got {self.max_draft}")
        if self.adapt not in ("cost", "acceptance"):
            raise InvalidRequestError(f"speculative adapt must be 'cost' or 'acceptance', got {self.adapt!r}")
        if self.min_ngram > self.max_ngram:
            raise InvalidRequestError(f"speculative min_ngram {self.min_ngram} exceeds max_ngram {self.max_ngram}")

    @classmethod
    def parse(cls, value) -> "Speculative | None":
        """None, a Speculative, or the CLI's spelling: 'ngram', 'draft:BUNDLE' or 'mtp'."""
        if value is None or isinstance(value, Speculative):
            return value
        if not isinstance(value, str):
            raise InvalidRequestError(f"speculative must be a str or a Speculative, got {type(value).__name__}")
        method, _, arg = value.partition(":")
        if method == "draft":
            return cls(method="draft", draft_bundle=arg or None)
        if arg:
            raise InvalidRequestError(f"speculative method {method!r} takes no argument, got {value!r}")
        return cls(method=method)


def make_drafter(spec: Speculative, model, draft_models: dict):
    """The drafter for `spec` over `model`; draft bundles are loaded once per Generator (`draft_models`:
    bundle -> (Model, DraftMemory)), their sessions without spinning threads: the target's and the draft's
    sessions take turns, and a pool that spins after its work holds the cores the other one needs (on 2
    cores, qwen2-code-30m drafted by qwen35-code-11m decoded 1.5x faster so)."""
    if spec.method == "ngram":
        return NgramDrafter(spec.min_ngram, spec.max_ngram)
    if spec.method == "mtp":
        raise InvalidRequestError(f"speculative 'mtp': bundle {model.path} has no MTP head graph "
                                  "(qwen-edge does not build one yet)")
    entry = draft_models.get(spec.draft_bundle)
    if entry is None:
        entry = draft_models[spec.draft_bundle] = (Model(spec.draft_bundle, RuntimeOptions(spinning=False)),
                                                   DraftMemory())
    return DraftModelDrafter(entry[0], model, entry[1])


class _Passes:
    """Decoder passes over n tokens with their IO bindings made once per n (cache and logits buffer bound),
    and what a pass over n tokens has cost (a moving average of its wall time)."""

    def __init__(self, model, cache, memory: DraftMemory | None = None):
        memory = DraftMemory() if memory is None else memory  # a draft bundle's: its costs shared
        self.model, self.cache = model, cache
        self.mask = np.ones((1, cache.capacity), np.int64)
        self._bound: dict[int, tuple] = {}
        self._seconds, self._runs = memory.pass_seconds, memory.pass_runs  # n -> seconds, n -> runs

    def cost(self, n: int) -> float | None:
        """Seconds of a pass over n tokens, once measured twice (the first run of a shape is slower)."""
        return self._seconds.get(n) if self._runs.get(n, 0) >= 2 else None

    def run(self, tokens: list[int]) -> np.ndarray:
        n = len(tokens)
        if n not in self._bound:
            out = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, n, self.model.vocab_size), np.float32))
            self._bound[n] = (out, self.model.decode_binding(self.cache, out), np.zeros(n, np.int64))
        out, binding, ids = self._bound[n]
        ids[:] = tokens
        start = time.perf_counter()
        rows = self.model.step(self.cache, ids, self.mask, out, binding=binding)
        seconds = time.perf_counter() - start
        runs = self._runs[n] = self._runs.get(n, 0) + 1
        if runs == 2:
            self._seconds[n] = seconds
        elif runs > 2:
            self._seconds[n] += 0.2 * (seconds - self._seconds[n])
        return rows


class _States:
    """Copies of a hybrid cache's linear-attention states, taken before a verify pass."""

    def __init__(self, cache):
        self._live = cache.state_arrays()
        self._saved = [np.empty_like(a) for a in self._live]

    def save(self) -> None:
        for live, saved in zip(self._live, self._saved):
            np.copyto(saved, live)

    def restore(self) -> None:
        for live, saved in zip(self._live, self._saved):
            np.copyto(live, saved)


class DraftLength:
    """Adaptive draft length and cooldown.

    Without pass costs (`costs` None): the length doubles while every guess is accepted and falls to what
    was accepted plus one. With `costs` (a callable n -> seconds of a pass over n tokens, None while not
    measured), it picks the length with the most expected tokens per second: with per-guess acceptance a
    (decayed counts), k guesses yield 1 + a + ... + a^k tokens for one pass over k + 1 tokens plus the
    drafter's time for k guesses (`drafting`, k -> seconds or None, for a drafter that runs a model),
    against one token for one single-token step. When plain steps win, it rests as after misses, probes
    after the rest, and rests twice as long while the cost model still says plain steps win, whether or not
    the probe's guesses were accepted (a draft model that is right but slow does not pay).
    """

    def __init__(self, spec: Speculative, costs=None, drafting=None, memory: DraftMemory | None = None):
        self.spec = spec
        self.costs = costs
        self.drafting = drafting
        self.k = min(spec.initial_draft, spec.max_draft)
        self.misses = 0  # verify passes in a row that accepted nothing
        self.rest = 0  # plain steps left before drafting again
        # decayed counts of accepted guesses and of guesses decided, and the next rest: in `memory` when
        # given (a draft bundle's, kept across generations)
        self.memory = DraftMemory() if memory is None else memory
        if self.memory.next_rest is None:
            self.memory.next_rest = spec.cooldown_steps
        self._probe = False  # True after a rest: the next pass drafts whatever the cost model says

    def _rest(self) -> None:
        # after the rest one fruitless probe is enough to rest again, twice as long
        m = self.memory
        self.rest, self.misses, self._probe = m.next_rest, self.spec.cooldown_after - 1, True
        m.next_rest = min(MAX_REST, m.next_rest * 2)

    def _cost(self, n: int) -> float | None:
        """Seconds of a pass over n tokens: measured, else the next longer measured one (passes grow with
        n), else None."""
        for m in range(n, self.spec.max_draft + 2):
            t = self.costs(m)
            if t is not None:
                return t
        return None

    def want(self) -> int:
        if self.rest:
            self.rest -= 1
            return 0
        m = self.memory
        if self.costs is None or m.trials < 1:
            return self.k
        step = self._cost(1)  # while every pass drafts, the shortest measured pass stands in for a step
        if step is None:
            return self.k
        a = (m.accepted + 1.0) / (m.trials + 2.0)
        best, best_rate, expected, power = 0, 1.0 / step, 1.0, 1.0
        for k in range(1, self.spec.max_draft + 1):
            power *= a
            expected += power
            cost = self._cost(k + 1)
            if cost is None:  # not measured yet: try it once
                cost = step
            guessing = self.drafting(k) if self.drafting is not None else None
            cost += guessing or 0.0
            if expected / cost > best_rate:
                best, best_rate = k, expected / cost
        if best == 0 and not self._probe:
            self._rest()
            self.rest -= 1
            return 0
        self._probe = False
        if best:
            m.next_rest = self.spec.cooldown_steps  # drafting pays again
        return best or self.k

    def update(self, proposed: int, accepted: int) -> None:
        m = self.memory
        m.accepted = 0.8 * m.accepted + accepted
        m.trials = 0.8 * m.trials + accepted + (proposed > accepted)
        if accepted == proposed:
            self.k = min(self.spec.max_draft, self.k * 2)
        else:
            self.k = max(1, accepted + 1)
        if accepted:
            self.misses = 0
            if self.costs is None:  # by cost, want() decides when drafting pays again
                m.next_rest = self.spec.cooldown_steps
            return
        self.misses += 1
        if self.misses >= self.spec.cooldown_after:
            self._rest()


def speculative_tokens(gen, cache, drafter, spec: Speculative, logits: np.ndarray):
    """The tokens of Generation._tokens with speculation, after the prompt's pass gave `logits`: yields
    (token, forced) like the plain loop picks them (forced queue, else a verified guess, else a sample). The
    caller checks for stop tokens, counts and yields each one before asking for the next, and stops
    iterating when the generation ends."""
    model, sampler, stats = gen.model, gen.sampler, gen.stats
    memory = getattr(drafter, "memory", None)  # a draft bundle's, kept across generations
    passes = _Passes(model, cache, memory)
    states = _States(cache) if cache.has_states else None
    drafting = getattr(drafter, "cost", None)  # a drafter that runs a model: its time counts, by cost always
    length = DraftLength(spec, passes.cost if spec.adapt == "cost" or drafting is not None else None, drafting,
                         memory)
    history = [int(t) for t in gen.prompt_ids]
    queue: deque[int] = deque()  # verified guesses, in the cache, not yet yielded
    prefix: list[int] = []  # tokens to feed again before the next one (a hybrid's restored state)
    fed: list[int] = []  # the last verify pass's tokens
    start = kept = 0  # the cache length before it; how many of its tokens the cache keeps
    corrected = None  # the token a rejection chose, to be yielded next
    logits = np.array(logits)

    def rollback(keep: int) -> None:
        """Keep the first `keep` tokens of the last verify pass in the cache."""
        nonlocal prefix, kept
        kept = keep
        if states is None:
            cache.length = start + keep
        elif keep < len(fed):
            states.restore()
            cache.length = start
            prefix = fed[:keep]

    while not gen.closed:
        if gen._forced and queue:  # the consumer forces tokens: drop the guesses not yielded yet
            rollback(kept - len(queue))
            queue.clear()
            corrected = None
        if queue:
            token = queue.popleft()
            yield token, False
            history.append(token)
            continue
        forced = bool(gen._forced)
        if forced:
            token = gen._forced.popleft()
        elif corrected is not None:
            token = corrected
        else:
            token = sampler(logits)
        corrected = None
        yield token, forced
        sampler.observe((token,))
        history.append(token)
        k = 0 if gen._forced else min(length.want(), gen.max_new_tokens - len(gen.token_ids))
        drafts = [int(d) for d in drafter.propose(history, k)[:k]] if k > 0 else []
        fed, start = prefix + [token] + drafts, cache.length
        kept = len(fed)
        if drafts and states is not None:
            states.save()
        rows = passes.run(fed)[len(prefix):]
        prefix = []
        if not drafts:
            logits = rows[0].copy()
            continue
        stats.verify_passes += 1
        stats.draft_tokens += len(drafts)
        accepted = 0
        for i, d in enumerate(drafts):
            choice = sampler.verify_draft(rows[i], d)
            if choice != d:
                corrected = choice
                break
            accepted += 1
            sampler.observe((d,))
        stats.accepted_tokens += accepted
        length.update(len(drafts), accepted)
        queue.extend(drafts[:accepted])
        if corrected is None:
            logits = rows[accepted].copy()
        else:
            rollback(len(fed) - len(drafts) + accepted)


__all__ = ["DraftLength", "Speculative", "make_drafter", "speculative_tokens"]
