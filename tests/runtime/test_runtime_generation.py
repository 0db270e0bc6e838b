"""The runtime's generation loop: greedy decoding, stops, limits, streaming, chat, bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from qwen_edge.runtime import (ContextOverflowError, Generator, InvalidRequestError, Model, SamplingParams, load)
from qwen_edge.verify.executor import cached_path_logits


@pytest.mark.parametrize("arch", ["qwen2", "qwen35", "qwen35_moe"])
def test_greedy_generation_follows_the_logits(bundles, arch):
    model = Model(bundles(arch, "fp32"))
    gen = Generator(model)
    prompt = model.encode("def fibonacci(n):")
    result = gen.generate(prompt, max_new_tokens=12, stop_token_ids=())
    assert len(result.token_ids) == 12 and result.stats.finish_reason == "length"
    full = np.concatenate([prompt, result.token_ids])
    logits = model.logits(full)
    expected = logits[len(prompt) - 1:-1].argmax(-1)
    np.testing.assert_array_equal(result.token_ids, expected)
    assert result.text == model.decode(result.token_ids)


def test_stops_on_any_eos_id(bundles):
    model = Model(bundles("qwen2", "fp32"))
    gen = Generator(model)
    prompt = model.encode("class Stack:")
    free = gen.generate(prompt, max_new_tokens=6, stop_token_ids=())
    stop = free.token_ids[3]
    result = gen.generate(prompt, max_new_tokens=6, stop_token_ids=(12345, stop))
    assert result.token_ids == free.token_ids[:free.token_ids.index(stop)]
    assert result.stats.finish_reason == "eos"


@pytest.mark.parametrize("arch", ["qwen3", "qwen35"])
def test_streaming_pieces_concatenate_to_the_text(bundles, arch):
    gen = load(bundles(arch, "int4"))
    pieces = list(gen.stream("print(", max_new_tokens=20, stop_token_ids=()))
    whole = gen.generate("print(", max_new_tokens=20, stop_token_ids=())
    assert "".join(pieces) == whole.text


def test_sampling_is_seeded_and_reproducible(bundles):
    gen = load(bundles("qwen2", "int4"))
    params = SamplingParams(do_sample=True, temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.1, seed=7)
    a = gen.generate("def f(x):", max_new_tokens=16, sampling=params, stop_token_ids=())
    b = gen.generate("def f(x):", max_new_tokens=16, sampling=params, stop_token_ids=())
    assert a.token_ids == b.token_ids


def test_chat_template_with_extra_variables(bundles):
    gen = load(bundles("qwen2", "fp32"))
    text = gen.render_chat([{"role": "user", "content": "hi"}], enable_thinking=False)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<think>\n\n</think>\n\n")
    result = gen.chat([{"role": "user", "content": "hi"}], max_new_tokens=4)
    assert result.stats.prompt_tokens > 10


@pytest.mark.parametrize("kwargs,error", [
    (dict(prompt=""), InvalidRequestError),
    (dict(prompt=[1, 2, 99999]), InvalidRequestError),
    (dict(prompt=[1, -2]), InvalidRequestError),
    (dict(max_new_tokens=0), InvalidRequestError),
    (dict(max_new_tokens=-5), InvalidRequestError),
    (dict(max_new_tokens=10**9), InvalidRequestError),
    (dict(max_new_tokens=255), ContextOverflowError),
    (dict(prompt=list(range(1, 300))), ContextOverflowError),
])
def test_bad_requests_raise_typed_errors(kwargs, error, bundles):
    gen = load(bundles("qwen2", "fp32"))
    args = dict(prompt="def f():", max_new_tokens=8) | kwargs
    with pytest.raises(error):
        gen.generate(args.pop("prompt"), **args)


def test_context_overflow_message_gives_the_numbers(bundles):
    gen = load(bundles("qwen2", "fp32"))
    with pytest.raises(ContextOverflowError, match="256"):
        gen.generate("def f():", max_new_tokens=255)


@pytest.mark.parametrize("arch", ["qwen2", "qwen35"])
def test_a_reused_cache_starts_empty(bundles, arch):
    # A hybrid cache also carries conv and recurrent states: a generation after another must not
    # see what the first left in them.
    first = Generator(Model(bundles(arch, "int4")))
    first.generate("class Stack:", max_new_tokens=8, stop_token_ids=())
    again = first.generate("def fibonacci(n):", max_new_tokens=8, stop_token_ids=()).token_ids
    fresh = Generator(Model(bundles(arch, "int4"))).generate("def fibonacci(n):", max_new_tokens=8,
                                                                stop_token_ids=()).token_ids
    assert again == fresh


def test_kv_cache_is_reused_across_generations(bundles):
    model = Model(bundles("qwen2", "fp32"))
    gen = Generator(model)
    gen.generate("a", max_new_tokens=2)
    cache = model.acquire_cache()
    model.release_cache(cache)
    gen.generate("b", max_new_tokens=2)
    again = model.acquire_cache()
    assert again is cache


def test_runtime_imports_without_torch_transformers_or_onnx(bundles):
    bundle = bundles("qwen2", "int4")
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'transformers', 'onnx', 'safetensors', 'olive', 'optimum'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        from qwen_edge.runtime import load
        gen = load({str(bundle)!r})
        out = gen.generate('def f(x):', max_new_tokens=4, stop_token_ids=())
        assert len(out.token_ids) == 4
        heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'onnx'))
        assert not heavy, heavy
        print('ok')
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_decode_path_matches_prefill_in_fp16(bundles):
    model = Model(bundles("qwen3", "fp16"))
    ids = np.arange(2, 20, dtype=np.int64)
    assert np.abs(model.logits(ids) - cached_path_logits(model, ids, prefill=3)).max() < 5e-2
