"""Prefill that computes the output head for the last prompt position only (logits_to_keep)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from qwen_edge.runtime import Model


@pytest.mark.parametrize("arch,precision", [("qwen2", "fp32"), ("qwen3", "int4"), ("qwen35", "int4"),
                                            ("qwen35_moe", "fp32")])
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


def test_bundle_without_logits_to_keep_still_generates_the_same_tokens(qwen2_ckpt, bundles, tmp_path):
    """Targets can build without the input; the runtime then computes every prefill row."""
    from qwen_edge.build import BuildRequest, build
    from qwen_edge.graph.decoder import DecoderOptions
    from qwen_edge.precision import Precision
    from qwen_edge.runtime import Generator
    from qwen_edge.runtime.sampling import SamplingParams

    plain = tmp_path / "plain"
    build(BuildRequest(qwen2_ckpt, plain, Precision.preset("fp32"), options=DecoderOptions(logits_to_keep=False)))
    graph = onnx.load(str(plain / "model.onnx"), load_external_data=False).graph
    assert "logits_to_keep" not in {i.name for i in graph.input}
    prompt = np.arange(7, 30, dtype=np.int64)
    runs = []
    for bundle in (plain, bundles("qwen2", "fp32")):
        g = Generator(Model(bundle)).start(prompt, max_new_tokens=6, sampling=SamplingParams(), stop_token_ids=())
        runs.append(list(g.tokens()))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("arch", ["qwen2", "qwen35"])
def test_decode_binds_the_cache_once_per_generation(bundles, monkeypatch, arch):
    from qwen_edge.runtime import Generator
    from qwen_edge.runtime.kv_cache import KVCache
    from qwen_edge.runtime.sampling import SamplingParams

    model = Model(bundles(arch, "int4"))
    prompt = np.arange(5, 17, dtype=np.int64)
    expected = []
    seq = list(prompt)
    for _ in range(6):  # greedy reference from full logits, no cache reuse involved
        token = int(np.argmax(model.logits(np.array(seq))[-1]))
        expected.append(token)
        seq.append(token)
    calls = []
    real = KVCache.bind
    monkeypatch.setattr(KVCache, "bind", lambda self, binding: (calls.append(1), real(self, binding)))
    g = Generator(model).start(prompt, max_new_tokens=6, sampling=SamplingParams(), stop_token_ids=())
    assert list(g.tokens()) == expected
    assert len(calls) == 1
