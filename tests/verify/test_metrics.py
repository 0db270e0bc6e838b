"""The parity and quality metrics every verification reports."""

from __future__ import annotations

import numpy as np

from qwen_edge.verify.metrics import perplexity, text_parity


def test_text_parity_scores_the_same_windows_for_both():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(40, 7))
    noisy = table + rng.normal(size=table.shape) * 0.5
    ids = np.arange(30) % 7
    same = text_parity(lambda x: table[:len(x)], lambda x: table[:len(x)], ids, 10, None)
    assert same["parity"]["top1_agreement"] == 1.0 and abs(same["parity"]["kl_divergence_mean"]) < 1e-12
    assert same["parity"]["positions"] == 30 and same["parity"]["windows"] == 3
    report = text_parity(lambda x: noisy[:len(x)], lambda x: table[:len(x)], ids, 10, None)
    assert report["parity"]["top1_agreement"] < 1.0 and report["parity"]["kl_divergence_mean"] > 0
    expected = perplexity(lambda x: noisy[:len(x)], ids, 10).perplexity
    assert abs(report["candidate"]["perplexity"] - expected) < 1e-9
    assert report["reference"]["perplexity"] == same["reference"]["perplexity"]
