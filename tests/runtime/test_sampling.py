"""Sampler: greedy, repetition penalty, temperature / top-k / top-p against transformers, reproducibility."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from qwen_edge.runtime import sampling
from qwen_edge.runtime.errors import GenerationError, InvalidRequestError
from qwen_edge.runtime.sampling import Sampler, SamplingParams

torch = pytest.importorskip("torch")
logits_process = pytest.importorskip("transformers.generation.logits_process")


def random_logits(vocab: int, *, scale: float = 3.0, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(vocab) * scale).astype(dtype)


def hf_scores(logits: np.ndarray, *, seen=(), penalty=1.0, temperature=1.0, top_k=0, top_p=1.0) -> np.ndarray:
    """transformers' processed scores for one row, in its sampling order."""
    scores = torch.from_numpy(np.asarray(logits, dtype=np.float32).copy())[None]
    ids = torch.tensor([list(seen) or [0]], dtype=torch.long)
    if penalty != 1.0 and len(seen):
        scores = logits_process.RepetitionPenaltyLogitsProcessor(penalty)(ids, scores)
    if temperature != 1.0:
        scores = logits_process.TemperatureLogitsWarper(temperature)(ids, scores)
    if top_k:
        scores = logits_process.TopKLogitsWarper(top_k)(ids, scores)
    if top_p < 1.0:
        scores = logits_process.TopPLogitsWarper(top_p)(ids, scores)
    return scores[0].numpy()


def hf_kept(logits: np.ndarray, **kwargs) -> np.ndarray:
    return np.flatnonzero(np.isfinite(hf_scores(logits, **kwargs)))


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# -- parameters -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {"do_sample": "yes"},
    {"do_sample": True, "temperature": 0.0},
    {"temperature": -1.0},
    {"temperature": float("nan")},
    {"temperature": float("inf")},
    {"temperature": "1"},
    {"temperature": True},
    {"top_k": -1},
    {"top_k": 2.5},
    {"top_k": True},
    {"top_p": 0.0},
    {"top_p": -0.1},
    {"top_p": 1.5},
    {"top_p": float("nan")},
    {"repetition_penalty": 0.0},
    {"repetition_penalty": -1.2},
    {"repetition_penalty": float("inf")},
    {"seed": -1},
    {"seed": 1.5},
    {"seed": "7"},
])
def test_invalid_params_raise(kwargs):
    with pytest.raises(InvalidRequestError) as info:
        SamplingParams(**kwargs)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert next(iter(kwargs)) in message and "\n" not in message


def test_params_are_normalised():
    p = SamplingParams(do_sample=np.bool_(True), temperature=np.float32(0.5), top_k=np.int64(5), top_p=1,
                       repetition_penalty=np.float64(1.1), seed=np.uint32(3))
    assert (type(p.temperature), type(p.top_k), type(p.top_p), type(p.seed), type(p.do_sample)) == (
        float, int, float, int, bool)
    # Greedy ignores the temperature, so 0 is accepted there (a common way to ask for greedy).
    assert SamplingParams(temperature=0.0).temperature == 0.0


def test_sampler_rejects_bad_construction_and_ids():
    with pytest.raises(InvalidRequestError):
        Sampler(SamplingParams(), 0)
    with pytest.raises(InvalidRequestError):
        Sampler({"do_sample": True}, 10)
    s = Sampler(SamplingParams(repetition_penalty=1.2), 10)
    for bad in (10, -1, [1, 2, 99], np.array([3, 10]), [1.0], [True], np.array([0.5])):
        with pytest.raises(InvalidRequestError):
            s.observe(bad)
    s.observe(np.array([], dtype=np.int64))
    s.observe(iter([1, 2]))
    s.observe(np.int32(3))
    s.observe(list(range(10)) * 3)  # long lists take the vectorised path
    assert sorted(s.seen_ids.tolist()) == list(range(10))


def test_bad_logits_raise_generation_error():
    s = Sampler(SamplingParams(do_sample=True, seed=0), 8)
    with pytest.raises(GenerationError):
        s(np.zeros(9, np.float32))
    with pytest.raises(GenerationError):
        s(np.zeros(8, np.int64))
    for bad in (np.nan, np.inf):
        x = np.zeros(8, np.float32)
        x[3] = bad
        with pytest.raises(GenerationError):
            s(x)
    with pytest.raises(GenerationError):
        s(np.full(8, -np.inf, np.float32))
    x = np.zeros(8, np.float32)
    x[2] = np.nan
    with pytest.raises(GenerationError):
        Sampler(SamplingParams(), 8)(x)
    assert Sampler(SamplingParams(), 8)(np.zeros((1, 8), np.float32)) == 0  # [1, vocab] is accepted


# -- greedy and repetition penalty -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("vocab", [16384, 151936])
def test_greedy_is_argmax(vocab, dtype):
    s = Sampler(SamplingParams(), vocab)
    for seed in range(5):
        x = random_logits(vocab, seed=seed, dtype=dtype)
        before = x.copy()
        assert s(x) == int(np.argmax(x))
        np.testing.assert_array_equal(x, before)
    # do_sample=False ignores temperature / top-k / top-p
    s = Sampler(SamplingParams(do_sample=False, temperature=5.0, top_k=3, top_p=0.1, seed=1), vocab)
    x = random_logits(vocab, seed=9, dtype=dtype)
    assert s(x) == int(np.argmax(x))


def test_repetition_penalty_by_hand():
    x = np.array([3.0, -1.0, 2.5, 0.5, -4.0, 1.0], np.float32)
    s = Sampler(SamplingParams(repetition_penalty=2.0), 6)
    assert s(x) == 0
    s.observe([0, 1, 4])
    s.observe(0)  # repeats count once
    expected = np.array([1.5, -2.0, 2.5, 0.5, -8.0, 1.0], np.float32)
    np.testing.assert_array_equal(s.apply_repetition_penalty(x), expected)
    assert s(x) == 2
    np.testing.assert_array_equal(x, [3.0, -1.0, 2.5, 0.5, -4.0, 1.0])  # caller's logits untouched
    # A penalty < 1 encourages repetition.
    s = Sampler(SamplingParams(repetition_penalty=0.25), 6)  # 1.0 / 0.25 = 4.0 > 3.0
    s.observe([5])
    assert s(x) == 5


@pytest.mark.parametrize("penalty", [0.7, 1.3, 2.0])
def test_repetition_penalty_matches_transformers(penalty):
    vocab = 5000
    rng = np.random.default_rng(1)
    x = random_logits(vocab, seed=2)
    seen = rng.integers(0, vocab, 700)
    s = Sampler(SamplingParams(repetition_penalty=penalty), vocab)
    s.observe(seen[:300])
    for token in seen[300:]:
        s.observe((int(token),))
    expected = hf_scores(x, seen=seen.tolist(), penalty=penalty)
    np.testing.assert_array_equal(s.apply_repetition_penalty(x), expected)
    assert s(x) == int(np.argmax(expected))


# -- the sampled distribution against transformers --------------------------------------------------------


@pytest.mark.parametrize("vocab", [1000, 16384, 151936])
@pytest.mark.parametrize("scale,temperature,top_p", [
    (8.0, 1.0, 0.9),   # peaked: the first chunk holds the cut-off
    (3.0, 0.7, 0.95),  # a larger chunk
    (1.0, 1.0, 0.9),   # flat: the histogram fallback
    (1.0, 2.0, 0.5),
    (5.0, 1.3, 0.999),
    (3.0, 1.0, 0.01),  # only the top token
])
def test_top_p_kept_set_matches_transformers(vocab, scale, temperature, top_p):
    for seed in range(3):
        x = random_logits(vocab, scale=scale, seed=seed)
        s = Sampler(SamplingParams(do_sample=True, temperature=temperature, top_p=top_p, seed=0), vocab)
        ids, probs = s.distribution(x)
        expected = hf_kept(x, temperature=temperature, top_p=top_p)
        diff = np.setxor1d(ids, expected)
        if diff.size:
            # Only a token at the boundary may differ, and only when the mass before it is within
            # float32 rounding of top_p (transformers sums float32 probabilities in ascending order).
            assert diff.size == 1, diff
            z = x.astype(np.float64) / temperature
            p = np.exp(z - z.max())
            p /= p.sum()
            before = p[p > p[diff[0]]].sum()
            assert abs(before - top_p) < 1e-5
        np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-9)


@pytest.mark.parametrize("vocab", [1000, 151936])
@pytest.mark.parametrize("top_k,top_p,temperature,penalty", [
    (1, 1.0, 1.0, 1.0),
    (40, 1.0, 0.8, 1.0),
    (50, 0.9, 0.7, 1.1),
    (900, 0.8, 1.5, 1.0),
    (6000, 0.95, 1.0, 1.2),  # a large top-k: handled as a mask over the vocabulary
    (0, 0.9, 0.6, 1.3),
    (0, 1.0, 0.9, 1.0),  # plain softmax sampling
])
def test_distribution_matches_transformers_pipeline(vocab, top_k, top_p, temperature, penalty):
    # top_k >= vocab turns top-k off, in transformers too (it clamps k to the vocabulary size)
    x = random_logits(vocab, scale=2.5, seed=top_k)
    seen = np.random.default_rng(3).integers(0, vocab, 300)
    s = Sampler(SamplingParams(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
                               repetition_penalty=penalty, seed=0), vocab)
    s.observe(seen)
    ids, probs = s.distribution(x)
    scores = hf_scores(x, seen=seen.tolist(), penalty=penalty, temperature=temperature, top_k=top_k, top_p=top_p)
    expected = torch.softmax(torch.from_numpy(scores).double(), -1).numpy()
    diff = np.setxor1d(ids, np.flatnonzero(expected > 0))
    assert diff.size <= 1  # at most a boundary token (float32 rounding in transformers' cumulative sum)
    if diff.size == 0:
        np.testing.assert_allclose(probs, expected[ids], rtol=1e-4, atol=1e-9)


def test_top_k_keeps_ties_like_transformers():
    x = np.array([1.0, 5.0, 3.0, 3.0, 3.0, -2.0, 0.0, 3.0], np.float32)
    s = Sampler(SamplingParams(do_sample=True, top_k=2, seed=0), 8)
    ids, probs = s.distribution(x)
    np.testing.assert_array_equal(ids, hf_kept(x, top_k=2))
    np.testing.assert_array_equal(ids, [1, 2, 3, 4, 7])


def test_top_p_ties_are_kept_whole():
    # float16 logits: many exact ties. Transformers keeps an arbitrary part of the tie at the cut-off;
    # we keep all of it, so ours is a superset whose extra tokens all tie with the last one kept.
    rng = np.random.default_rng(5)
    x = np.round(rng.standard_normal(20000) * 2).astype(np.float16)
    for top_p in (0.3, 0.6, 0.9):
        s = Sampler(SamplingParams(do_sample=True, top_p=top_p, seed=0), x.size)
        ids, _ = s.distribution(x)
        hf = hf_kept(x, top_p=top_p)
        assert set(hf) <= set(ids)
        extra = np.setdiff1d(ids, hf)
        if extra.size:
            assert np.all(x[extra] == x[hf].min())
        assert np.unique(x[ids]).size == np.unique(x[hf]).size


def test_minus_inf_logits_are_never_drawn():
    x = np.full(3000, -np.inf, np.float32)
    x[[5, 17, 2999]] = [1.0, 0.5, 0.0]
    for params in (SamplingParams(do_sample=True, seed=1), SamplingParams(do_sample=True, top_k=10, seed=1),
                   SamplingParams(do_sample=True, top_p=0.99, seed=1),
                   SamplingParams(do_sample=True, top_k=2000, top_p=0.99, seed=1)):
        s = Sampler(params, x.size)
        draws = {s(x) for _ in range(300)}
        assert draws <= {5, 17, 2999} and 5 in draws


@pytest.mark.parametrize("temperature", [1e-45, 1e-8, 1e8, 1e300])
@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (50, 1.0), (0, 0.9), (50, 0.5), (10000, 0.9)])
def test_extreme_temperatures(temperature, top_k, top_p, recwarn):
    x = random_logits(151936, scale=1.0, seed=3)
    s = Sampler(SamplingParams(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p, seed=0), x.size)
    ids, probs = s.distribution(x)
    token = s(x)
    assert token in ids and np.isfinite(probs).all()
    if temperature < 1:  # effectively greedy
        assert ids.tolist() == [int(np.argmax(x))]
    else:  # effectively uniform over what top-k / top-p keep
        np.testing.assert_allclose(probs, 1 / ids.size, rtol=1e-4)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


# -- empirical draws ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    SamplingParams(do_sample=True, top_k=8, seed=11),
    SamplingParams(do_sample=True, top_p=0.8, temperature=1.5, seed=12),
    SamplingParams(do_sample=True, top_k=20, top_p=0.7, seed=13),
    SamplingParams(do_sample=True, temperature=0.8, seed=14),
])
def test_draw_frequencies_follow_the_distribution(params):
    vocab = 3000  # > 4 blocks, so the full-vocabulary draw goes through block sums
    x = random_logits(vocab, scale=1.0 if params.top_k == 0 and params.top_p == 1.0 else 2.0, seed=21)
    if params.top_k == 0 and params.top_p == 1.0:
        x[:6] += 6.0  # a few likely tokens so that the counts are informative
    s = Sampler(params, vocab)
    ids, probs = s.distribution(x)
    n = 8000
    draws = np.array([s(x) for _ in range(n)])
    assert np.isin(draws, ids).all()  # only allowed tokens
    # Chi-square over the likely tokens, the rest pooled (expected count >= 5 everywhere).
    counts = np.array([np.count_nonzero(draws == i) for i in ids], dtype=np.float64)
    big = probs * n >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(probs[big], probs[~big].sum())
    if exp[-1] * n < 5:
        obs, exp = obs[:-1], exp[:-1]
    dof = max(len(obs) - 1, 1)
    # p ~ 1e-6 bound for the chi-square with `dof` degrees of freedom (Wilson-Hilferty approximation)
    z = 4.75
    bound = dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3
    assert chi_square(obs, exp / exp.sum()) < bound


def test_same_seed_same_sequence():
    vocab = 151936
    logits = [random_logits(vocab, scale=2.0, seed=i) for i in range(4)]
    for params in (SamplingParams(do_sample=True, seed=7), SamplingParams(do_sample=True, top_k=50, seed=7),
                   SamplingParams(do_sample=True, top_p=0.9, temperature=0.7, seed=7)):
        runs = []
        for _ in range(2):
            s = Sampler(params, vocab)
            runs.append([s(logits[i % 4]) for i in range(40)])
        assert runs[0] == runs[1]
        other = Sampler(dataclasses.replace(params, seed=8), vocab)
        assert [other(logits[i % 4]) for i in range(40)] != runs[0]


@pytest.mark.parametrize("params", [
    SamplingParams(repetition_penalty=1.3),
    SamplingParams(do_sample=True, seed=1),
    SamplingParams(do_sample=True, top_k=10, top_p=0.5, temperature=0.5, repetition_penalty=1.2, seed=1),
    SamplingParams(do_sample=True, top_p=0.9, repetition_penalty=1.2, seed=1),
    SamplingParams(do_sample=True, top_k=5000, repetition_penalty=0.8, seed=1),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_callers_logits_are_not_modified(params, dtype):
    x = random_logits(20000, scale=1.0, seed=4, dtype=dtype)
    before = x.copy()
    s = Sampler(params, x.size)
    s.observe(np.arange(0, 20000, 7))
    for _ in range(3):
        s(x)
        s.distribution(x)
    np.testing.assert_array_equal(x, before)


# -- no full-vocabulary sort ------------------------------------------------------------------------------


class _SortSpy:
    """numpy, except that sort / argsort record the sizes they are given."""

    def __init__(self):
        self.sizes = []

    def __getattr__(self, name):
        return getattr(np, name)

    def argsort(self, a, *args, **kwargs):
        self.sizes.append(np.size(a))
        return np.argsort(a, *args, **kwargs)

    def sort(self, a, *args, **kwargs):
        self.sizes.append(np.size(a))
        return np.sort(a, *args, **kwargs)


@pytest.mark.parametrize("scale", [1.0, 3.0, 8.0])
@pytest.mark.parametrize("params", [
    SamplingParams(do_sample=True, top_p=0.9, seed=0),
    SamplingParams(do_sample=True, top_p=0.95, temperature=0.7, seed=0),
    SamplingParams(do_sample=True, top_p=0.99, temperature=1.5, seed=0),
    SamplingParams(do_sample=True, top_k=50, top_p=0.9, seed=0),
    SamplingParams(do_sample=True, top_k=20000, top_p=0.9, seed=0),
    SamplingParams(do_sample=True, seed=0),
])
def test_no_full_vocabulary_sort(monkeypatch, params, scale):
    spy = _SortSpy()
    monkeypatch.setattr(sampling, "np", spy)
    vocab = 151936
    s = Sampler(params, vocab)
    for seed in range(2):
        s(random_logits(vocab, scale=scale, seed=seed))
    assert max(spy.sizes, default=0) <= 8192, spy.sizes
