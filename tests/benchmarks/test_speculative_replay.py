"""benchmarks/speculative_replay.py: the runtime's speculative loop replayed on recorded greedy outputs and
pass costs. The clock must charge what the loop runs (a flat cost rewards guessing, a cost per token never
does), the stand-in model must catch a loop that leaves the greedy path, and pass costs come from a real
bundle."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

# a prompt that the continuation copies (prompt lookup guesses it), then strays from
PROMPT = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 3, 4]
TOKENS = [5, 6, 7, 8, 9, 10, 11, 20, 21, 13, 14, 15, 16, 17, 22, 23, 24, 25]


@pytest.fixture(scope="module")
def replay_module():
    sys.path[:0] = [str(BENCH)]
    try:
        import speculative_replay
        yield speculative_replay
    finally:
        del sys.path[:1]


def _record(costs, hybrid=False):
    return {"vocab_size": 32, "hybrid": hybrid, "pass_cost_ms": {str(n): costs(n) for n in range(1, 35)},
            "runs": {"code-edit": [{"prompt": PROMPT, "tokens": TOKENS}]}}


def test_the_clock_charges_each_pass_its_recorded_cost(replay_module):
    from qwen_edge.runtime import Speculative

    spec = Speculative()
    flat = replay_module.replay(_record(lambda n: 1.0), spec)["code-edit"]
    assert flat["verify_passes"] > 0 and flat["accepted_tokens"] > 0
    assert flat["plain_ms"] == len(TOKENS) - 1
    assert flat["speedup_vs_plain"] > 1.5  # a pass over many tokens costs one step: accepted guesses are free
    per_token = replay_module.replay(_record(lambda n: float(n)), spec)["code-edit"]
    assert per_token["verify_passes"] == flat["verify_passes"]  # the same loop, another clock
    assert per_token["speedup_vs_plain"] < 1.0  # every token fed costs a step: rejected guesses only lose


def test_a_hybrid_rollback_feeds_the_accepted_tokens_again(replay_module):
    from qwen_edge.runtime import Speculative

    spec = Speculative()
    kv = replay_module.replay(_record(lambda n: float(n)), spec)["code-edit"]
    hybrid = replay_module.replay(_record(lambda n: float(n), hybrid=True), spec)["code-edit"]
    assert hybrid["speculative_ms"] > kv["speculative_ms"]  # the re-fed tokens are on the clock


def test_the_stand_in_model_catches_a_loop_off_the_greedy_path(replay_module):
    model = replay_module.ReplayModel(_record(lambda n: 1.0))
    cache = model.acquire_cache()
    rows = model.step(cache, np.asarray(PROMPT), None)
    assert int(np.argmax(rows[-1])) == TOKENS[0] and model.clock == 0.0  # the prompt is off the clock
    model.step(cache, np.asarray(TOKENS[:3]), None)
    assert model.clock == 1.0 and cache.length == len(PROMPT) + 3
    with pytest.raises(AssertionError, match="position"):
        model.step(cache, np.asarray([TOKENS[4]]), None)  # skips TOKENS[3]


def test_pass_costs_time_every_length_on_a_bundle(replay_module, bundles):
    from qwen_edge.runtime import Model

    model = Model(bundles("qwen35", "int4"))
    costs = replay_module.pass_costs(model, 3, repeats=2, prompt_tokens=8)
    assert sorted(costs) == [1, 2, 3] and all(ms > 0 for ms in costs.values())
