"""Speculative decoding on the trained checkpoints: the code-edit workload of benchmarks/speculative.py.

The bundles are the default int4 recipe (accuracy_level 4) built with exact speculation: without the spare
attention row a one-token step and a multi-token pass differ by up to 0.21 in the logits of qwen2-code-30m
(tests/graph/test_spare_row.py says why), which flips near-ties; benchmarks/results/speculative-gap-*.json
record how often.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from qwen_edge.build import BuildRequest, build
from qwen_edge.graph.decoder import DecoderOptions
from qwen_edge.precision import Precision
from qwen_edge.runtime import Generator, Model, SamplingParams

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _workloads(heldout, model, n):
    sys.path.insert(0, str(BENCH))
    try:
        import speculative
    finally:
        sys.path.remove(str(BENCH))
    return speculative.workloads(heldout, model.encode, n)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["trained_model", "trained_qwen35"])
def test_code_edit_greedy_identical_and_accepted(request, tmp_path, which):
    ckpt = request.getfixturevalue(which)
    out = tmp_path / "b"
    build(BuildRequest(ckpt, out, Precision.preset("int4"), options=DecoderOptions(exact_speculation=True)))
    gen = Generator(Model(out))
    prompts = _workloads(ckpt / "heldout.py.txt", gen.model, 50)["code-edit"][::5]  # 10 of the 50
    accepted = drafted = 0
    for p in prompts:
        ids = gen.model.encode(p["prompt"])
        kw = dict(max_new_tokens=min(p["max_new_tokens"], 64), sampling=SamplingParams.greedy(), stop_token_ids=())
        plain = list(gen.start(ids, **kw).tokens())
        g = gen.start(ids, speculative="ngram", **kw)
        assert list(g.tokens()) == plain, p["prompt"][-80:]
        accepted += g.stats.accepted_tokens
        drafted += g.stats.draft_tokens
    assert drafted and accepted / drafted > 0.5, (accepted, drafted)
