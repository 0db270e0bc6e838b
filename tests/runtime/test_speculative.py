"""Speculative decoding: the same tokens as plain decoding (greedy), the same distribution (sampling)."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_edge.runtime import Generator, InvalidRequestError, Model, SamplingParams, Speculative
from qwen_edge.runtime import generator as generator_mod
from qwen_edge.runtime.drafters import DraftMemory, DraftModelDrafter, NgramDrafter
from qwen_edge.runtime.sampling import Sampler
from qwen_edge.runtime.speculative import DraftLength

N_PROMPTS = 50
NEW = 20


def _workloads(vocab: int, seed: int = 0):
    """50 'code edit' prompts (a block repeated, as a function the answer rewrites) and 50 open-ended ones."""
    rng = np.random.default_rng(seed)
    edit, open_ended = [], []
    for _ in range(N_PROMPTS):
        block = [int(t) for t in rng.integers(3, vocab - 8, size=int(rng.integers(5, 12)))]
        cut = int(rng.integers(2, len(block)))
        edit.append(block * 2 + block[:cut])
        open_ended.append([int(t) for t in rng.integers(3, vocab - 8, size=int(rng.integers(4, 16)))])
    return {"edit": edit, "open": open_ended}


class ArgmaxDrafter:
    """Guesses the target's own greedy continuation of any history (from full forward passes), with every
    second proposal's last guess replaced: likely and unlikely guesses under sampling."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def propose(self, history, k):
        self.calls += 1
        seq, out = list(history), []
        for _ in range(k):
            out.append(int(np.argmax(self.model.logits(np.array(seq))[-1])))
            seq.append(out[-1])
        if out and self.calls % 2:
            out[-1] = (out[-1] + 7) % self.model.vocab_size
        return out

    def close(self):
        pass


class OracleDrafter:
    """Guesses the plain run's continuation with every `wrong`-th guess corrupted: rejections at every
    position of a draft, with the rest accepted (random models rarely give either with n-grams)."""

    def __init__(self, reference: dict[tuple, list[int]], vocab: int, wrong: int):
        self.reference, self.vocab, self.wrong, self.calls = reference, vocab, wrong, 0

    def propose(self, history, k):
        self.calls += 1
        for prompt, tokens in self.reference.items():
            n = len(prompt)
            if tuple(history[:n]) == prompt and list(history[n:]) == tokens[:len(history) - n]:
                out = list(tokens[len(history) - n:len(history) - n + k])
                if out and self.calls % self.wrong == 0:
                    i = self.calls % len(out)
                    out[i] = (out[i] + 1) % self.vocab
                return out
        return []

    def close(self):
        pass


def _run(gen, prompt, **kw):
    g = gen.start(prompt, max_new_tokens=NEW, sampling=SamplingParams.greedy(), stop_token_ids=(), **kw)
    return list(g.tokens()), g.stats


@pytest.mark.parametrize("arch,draft_arch", [("qwen2", "qwen35"), ("qwen35", "qwen2")])
def test_greedy_output_is_identical_for_every_drafter(bundles, monkeypatch, arch, draft_arch):
    """50 prompts of each workload, n-gram / draft bundle / a drafter that is wrong at every position; a
    hybrid target (state restored on rejection) and a hybrid draft bundle (state restored before drafting). The
    target is built for exact speculation; test_verify_pass_is_bit_identical_to_one_token_steps says why."""
    gen = Generator(Model(bundles(arch, "int4", exact_speculation=True)))
    draft = bundles(draft_arch, "fp32")
    same_tokenizer = Model(draft).tokenizer.get_vocab() == gen.model.tokenizer.get_vocab()
    assert same_tokenizer
    for name, prompts in _workloads(gen.model.vocab_size).items():
        plain = {tuple(p): _run(gen, p)[0] for p in prompts}
        accepted = rejected = 0
        for p in prompts:
            for spec in ["ngram"] + ([f"draft:{draft}"] if same_tokenizer else []):
                tokens, stats = _run(gen, p, speculative=spec)
                assert tokens == plain[tuple(p)], (name, spec, p)
                accepted += stats.accepted_tokens
                rejected += stats.draft_tokens - stats.accepted_tokens
        oracle = OracleDrafter(plain, gen.model.vocab_size, wrong=3)
        monkeypatch.setattr(generator_mod, "make_drafter", lambda *a: oracle)
        for p in prompts:
            tokens, stats = _run(gen, p, speculative="ngram")
            assert tokens == plain[tuple(p)], (name, "oracle", p)
            accepted += stats.accepted_tokens
            rejected += stats.draft_tokens - stats.accepted_tokens
        monkeypatch.undo()
        assert accepted > 100 and rejected > 20, (accepted, rejected)  # both paths ran


class TimedOracle(OracleDrafter):
    """Always right, and `seconds` per guess by its own account (a draft model's measured time)."""

    def __init__(self, reference, vocab, seconds):
        super().__init__(reference, vocab, wrong=10**9)
        self.seconds = seconds

    def cost(self, k):
        return self.seconds * k


@pytest.mark.parametrize("seconds,most_drafted", [(1.0, False), (0.0, True)])
def test_a_draft_model_is_judged_by_its_time(bundles, monkeypatch, seconds, most_drafted):
    """A draft model whose every guess is right but costs more than a step rests (mostly plain steps); a
    free one drafts throughout. Output is plain decoding's either way."""
    gen = Generator(Model(bundles("qwen2", "int4", exact_speculation=True)))
    prompt = _workloads(gen.model.vocab_size)["edit"][0]
    run = dict(max_new_tokens=200, sampling=SamplingParams.greedy(), stop_token_ids=())
    plain = list(gen.start(prompt, **run).tokens())
    drafter = TimedOracle({tuple(prompt): plain}, gen.model.vocab_size, seconds)
    monkeypatch.setattr(generator_mod, "make_drafter", lambda *a: drafter)
    g = gen.start(prompt, speculative=Speculative(method="draft", draft_bundle="timed", max_draft=4), **run)
    assert list(g.tokens()) == plain
    assert (g.stats.accepted_tokens > 150) is most_drafted, g.stats


def test_forced_tokens_drop_unyielded_guesses(bundles, monkeypatch):
    """force() between tokens (the thinking budget) gives what plain decoding gives with the same forcing,
    also when verified guesses were waiting (a hybrid model restores its state for that)."""
    for arch in ("qwen2", "qwen35"):
        gen = Generator(Model(bundles(arch, "int4")))
        prompt = [5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]
        plain = _run(gen, prompt)[0]
        oracle = OracleDrafter({tuple(prompt): plain}, gen.model.vocab_size, wrong=10**9)
        monkeypatch.setattr(generator_mod, "make_drafter", lambda *a: oracle)
        runs = []
        for spec in (None, "ngram"):
            g = gen.start(prompt, max_new_tokens=NEW, sampling=SamplingParams.greedy(), stop_token_ids=(),
                          speculative=spec)
            out = []
            for tok in g.tokens():
                out.append(tok)
                if len(out) == 3:
                    g.force([11, 12])
            runs.append((out, g.stats.accepted_tokens))
        monkeypatch.undo()
        assert runs[0][0] == runs[1][0]
        assert runs[1][1] > 0


def _chi_square_same(a: np.ndarray, b: np.ndarray) -> float:
    """p-value that two count vectors come from one distribution (chi-square test of homogeneity)."""
    from scipy.stats import chi2_contingency

    keep = (a + b) > 0
    return float(chi2_contingency(np.stack([a[keep], b[keep]]))[1])


def test_verify_draft_keeps_the_sampling_distribution():
    vocab = 6
    logits = np.array([2.0, 1.5, 1.0, 0.2, -1.0, -3.0], np.float32)
    params = SamplingParams(do_sample=True, temperature=0.9, top_k=5, seed=3)
    n = 20000
    plain, spec = np.zeros(vocab), np.zeros(vocab)
    s1, s2 = Sampler(params, vocab), Sampler(SamplingParams(do_sample=True, temperature=0.9, top_k=5, seed=4), vocab)
    for i in range(n):
        plain[s1(logits)] += 1
        spec[s2.verify_draft(logits, i % vocab)] += 1  # every guess, likely or not (5 is outside top-k)
    assert spec[5] == 0
    assert _chi_square_same(plain, spec) > 1e-3
    # and the test can fail: the draft accepted outright shifts the distribution
    biased = plain.copy()
    biased[1] += 2000
    assert _chi_square_same(plain, biased) < 1e-6


def test_sampled_generation_distribution_matches_plain(bundles, monkeypatch):
    """The first three sampled tokens over many seeds, plain vs speculative (guesses right and wrong), on a
    vocabulary cut to 4 tokens per step by top_k."""
    gen = Generator(Model(bundles("qwen2", "int4")))
    prompt = [5, 6, 7, 8, 5, 6, 7]
    params = lambda seed: SamplingParams(do_sample=True, temperature=1.5, top_k=4, seed=seed)
    oracle = ArgmaxDrafter(gen.model)
    counts = []
    for spec in (None, "ngram"):
        if spec:
            monkeypatch.setattr(generator_mod, "make_drafter", lambda *a: oracle)
        seen: dict[tuple, int] = {}
        for seed in range(1500):
            g = gen.start(prompt, max_new_tokens=3, sampling=params(seed + 100000 * bool(spec)), stop_token_ids=(),
                          speculative=spec)
            key = tuple(g.tokens())
            seen[key] = seen.get(key, 0) + 1
        counts.append(seen)
    monkeypatch.undo()
    keys = sorted(set(counts[0]) | set(counts[1]))
    a = np.array([counts[0].get(k, 0) for k in keys], float)
    b = np.array([counts[1].get(k, 0) for k in keys], float)
    # pool rare outcomes so that every cell has a usable expected count
    rare = (a + b) < 20
    a = np.append(a[~rare], a[rare].sum())
    b = np.append(b[~rare], b[rare].sum())
    assert oracle.calls > 1000
    assert _chi_square_same(a, b) > 1e-3


def test_ngram_drafter_proposes_what_followed_the_latest_match():
    d = NgramDrafter(2, 3)
    assert d.propose([1, 2, 3, 4, 9, 2, 3], 3) == [4, 9, 2]
    assert d.propose([1, 2, 3, 4, 9, 2, 3, 7, 1, 2], 2) == [3, 4]
    assert d.propose([1, 2, 3, 4, 9, 2, 3, 7, 1, 2, 3], 4) == [4, 9, 2, 3]  # the longest match first
    assert d.propose([1, 2, 3, 4, 9, 2, 3, 7, 1, 2, 3, 8, 2, 3], 3) == [8, 2, 3]  # the latest of its matches
    assert d.propose([5, 6, 7], 2) == []  # another sequence: the index starts over


def test_draft_length_adapts_and_cools_down():
    length = DraftLength(Speculative(initial_draft=4, max_draft=8, cooldown_after=2, cooldown_steps=3))
    assert length.want() == 4
    length.update(4, 4)
    assert length.want() == 8
    length.update(8, 2)
    assert length.want() == 3
    length.update(3, 0)
    length.update(1, 0)  # two misses in a row: rest 3 steps, then draft again
    assert [length.want() for _ in range(4)] == [0, 0, 0, 1]
    length.update(1, 0)  # one fruitless probe after a rest: the next rest, twice as long
    assert [length.want() for _ in range(7)] == [0] * 6 + [1]
    length.update(1, 1)  # a guess accepted: back to two misses before a rest of 3
    length.update(2, 0)
    assert length.want() == 1
    length.update(1, 0)
    assert [length.want() for _ in range(4)] == [0, 0, 0, 1]


def test_speculative_settings_are_checked(bundles, qwen35_ckpts):
    assert Speculative.parse("ngram").method == "ngram"
    assert Speculative.parse("draft:/x").draft_bundle == "/x"
    for bad, field in [("beam", "method"), ("draft", "draft_bundle"), ("ngram:3", "no argument"), (3, "str")]:
        with pytest.raises(InvalidRequestError, match=field):
            Speculative.parse(bad)
    with pytest.raises(InvalidRequestError, match="max_draft"):
        Speculative(max_draft=0)
    gen = Generator(Model(bundles("qwen2", "int4")))
    with pytest.raises(InvalidRequestError, match="MTP"):
        gen.start([5, 6], speculative="mtp")
    other = Model(bundles("qwen3", "int4"))  # reasoning tokens added: another vocabulary
    if other.tokenizer.get_vocab() != gen.model.tokenizer.get_vocab():
        with pytest.raises(InvalidRequestError, match="tokenizer.json"):
            DraftModelDrafter(other, gen.model)


def test_hybrid_draft_bundle_restores_its_state(bundles):
    """A Qwen3.5 (hybrid) bundle as the drafter: its guesses after a rollback are those of a fresh run."""
    draft = Model(bundles("qwen35", "int4"))
    d = DraftModelDrafter(draft, draft)
    history = [5, 6, 7, 8, 9]
    assert d.cost(3) is None  # not measured before its first proposal
    first = d.propose(history, 4)
    assert d.cost(3) > 0
    history += first[:2] + [11]  # two guesses verified, then another token
    assert d.propose(history, 3) == DraftModelDrafter(draft, draft).propose(history, 3)
    d.close()


def test_draft_length_counts_the_drafters_time():
    spec = Speculative(max_draft=4, cooldown_steps=2)
    slow = DraftLength(spec, lambda n: 1.0, lambda k: 5.0 * k)  # right, but 5 passes' time per guess
    slow.update(2, 2)
    assert [slow.want() for _ in range(2)] == [0, 0]  # rests, though every guess was accepted
    assert slow.want() > 0  # the probe after the rest
    slow.update(4, 4)  # right again, still too slow: the next rest is twice as long
    assert [slow.want() for _ in range(4)] == [0, 0, 0, 0]
    assert slow.want() > 0
    fast = DraftLength(spec, lambda n: 1.0, lambda k: 0.01 * k)
    fast.update(2, 2)
    assert fast.want() == 4
    unmeasured = DraftLength(spec, lambda n: 1.0, lambda k: None)  # no drafting time yet: tried
    unmeasured.update(2, 2)
    assert unmeasured.want() == 4


def test_a_draft_bundles_memory_carries_over_to_the_next_generation():
    """What a generation learnt of a slow draft model holds for the next one: it rests from its first token
    (no catch-up of the prompt on the draft model), for longer than the last rest."""
    spec = Speculative(max_draft=4, cooldown_steps=2)
    memory = DraftMemory()
    first = DraftLength(spec, lambda n: 1.0, lambda k: 5.0 * k, memory)
    first.update(2, 2)
    assert first.want() == 0  # rests 2
    second = DraftLength(spec, lambda n: 1.0, lambda k: 5.0 * k, memory)
    assert [second.want() for _ in range(4)] == [0, 0, 0, 0]  # rests 4 at once
    assert second.want() > 0
    fresh = DraftLength(spec, lambda n: 1.0, lambda k: 5.0 * k)  # no memory: drafts first, to measure
    assert fresh.want() == 2


def test_generator_loads_a_draft_bundle_once_without_spinning_threads(bundles):
    gen = Generator(Model(bundles("qwen2", "int4", exact_speculation=True)))
    draft = str(bundles("qwen35", "fp32"))
    for _ in range(2):
        _run(gen, [5, 6, 7, 5, 6, 7, 5], speculative=f"draft:{draft}")
    (model, memory), = gen._draft_models.values()
    assert memory.same_vocabulary and memory.per_guess > 0 and memory.pass_runs
    assert model.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_cost_aware_draft_length_follows_the_measured_pass_costs():
    spec = Speculative(max_draft=8, cooldown_steps=3, adapt="cost")
    flat = DraftLength(spec, lambda n: 1.0)  # a pass costs the same for any length: draft the most
    flat.update(4, 4)
    assert flat.want() == 8
    linear = DraftLength(spec, lambda n: float(n))  # n tokens cost n steps: a guess never pays
    linear.update(4, 1)
    assert [linear.want() for _ in range(3)] == [0, 0, 0]
    assert linear.want() > 0  # after the rest, one probe
    unmeasured = DraftLength(spec, lambda n: 1.0 if n == 1 else None)
    unmeasured.update(2, 2)
    assert unmeasured.want() == 8  # lengths not measured yet look as cheap as a step: tried
