"""Prefill that computes the output head for the last prompt position only (logits_to_keep)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from qwen_edge.runtime import Model


@pytest.mark.parametrize("arch,precision", [("qwen2", "fp32"), ("qwen3", "int4")])
def test_last_only_prefill_matches_full_logits_and_fills_the_cache(bundles, arch, precision):
    model = Model(bundles(arch, precision))
    ids = np.arange(3, 3 + 24, dtype=np.int64) % model.vocab_size
    full = model.logits(ids)  # every position, through IO binding
    cache = model.acquire_cache()
    mask = np.ones((1, cache.capacity), np.int64)
    prompt, nxt = ids[:-1], ids[-1:]
    last = model.step(cache, prompt, mask, last_only=True)
    assert last.shape == (1, model.vocab_size)
    np.testing.assert_allclose(last[-1], full[len(prompt) - 1], rtol=1e-4, atol=1e-4)
    # The decode step after it reads the keys and values the prefill left in the cache.
    step = model.step(cache, nxt, mask)
    assert cache.length == len(ids)
    np.testing.assert_allclose(step[-1], full[-1], rtol=1e-4, atol=1e-4)


def test_graph_defaults_to_logits_for_every_position(bundles):
    """onnxruntime-genai and verification do not feed logits_to_keep: they must get every row."""
    graph = onnx.load(str(bundles("qwen2", "int4") / "model.onnx"), load_external_data=False).graph
    default = [i for i in graph.initializer if i.name == "logits_to_keep"]
    assert len(default) == 1 and onnx.numpy_helper.to_array(default[0]).tolist() == [0]
    model = Model(bundles("qwen2", "int4"))
    assert model.logits(np.arange(5, 12)).shape == (7, model.vocab_size)
