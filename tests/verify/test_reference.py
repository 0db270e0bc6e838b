"""The numpy reference (what `qwen-edge demo` and `verify` use where torch is absent) against
transformers, for every registered architecture."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_edge.arch import supported_architectures
from qwen_edge.verify.reference import NumpyReference, make_reference
from tests.conftest import TINY_CONFIGS, hf_logits_incremental

IDS = np.array([5, 17, 42, 99, 3, 250, 7, 8, 120, 64, 33, 301, 2, 77, 150, 11, 19, 260], dtype=np.int64)
FIXTURES = {"Qwen2ForCausalLM": "qwen2_ckpt", "Qwen3ForCausalLM": "qwen3_ckpt",
            "Qwen2MoeForCausalLM": "qwen2_moe_ckpt", "Qwen3MoeForCausalLM": "qwen3_moe_ckpt",
            "Qwen3_5ForCausalLM": ("dense", "causal"), "Qwen3_5ForConditionalGeneration": ("dense", "multimodal"),
            "Qwen3_5MoeForCausalLM": ("moe", "causal"), "Qwen3_5MoeForConditionalGeneration": ("moe", "multimodal"),
            "Qwen3NextForCausalLM": "qwen3_next_ckpt",
            "Qwen2_5_VLForConditionalGeneration": "qwen25vl_ckpt", "Qwen3VLForConditionalGeneration": "qwen3vl_ckpt"}  # text-only prompt: M-RoPE rows all equal


def checkpoint_for(architecture: str, request):
    fixture = FIXTURES[architecture]
    if isinstance(fixture, tuple):
        return request.getfixturevalue("qwen35_ckpts")(*fixture)
    return request.getfixturevalue(fixture)


def test_every_architecture_is_checked_here():
    assert set(FIXTURES) == set(supported_architectures()) == set(TINY_CONFIGS)


@pytest.mark.parametrize("architecture", sorted(FIXTURES))
def test_numpy_reference_matches_transformers(architecture, request):
    ckpt = checkpoint_for(architecture, request)
    expected = hf_logits_incremental(ckpt, IDS, len(IDS))
    reference = NumpyReference(ckpt)
    try:
        got = reference.logits(IDS)
    finally:
        reference.close()
    assert expected.std() > 0.5  # far from flat logits: agreement means something
    assert np.abs(got - expected).max() <= 1e-4
    np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))


def test_make_reference_names_the_kinds(qwen2_ckpt):
    from qwen_edge.errors import ConfigError

    assert make_reference("numpy", qwen2_ckpt).name == "numpy-float64"
    assert make_reference("transformers", qwen2_ckpt).name == "transformers"
    with pytest.raises(ConfigError, match="unknown kind 'torch'"):
        make_reference("torch", qwen2_ckpt)
