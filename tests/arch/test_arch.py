"""The architecture registry, config dialects and RoPE scaling against transformers."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_edge.arch import adapter_for, supported_architectures
from qwen_edge.arch.base import rope_from_config
from qwen_edge.errors import CheckpointError, UnsupportedArchitectureError
from qwen_edge.checkpoint.tiny import TINY_QWEN2, TINY_QWEN3

from tests.conftest import TINY_CONFIGS


def test_every_registered_architecture_has_a_tiny_test_model():
    assert sorted(TINY_CONFIGS) == supported_architectures()


def test_unknown_architecture_lists_the_supported_ones():
    with pytest.raises(UnsupportedArchitectureError) as err:
        adapter_for("LlamaForCausalLM")
    message = str(err.value)
    assert "LlamaForCausalLM" in message
    for name in supported_architectures():
        assert name in message


def test_transformers_4_and_5_config_dialects_give_the_same_spec():
    v4 = dict(TINY_QWEN2, rope_theta=1e6, rope_scaling={"type": "yarn", "factor": 4.0,
                                                         "original_max_position_embeddings": 64})
    v5 = {k: v for k, v in TINY_QWEN2.items() if k not in ("rope_theta", "torch_dtype")}
    v5 |= {"dtype": "float32", "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
                                                    "original_max_position_embeddings": 64}}
    a = adapter_for("Qwen2ForCausalLM")
    assert a.spec(v4, "Qwen2ForCausalLM") == a.spec(v5, "Qwen2ForCausalLM")


def test_qwen3_spec_reads_head_dim_and_has_qk_norm_without_bias():
    spec = adapter_for("Qwen3ForCausalLM").spec(TINY_QWEN3, "Qwen3ForCausalLM")
    assert spec.head_dim == 32 != spec.hidden_size // spec.num_heads
    assert spec.qk_norm and not spec.attention_bias and not spec.tie_word_embeddings


def test_yarn_without_beta_uses_documented_defaults():
    rope = rope_from_config({"rope_theta": 1e6, "rope_scaling": {"type": "yarn", "factor": 4.0,
                                                                  "original_max_position_embeddings": 32768}}, 128)
    assert (rope.rope_type, rope.beta_fast, rope.beta_slow, rope.factor) == ("yarn", 32.0, 1.0, 4.0)


@pytest.mark.parametrize("bad,key", [
    ({"num_attention_heads": 5}, "num_key_value_heads"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"rope_scaling": {"type": "longrope", "factor": 2.0}}, "longrope"),
    ({"rope_scaling": {"type": "linear"}}, "factor"),
    ({"vocab_size": "big"}, "vocab_size"),
])
def test_bad_configs_name_the_key(bad, key):
    with pytest.raises(CheckpointError, match=key):
        adapter_for("Qwen2ForCausalLM").spec(dict(TINY_QWEN2) | bad, "Qwen2ForCausalLM")


ROPE_CASES = {
    "linear": {"rope_type": "linear", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
             "beta_fast": 16.0, "beta_slow": 2.0},
    "yarn-qwen-documented": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
}


@pytest.mark.parametrize("case", sorted(ROPE_CASES))
def test_rope_scaling_matches_transformers_through_the_cache(case, tmp_path):
    from qwen_edge.build import BuildRequest, build
    from qwen_edge.precision import Precision
    from qwen_edge.runtime import Model
    from qwen_edge.verify.executor import cached_path_logits

    from tests.conftest import hf_logits_incremental, make_hf_checkpoint

    # A 16-token native context so that 24 positions run well into the scaled range.
    config = dict(TINY_QWEN2, max_position_embeddings=16, rope_scaling=dict(ROPE_CASES[case]))
    ckpt = make_hf_checkpoint(tmp_path / "ckpt", config, seed=3)
    build(BuildRequest(ckpt, tmp_path / "bundle", Precision(), options=_options(64)))
    ids = np.arange(3, 3 + 24, dtype=np.int64) * 7 % 380
    expected = hf_logits_incremental(ckpt, ids, prefill=8)
    got = cached_path_logits(Model(tmp_path / "bundle"), ids, prefill=8)
    assert np.abs(got - expected).max() <= 1e-3


def _options(max_positions):
    from qwen_edge.graph.decoder import DecoderOptions

    return DecoderOptions(max_positions=max_positions)
