"""fp32 bundles against transformers on the same weights, through prefill and the KV cache."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_edge.runtime import Model
from qwen_edge.verify.executor import cached_path_logits

from tests.conftest import assert_logits_match, hf_logits_incremental

IDS = np.array([5, 17, 42, 99, 3, 250, 7, 8, 120, 64, 33, 301, 2, 77, 150, 11, 19, 260], dtype=np.int64)
PREFILL = 6  # then 12 decode steps through the cache


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_fp32_bundle_matches_transformers_prefill_and_decode(arch, bundles, qwen2_ckpt, qwen3_ckpt):
    ckpt = {"qwen2": qwen2_ckpt, "qwen3": qwen3_ckpt}[arch]
    model = Model(bundles(arch, "fp32"))
    expected = hf_logits_incremental(ckpt, IDS, PREFILL)
    got = cached_path_logits(model, IDS, prefill=PREFILL)
    assert got.shape == (len(IDS), model.vocab_size)
    assert_logits_match(got, expected, PREFILL)


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_full_forward_equals_cached_forward(arch, bundles):
    model = Model(bundles(arch, "fp32"))
    full = model.logits(IDS)
    cached = cached_path_logits(model, IDS, prefill=1)
    assert np.abs(full - cached).max() <= 1e-4


@pytest.mark.parametrize("precision,min_top1,max_kl", [("fp16", 0.95, 5e-3), ("int8", 0.9, 2e-2), ("int4", 0.5, 0.5)])
@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_lower_precisions_run_on_cpu_and_stay_close(arch, precision, min_top1, max_kl, bundles):
    from qwen_edge.verify.metrics import compare_logits

    reference = Model(bundles(arch, "fp32"))
    model = Model(bundles(arch, precision))
    seqs = [IDS, IDS[::-1].copy(), (IDS * 7) % 380]
    report = compare_logits(lambda ids: cached_path_logits(model, ids, prefill=4), reference.logits, seqs)
    # Random tiny models are the worst case for 4-bit weights (no outlier structure, 2 blocks per row);
    # a packing or layout bug gives chance level (1/384) instead.
    assert report.top1_agreement >= min_top1, report
    assert report.kl_divergence_mean <= max_kl, report
