"""Qwen3-Next: Qwen3.5-MoE's graph built from fused linear-attention projections (read as row views),
with a layer kept dense, against transformers through the prefill and 16 decode steps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qwen_edge.arch import adapter_for
from qwen_edge.arch.qwen3_next import fused_row_order
from qwen_edge.build import BuildRequest, build
from qwen_edge.precision import Precision
from qwen_edge.runtime import Model
from qwen_edge.verify.executor import cached_path_logits
from tests.conftest import assert_logits_match, hf_logits_incremental

IDS = np.array([5, 17, 42, 99, 3, 250, 7, 8, 120, 64, 33, 301, 2, 77, 150, 11, 19, 260, 31, 44, 200, 9], np.int64)
PREFILL = 6  # then 16 decode steps


@pytest.fixture(scope="module")
def bundles(qwen3_next_ckpt, tmp_path_factory):
    made = {}

    def get(precision: str):
        if precision not in made:
            out = tmp_path_factory.mktemp(f"qwen3-next-{precision}") / "bundle"
            build(BuildRequest(qwen3_next_ckpt, out, Precision.preset(precision)))
            made[precision] = out
        return made[precision]

    return get


def test_fp32_bundle_matches_transformers_prefill_and_16_decode_steps(qwen3_next_ckpt, bundles):
    expected = hf_logits_incremental(qwen3_next_ckpt, IDS, PREFILL)
    got = cached_path_logits(Model(bundles("fp32")), IDS, prefill=PREFILL)
    assert_logits_match(got, expected, PREFILL)


def test_the_row_views_are_transformers_split_of_the_fused_projections(qwen3_next_ckpt):
    """fused_row_order against Qwen3NextGatedDeltaNet.fix_query_key_value_ordering on row numbers."""
    import torch
    from transformers import AutoConfig
    from transformers.models.qwen3_next.modeling_qwen3_next import (
        Qwen3NextGatedDeltaNet,
    )

    config = AutoConfig.from_pretrained(qwen3_next_ckpt)
    net = Qwen3NextGatedDeltaNet(config, layer_idx=0)
    qkvz_rows = net.in_proj_qkvz.out_features
    ba_rows = net.in_proj_ba.out_features
    q, k, v, z, b, a = net.fix_query_key_value_ordering(torch.arange(qkvz_rows, dtype=torch.float64)[None, None],
                                                          torch.arange(ba_rows, dtype=torch.float64)[None, None])
    spec = adapter_for("Qwen3NextForCausalLM").spec(config.to_dict(), "Qwen3NextForCausalLM")
    order = fused_row_order(spec.hybrid.linear)
    flat = [t.reshape(-1).to(torch.int64).numpy() for t in (q, k, v, z, b, a)]
    np.testing.assert_array_equal(order["in_proj_qkv"][1], np.concatenate(flat[:3]))
    np.testing.assert_array_equal(order["in_proj_z"][1], flat[3])
    np.testing.assert_array_equal(order["in_proj_b"][1], flat[4])
    np.testing.assert_array_equal(order["in_proj_a"][1], flat[5])


def test_int4_bundle_builds_with_dense_and_sparse_layers_and_runs_close_to_fp32(bundles):
    manifest = json.loads((bundles("int4") / "manifest.json").read_text())
    assert manifest["architecture"]["moe"]["sparse_layers"] == [0, 2, 3, 4]
    assert "left_out" not in manifest["source"]  # the fused tensors were read in full
    fp32 = cached_path_logits(Model(bundles("fp32")), IDS, prefill=PREFILL)
    int4 = cached_path_logits(Model(bundles("int4")), IDS, prefill=PREFILL)
    assert np.corrcoef(fp32.reshape(-1), int4.reshape(-1))[0, 1] > 0.9
