"""benchmarks/make_checkpoint.py's Qwen2.5-VL shape, at a tiny size: every tensor transformers' module
has, a checkpoint our adapter accepts and transformers loads, tied head left out."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from qwen_edge.checkpoint.tiny import TINY_QWEN25_VL

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def make_checkpoint():
    sys.path.insert(0, str(BENCH))
    try:
        import make_checkpoint
        yield make_checkpoint
    finally:
        sys.path.remove(str(BENCH))


def test_vl_shape_is_a_checkpoint_ours_and_transformers_read(make_checkpoint, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from qwen_edge.arch import adapter_for
    from qwen_edge.checkpoint import Checkpoint

    text = dict(TINY_QWEN25_VL["text_config"], hidden_act="silu", tie_word_embeddings=True)
    n = make_checkpoint.qwen25_vl(tmp_path, 0, Path("unused"), text=text, vision=TINY_QWEN25_VL["vision_config"])
    with Checkpoint.open(tmp_path) as ckpt:
        adapter = adapter_for(ckpt.architecture)
        spec = adapter.spec(ckpt.config, ckpt.architecture)
        adapter.use_layout(ckpt.has).check_tensors(ckpt, spec)
        assert not ckpt.has("lm_head.weight") and spec.tie_word_embeddings
        embed = ckpt.read("model.language_model.embed_tokens.weight")
        assert 0.01 < float(np.std(embed)) < 0.03
        assert 0.9 < float(np.mean(ckpt.read("model.language_model.norm.weight"))) < 1.1
        assert np.abs(ckpt.read("model.language_model.layers.0.self_attn.q_proj.bias")).max() > 0
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tmp_path), dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == n
    assert model.config.image_token_id == ckpt.config["image_token_id"]
