"""Next-token selection: greedy or sampled, with Hugging Face semantics and without a full-vocabulary sort.

The order of operations is transformers' (`generate(do_sample=True, ...)`): repetition penalty, temperature,
top-k, top-p, then one draw from the renormalised distribution. Differences, at exact ties only:

* top-k keeps every token whose logit equals the k-th largest (as transformers' TopKLogitsWarper does);
* top-p keeps the smallest set of most likely tokens whose probability mass reaches top_p, plus every token
  whose logit equals that of the last one kept (transformers keeps an arbitrary subset of such ties).

Every step is O(vocab) with small constants, and only candidate sets are ever sorted:

* top-k: one selection (np.partition, introselect) gives the k-th largest logit; the candidates are the tokens
  at or above it.
* top-p without top-k: the top TOP_P_CHUNKS[i] tokens (selected the same way), growing until their mass reaches
  top_p; only that chunk is sorted. For flat distributions (the chunks fall short) the cut-off is found with a
  mass histogram over logit buckets: one bincount, then a sort of the one bucket the cut-off falls in.
* the draw: inverse CDF, two-level (block sums, then a cumulative sum inside one block) for large sets.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .errors import GenerationError, InvalidRequestError

# Candidate-set sizes tried, in order, to find the top-p cut-off before the histogram fallback.
TOP_P_CHUNKS = (64, 1024)
# Buckets of the top-p histogram fallback, over the logit range where float32 probabilities are non-zero.
_BUCKETS = 4096
_UNDERFLOW = 104.0  # exp(-104) is below the smallest float32 subnormal
# Weighted draws over more than 4 blocks of this many entries go through block sums.
_BLOCK = 512
# Up to this top_k the candidates are gathered and handled on their own; above, as a mask over the vocabulary.
_SMALL_TOP_K = 4096


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidRequestError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be finite, got {value!r}")
    return value


def _integer(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidRequestError(f"{name} must be an integer, got {value!r}")
    return int(value)


# transformers' GenerationConfig defaults, for fields a generation_config.json leaves out.
HF_SAMPLING_DEFAULTS = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0}
GENERATION_CONFIG_FIELDS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty")


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. `SamplingParams()` is greedy decoding (explicit defaults below), as is
    `SamplingParams.greedy()`; a model's recommended settings come from `from_generation_config` (what
    `Generator.default_sampling` returns and what `sampling=None` means in the Generator's calls)."""

    do_sample: bool = False  # False -> greedy (argmax, after the repetition penalty) regardless of the rest
    temperature: float = 1.0  # > 0 when do_sample
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # (0, 1]; 1 = off
    repetition_penalty: float = 1.0  # > 0; 1 = off. HF semantics, over the prompt and the generated tokens
    seed: int | None = None  # None: fresh OS entropy

    def __post_init__(self) -> None:
        fix = object.__setattr__
        if not isinstance(self.do_sample, (bool, np.bool_)):
            raise InvalidRequestError(f"do_sample must be a bool, got {self.do_sample!r}")
        fix(self, "do_sample", bool(self.do_sample))
        temperature = _real("temperature", self.temperature)
        if temperature < 0:
            raise InvalidRequestError(f"temperature must be >= 0 (and > 0 when sampling), got {temperature!r}")
        if self.do_sample and temperature == 0:
            raise InvalidRequestError("temperature must be > 0 when do_sample is true, got 0.0")
        fix(self, "temperature", temperature)
        top_k = _integer("top_k", self.top_k)
        if top_k < 0:
            raise InvalidRequestError(f"top_k must be >= 0 (0 = off), got {top_k}")
        fix(self, "top_k", top_k)
        top_p = _real("top_p", self.top_p)
        if not 0.0 < top_p <= 1.0:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {top_p!r}")
        fix(self, "top_p", top_p)
        penalty = _real("repetition_penalty", self.repetition_penalty)
        if penalty <= 0:
            raise InvalidRequestError(f"repetition_penalty must be > 0, got {penalty!r}")
        fix(self, "repetition_penalty", penalty)
        if self.seed is not None:
            seed = _integer("seed", self.seed)
            if seed < 0:
                raise InvalidRequestError(f"seed must be >= 0, got {seed}")
            fix(self, "seed", seed)


    @classmethod
    def greedy(cls, *, repetition_penalty: float = 1.0) -> "SamplingParams":
        """Greedy decoding (argmax after the optional repetition penalty)."""
        return cls(do_sample=False, repetition_penalty=repetition_penalty)

    @classmethod
    def from_generation_config(cls, config: dict) -> "SamplingParams":
        """The sampling a Hugging Face generation_config.json asks for, with transformers' defaults for the
        fields it leaves out (top_k 50 when sampling). Without do_sample it is greedy (the repetition penalty
        still applies, as in transformers); a temperature of 0 also means greedy."""
        if not isinstance(config, dict):
            raise InvalidRequestError(f"generation config must be a JSON object, got {type(config).__name__}")
        values = {k: config[k] for k in GENERATION_CONFIG_FIELDS if config.get(k) is not None}
        penalty = values.get("repetition_penalty", HF_SAMPLING_DEFAULTS["repetition_penalty"])
        do_sample = values.get("do_sample", False)
        if not isinstance(do_sample, bool):
            raise InvalidRequestError(f"do_sample must be a bool, got {do_sample!r}")
        if not do_sample or values.get("temperature") == 0:
            return cls.greedy(repetition_penalty=penalty)
        return cls(do_sample=True, temperature=values.get("temperature", HF_SAMPLING_DEFAULTS["temperature"]),
                   top_k=values.get("top_k", HF_SAMPLING_DEFAULTS["top_k"]),
                   top_p=values.get("top_p", HF_SAMPLING_DEFAULTS["top_p"]), repetition_penalty=penalty)


class Sampler:
    """Picks the next token from the last position's logits. One Sampler per generation (it holds the RNG
    and the set of token ids seen so far)."""

    def __init__(self, params: SamplingParams, vocab_size: int):
        if not isinstance(params, SamplingParams):
            raise InvalidRequestError(f"sampling parameters must be a SamplingParams, got {type(params).__name__}")
        vocab_size = _integer("vocab_size", vocab_size)
        if vocab_size <= 0:
            raise InvalidRequestError(f"vocab_size must be > 0, got {vocab_size}")
        self.params = params
        self.vocab_size = vocab_size
        self._penalty = params.repetition_penalty if params.repetition_penalty != 1.0 else None
        # Presence mask plus the distinct ids seen, in a preallocated array: O(1) per observed token and
        # O(distinct ids) per penalised step.
        if self._penalty is not None:
            self._seen = np.zeros(vocab_size, dtype=bool)
            self._seen_ids = np.empty(vocab_size, dtype=np.int64)
        else:
            self._seen = None
            self._seen_ids = None
        self._n_seen = 0
        self._rng = np.random.default_rng(params.seed)
        # The temperature as float32 for the vocabulary-wide arithmetic, kept in a range where it neither
        # underflows to 0 nor overflows (beyond it the distribution is already one-hot or uniform).
        self._temperature32 = np.float32(min(max(params.temperature, float(np.finfo(np.float32).tiny)), 1e30))
        self._buffers: list[np.ndarray | None] = [None, None]  # float32 [vocab] scratch, allocated when needed
        self._bins: np.ndarray | None = None  # intp [vocab] scratch of the top-p histogram

    # -- observed tokens ---------------------------------------------------------------------------------

    def observe(self, token_ids: Iterable[int] | int) -> None:
        """Record prompt or generated token ids (for the repetition penalty). Validates each id."""
        if isinstance(token_ids, (numbers.Integral, np.integer)) and not isinstance(token_ids, bool):
            token_ids = (token_ids,)
        elif isinstance(token_ids, np.ndarray):
            self._observe_array(token_ids)
            return
        elif not isinstance(token_ids, (list, tuple)):
            token_ids = list(token_ids)
        if len(token_ids) > 16:
            self._observe_array(np.asarray(token_ids))
            return
        for tok in token_ids:
            if isinstance(tok, bool) or not isinstance(tok, (numbers.Integral, np.integer)):
                raise InvalidRequestError(f"token ids must be integers, got {tok!r}")
            tok = int(tok)
            if not 0 <= tok < self.vocab_size:
                raise InvalidRequestError(f"token id {tok} is out of range [0, {self.vocab_size})")
            if self._seen is not None and not self._seen[tok]:
                self._seen[tok] = True
                self._seen_ids[self._n_seen] = tok
                self._n_seen += 1

    def _observe_array(self, ids: np.ndarray) -> None:
        if ids.size == 0:
            return
        if ids.dtype.kind not in "iu":
            raise InvalidRequestError(f"token ids must be integers, got an array of {ids.dtype}")
        ids = ids.reshape(-1)
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.vocab_size:
            bad = lo if lo < 0 else hi
            raise InvalidRequestError(f"token id {bad} is out of range [0, {self.vocab_size})")
        if self._seen is None:
            return
        new = np.unique(ids[~self._seen[ids]])
        self._seen[new] = True
        self._seen_ids[self._n_seen:self._n_seen + new.size] = new
        self._n_seen += new.size

    @property
    def seen_ids(self) -> np.ndarray:
        """The distinct ids observed so far (only tracked when a repetition penalty is set)."""
        if self._seen_ids is None:
            return np.empty(0, dtype=np.int64)
        return self._seen_ids[:self._n_seen].copy()

    # -- selection -----------------------------------------------------------------------------------------

    def __call__(self, logits: np.ndarray) -> int:
        """The next token id, from float logits of the last position ([vocab] or [1, vocab]).
        The caller's array is never modified."""
        x = self._penalised(self._check(logits))
        if not self.params.do_sample:
            return self._argmax(x)
        ids, weights = self._distribution(x)
        i = self._draw(weights)
        return i if ids is None else int(ids[i])

    def verify_draft(self, logits: np.ndarray, draft: int) -> int:
        """The token at a position where a drafter guessed `draft` (speculative decoding): greedy gives the
        argmax, as __call__ does. Sampling keeps `draft` with its probability p(draft) and otherwise draws
        from p with `draft` removed, renormalised: the speculative sampling rule for a one-hot proposal,
        so the result is distributed exactly as __call__(logits)."""
        if not self.params.do_sample:
            return self(logits)
        ids, probs = self.distribution(logits)
        at = int(np.searchsorted(ids, draft))
        hit = at < ids.shape[0] and int(ids[at]) == draft
        if hit and self._rng.random() < probs[at]:
            return int(draft)
        if hit:
            probs = probs.copy()
            probs[at] = 0.0
            if not probs.sum() > 0:  # p(draft) was 1 up to rounding
                return int(draft)
        return int(ids[self._draw(probs)])

    def apply_repetition_penalty(self, logits: np.ndarray) -> np.ndarray:
        """The logits with the repetition penalty applied (a float32 copy)."""
        return np.array(self._penalised(self._check(logits)), dtype=np.float32)

    def distribution(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(token ids in increasing order, their probabilities) that the next call with these logits draws
        from: after penalty, temperature, top-k and top-p; greedy gives the argmax with probability 1.
        For inspection and tests; it does not consume randomness."""
        x = self._penalised(self._check(logits))
        if not self.params.do_sample:
            return np.array([self._argmax(x)], dtype=np.int64), np.ones(1)
        ids, weights = self._distribution(x)
        if ids is None:
            ids = np.flatnonzero(weights)
            weights = weights[ids]
        else:
            positive = weights > 0  # drop candidates whose probability underflowed to 0
            ids, weights = ids[positive], weights[positive]
        order = np.argsort(ids)
        ids, weights = ids[order].astype(np.int64), weights[order].astype(np.float64)
        return ids, weights / weights.sum()

    def _check(self, logits) -> np.ndarray:
        x = logits if isinstance(logits, np.ndarray) else np.asarray(logits)
        if x.dtype.kind != "f":
            raise GenerationError(f"logits must be floating point, got {x.dtype}")
        if x.ndim != 1:
            if x.size != self.vocab_size:
                raise GenerationError(f"logits of shape {x.shape} do not match the vocabulary size {self.vocab_size}")
            x = x.reshape(-1)
        if x.shape[0] != self.vocab_size:
            raise GenerationError(f"logits have {x.shape[0]} entries, the vocabulary has {self.vocab_size}")
        return x

    def _penalised(self, x: np.ndarray) -> np.ndarray:
        """HF RepetitionPenaltyLogitsProcessor over the observed ids, on a float32 copy (x itself if no-op)."""
        if self._penalty is None or not self._n_seen:
            return x
        x = np.array(x, dtype=np.float32)  # a copy: never touch the caller's array
        ids = self._seen_ids[:self._n_seen]
        vals = x[ids]
        penalty = np.float32(self._penalty)
        x[ids] = np.where(vals < 0, vals * penalty, vals / penalty)
        return x

    @staticmethod
    def _argmax(x: np.ndarray) -> int:
        token = int(np.argmax(x))
        if math.isnan(x[token]):  # argmax stops at the first NaN
            raise GenerationError("logits contain NaN")
        return token

    def _distribution(self, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(ids, weights) to draw from, weights unnormalised and >= 0; ids None means weights covers the
        whole vocabulary."""
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        top = float(x.max())  # NaN anywhere propagates here
        if not math.isfinite(top):
            raise GenerationError(f"logits are not usable for sampling (their maximum is {top})")
        vocab = self.vocab_size
        k = self.params.top_k if 0 < self.params.top_k < vocab else 0
        if k and k <= _SMALL_TOP_K:
            return self._top_k(x, k)
        p = self._exp(x, top)
        if k:  # a large top-k: zero the probabilities below the k-th largest logit (ties kept)
            thr = np.partition(x, vocab - k)[vocab - k]
            np.multiply(p, x >= thr, out=p)
        if self.params.top_p < 1.0:
            return self._top_p(x, p)
        return None, p

    def _scratch(self, slot: int) -> np.ndarray:
        buf = self._buffers[slot]
        if buf is None:
            buf = self._buffers[slot] = np.empty(self.vocab_size, dtype=np.float32)
        return buf

    def _exp(self, x: np.ndarray, top: float) -> np.ndarray:
        """Unnormalised probabilities exp((x - max x) / T) of the whole vocabulary (float32, reused buffer).
        Subtracting the maximum before dividing cannot overflow, however small the temperature."""
        buf = self._scratch(0)
        np.subtract(x, np.float32(top), out=buf)
        t = self._temperature32
        if t != 1.0:
            with np.errstate(over="ignore"):  # a tiny temperature sends the gaps to -inf: probability 0
                np.divide(buf, t, out=buf)
        return np.exp(buf, out=buf)

    # -- draws ---------------------------------------------------------------------------------------------

    def _search(self, cumulative: np.ndarray) -> int:
        """i with probability (cumulative[i] - cumulative[i-1]) / cumulative[-1]; never a zero-weight entry."""
        u = self._rng.random() * cumulative[-1]
        i = int(np.searchsorted(cumulative, u, side="right"))
        if i >= cumulative.shape[0]:  # rounding put u on the total
            i = int(np.searchsorted(cumulative, cumulative[-1], side="left"))
        return i

    def _draw(self, weights: np.ndarray) -> int:
        """An index drawn with probability weights[i] / sum(weights) (weights >= 0, not all zero).
        Consumes exactly one uniform from the generator."""
        n = weights.shape[0]
        if n <= 4 * _BLOCK:
            return self._search(np.cumsum(weights, dtype=np.float64))
        full = n // _BLOCK
        sums = np.empty(full + (1 if n % _BLOCK else 0), dtype=np.float64)
        sums[:full] = weights[:full * _BLOCK].reshape(full, _BLOCK).sum(axis=1, dtype=np.float64)
        if n % _BLOCK:
            sums[full] = weights[full * _BLOCK:].sum(dtype=np.float64)
        block_cum = np.cumsum(sums)
        u = self._rng.random() * block_cum[-1]
        b = int(np.searchsorted(block_cum, u, side="right"))
        if b >= block_cum.shape[0]:
            b = int(np.searchsorted(block_cum, block_cum[-1], side="left"))
        if b:
            u -= block_cum[b - 1]
        inner = np.cumsum(weights[b * _BLOCK:(b + 1) * _BLOCK], dtype=np.float64)
        i = int(np.searchsorted(inner, u, side="right"))
        if i >= inner.shape[0]:  # the block's pairwise sum and its running sum differ in the last bits
            i = int(np.searchsorted(inner, inner[-1], side="left"))
        return b * _BLOCK + i

    # -- top-k / top-p -------------------------------------------------------------------------------------

    @staticmethod
    def _cutoff(values: np.ndarray, probs: np.ndarray, target: float, above: float = 0.0):
        """The smallest value top-p keeps, given candidates sorted by descending value, their probabilities
        (same scale as target) and the mass `above` of everything larger: the last candidate whose preceding
        mass is still < target."""
        cumulative = np.cumsum(probs, dtype=np.float64)
        if above:
            cumulative += above
        preceding = cumulative - probs
        n = int(np.searchsorted(preceding, target, side="left"))
        return values[min(max(n, 1), values.shape[0]) - 1]

    def _top_k(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # Every token whose logit is >= the k-th largest (ties kept, as transformers does). Top-k is invariant
        # under the temperature, so select on the raw logits.
        vocab = self.vocab_size
        thr = np.partition(x, vocab - k)[vocab - k]
        cand = np.flatnonzero(x > thr) if thr == -np.inf else np.flatnonzero(x >= thr)
        z = x[cand].astype(np.float64)
        with np.errstate(over="ignore"):
            z = (z - z.max()) / self.params.temperature
        probs = np.exp(z)
        if self.params.top_p < 1.0:  # top-p over the renormalised top-k distribution, as transformers
            order = np.argsort(z)[::-1]
            c = self._cutoff(z[order], probs[order], self.params.top_p * probs.sum())
            keep = z >= c
            cand, probs = cand[keep], probs[keep]
        return cand, probs

    def _top_p(self, x: np.ndarray, p: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        vocab = self.vocab_size
        target = self.params.top_p * float(p.sum(dtype=np.float64))
        for m in TOP_P_CHUNKS:
            if m >= vocab:
                break
            thr = np.partition(x, vocab - m)[vocab - m]
            if thr == -np.inf:
                break
            cand = np.flatnonzero(x >= thr)
            pc = p[cand]
            if float(pc.sum(dtype=np.float64)) < target:
                continue
            # Everything outside the chunk is strictly below it, so the cut-off is inside: sort the chunk only.
            xc = x[cand]
            order = np.argsort(xc)[::-1]
            c = self._cutoff(xc[order], pc[order].astype(np.float64), target)
            keep = xc >= c
            return cand[keep], pc[keep]
        return None, self._top_p_histogram(x, p, target)

    def _top_p_histogram(self, x: np.ndarray, p: np.ndarray, target: float) -> np.ndarray:
        """Top-p for flat distributions: the probability mass per logit bucket (bucketing is monotonic in the
        logit, so buckets are ordered), the bucket where the mass counted from the top reaches target, and a
        sort of only that bucket's tokens. Returns p with the tokens cut off zeroed (in a scratch buffer)."""
        top = float(x.max())
        # Below top - UNDERFLOW * T every probability is 0 in float32; no need to cover what no token has.
        low = max(top - _UNDERFLOW * float(self._temperature32), float(x.min()))
        span = top - low
        if not span > 0:  # every token ties with the top one
            span = 1.0
        f = self._scratch(1)
        np.subtract(x, np.float32(low), out=f)
        np.multiply(f, np.float32(_BUCKETS / span), out=f)
        np.clip(f, 0, _BUCKETS - 1, out=f)
        if self._bins is None:
            self._bins = np.empty(self.vocab_size, dtype=np.intp)
        bins = self._bins  # reused: a fresh 1 MB index array per call makes bincount several times slower
        np.copyto(bins, f, casting="unsafe")
        mass = np.bincount(bins, weights=p, minlength=_BUCKETS)
        from_top = np.cumsum(mass[::-1])
        j = min(int(np.searchsorted(from_top, target, side="left")), _BUCKETS - 1)
        above = float(from_top[j - 1]) if j else 0.0
        members = np.flatnonzero(bins == _BUCKETS - 1 - j)
        xm = x[members]
        order = np.argsort(xm)[::-1]
        c = self._cutoff(xm[order], p[members][order].astype(np.float64), target, above)
        return np.multiply(p, x >= c, out=f)


__all__ = ["SamplingParams", "Sampler"]
