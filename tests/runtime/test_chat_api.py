"""The app-facing chat API (issue 14): ChatGeneration, results, close(), overflow numbers, sampling defaults."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest

from qwen_edge.errors import BundleError
from qwen_edge.runtime import (ChatDelta, ContextOverflowError, GenerationResult, Generator, InvalidRequestError, Model,
                               SamplingParams, ToolCall, ToolCallDelta, load)

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gen(bundles) -> Generator:
    return load(bundles("qwen3", "fp32"))  # its chat answers vary (the tiny qwen2 one repeats "\n")


def test_tool_call_as_openai():
    call = ToolCall(id="call_1", name="add", arguments='{"a": 1}')
    assert call.as_openai() == {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
    with pytest.raises(AttributeError):
        call.name = "x"  # frozen
    assert ChatDelta().content is None and ToolCallDelta(0, None, None, "x").arguments == "x"


def test_plain_generate_result_is_all_content(gen):
    result = gen.generate("def f(x):", max_new_tokens=5, stop_token_ids=())
    assert result.content == result.text and result.reasoning is None and result.tool_calls == []
    assert result.finish_reason == "length" and result.stats.finish_reason == "length"


@pytest.mark.parametrize("stats, calls, expected", [("eos", False, "stop"), ("eos", True, "tool_calls"),
                                                    ("length", True, "length"), ("cancelled", False, "stop")])
def test_finish_reason_mapping(stats, calls, expected):
    from qwen_edge.runtime.results import GenerationStats

    tool_calls = [ToolCall("c", "f", "{}")] if calls else []
    result = GenerationResult("t", [1], GenerationStats(finish_reason=stats), tool_calls=tool_calls)
    assert result.finish_reason == expected


def test_start_chat_streams_deltas_and_knows_its_prompt_size(gen):
    chat = gen.start_chat(HI, max_new_tokens=12, stop_token_ids=())
    expected = len(gen.model.encode(gen.render_chat(HI)))
    assert chat.prompt_tokens == expected  # before iterating
    deltas = list(chat)
    assert deltas and all(isinstance(d, ChatDelta) for d in deltas)
    result = chat.result()
    assert "".join(d.content or "" for d in deltas) == result.content
    assert result.finish_reason == "length" and len(result.token_ids) == 12
    assert result.text == gen.generate(gen.render_chat(HI), max_new_tokens=12, stop_token_ids=()).text
    with pytest.raises(InvalidRequestError):
        iter(chat)  # once


def test_chat_returns_the_parsed_result(gen):
    result = gen.chat(HI, max_new_tokens=6, stop_token_ids=())
    assert isinstance(result, GenerationResult) and result.content == result.text and len(result.token_ids) == 6


def test_result_finishes_a_partly_consumed_chat(gen):
    chat = gen.start_chat(HI, max_new_tokens=10, stop_token_ids=())
    it = iter(chat)
    next(it)
    assert len(chat.result().token_ids) == 10


def test_close_stops_and_releases_the_cache(gen):
    model = gen.model
    chat = gen.start_chat(HI, max_new_tokens=50, stop_token_ids=())
    pooled = model._caches.qsize()
    it = iter(chat)
    next(it)
    next(it)
    assert model._caches.qsize() == max(pooled - 1, 0)
    chat.close()
    assert list(it) == []
    result = chat.result()
    assert result.stats.finish_reason == "cancelled" and result.finish_reason == "stop"
    assert 0 < len(result.token_ids) < 50
    assert model._caches.qsize() == max(pooled - 1, 0) + 1  # the cache went back to the pool at close()
    chat.close()  # twice is fine


def test_close_before_iterating_and_on_raw_generations(gen):
    chat = gen.start_chat(HI, max_new_tokens=5)
    chat.close()
    assert list(chat) == [] and chat.result().token_ids == [] and chat.result().stats.finish_reason == "cancelled"
    raw = gen.start("def f(x):", max_new_tokens=40, stop_token_ids=())
    it = iter(raw)
    next(it)
    raw.close()
    assert list(it) == [] and raw.stats.finish_reason == "cancelled" and len(raw.token_ids) < 40


def test_close_returns_the_cache_to_the_pool(bundles):
    model = Model(bundles("qwen2", "fp32"))
    gen = Generator(model)
    raw = gen.start("def f(x):", max_new_tokens=40, stop_token_ids=())
    it = iter(raw)
    next(it)
    assert model._caches.qsize() == 0  # the only cache is in use
    raw.close()
    assert model._caches.qsize() == 1  # back at once


def test_context_overflow_carries_the_numbers(gen):
    n_ctx = gen.model.context_length
    with pytest.raises(ContextOverflowError) as info:
        gen.start_chat(HI, max_new_tokens=n_ctx)
    prompt = len(gen.model.encode(gen.render_chat(HI)))
    assert info.value.n_prompt_tokens == prompt and info.value.n_ctx == n_ctx
    assert "\n" not in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.n_prompt_tokens, again.n_ctx, str(again)) == (prompt, n_ctx, str(info.value))


def test_content_parts_are_joined(gen):
    parts = [{"role": "user", "content": [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]}]
    assert gen.render_chat(parts) == gen.render_chat(HI)
    bad = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}]}]
    with pytest.raises(InvalidRequestError, match=r"messages\[0\]\.content\[1\]\.type"):
        gen.render_chat(bad)


@pytest.mark.parametrize("template_vars", [{"tools": []}, {"messages": []}, {"add_generation_prompt": False}, [1],
                                           {"not a name": 1}])
def test_template_vars_are_checked(gen, template_vars):
    with pytest.raises(InvalidRequestError, match="template_vars"):
        gen.start_chat(HI, template_vars=template_vars)


# -- sampling defaults ----------------------------------------------------------------------------------------


def test_greedy_and_the_explicit_default():
    assert SamplingParams() == SamplingParams.greedy() and not SamplingParams().do_sample
    assert SamplingParams.greedy(repetition_penalty=1.1).repetition_penalty == 1.1


@pytest.mark.parametrize("config, expected", [
    ({}, SamplingParams.greedy()),
    ({"do_sample": False, "temperature": 0.7, "repetition_penalty": 1.05}, SamplingParams.greedy(repetition_penalty=1.05)),
    ({"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05},
     SamplingParams(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)),
    ({"do_sample": True}, SamplingParams(do_sample=True, temperature=1.0, top_k=50, top_p=1.0)),  # HF defaults
    ({"do_sample": True, "temperature": 0}, SamplingParams.greedy()),
    ({"do_sample": True, "top_k": None, "temperature": 0.6}, SamplingParams(do_sample=True, temperature=0.6, top_k=50)),
])
def test_from_generation_config(config, expected):
    assert SamplingParams.from_generation_config(config) == expected


@pytest.mark.parametrize("config", [{"do_sample": "yes"}, {"do_sample": True, "top_p": 0}, {"do_sample": True,
                                                                                          "temperature": -1}])
def test_bad_generation_config_is_refused(config):
    with pytest.raises(InvalidRequestError):
        SamplingParams.from_generation_config(config)


def _with_generation_config(bundle, config: dict, *, recorded=None) -> None:
    """Rewrite a copied bundle's generation_config.json (and `generation.sampling` in its manifest), keeping
    the manifest's file table right (unsealed, as older bundles are)."""
    from qwen_edge.bundle import manifest as manifest_mod

    path = bundle / "generation_config.json"
    path.write_text(json.dumps(config))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["generation_config.json"] = {"sha256": manifest_mod.sha256_file(path), "bytes": path.stat().st_size}
    manifest["generation"].pop("sampling", None)
    if recorded is not None:
        manifest["generation"]["sampling"] = recorded
    manifest.pop("manifest_sha256", None)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_default_sampling_comes_from_the_bundle(bundles, tmp_path, gen):
    assert gen.default_sampling == SamplingParams.greedy()  # the tiny checkpoint recommends nothing
    bundle = tmp_path / "b"
    shutil.copytree(bundles("qwen2", "fp32"), bundle)
    qwen3 = {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "eos_token_id": 1}
    _with_generation_config(bundle, qwen3)  # an older bundle: only the file
    g = load(bundle)
    assert g.default_sampling == SamplingParams(do_sample=True, temperature=0.6, top_p=0.95, top_k=20)
    _with_generation_config(bundle, qwen3, recorded={"do_sample": False})  # the manifest's record wins
    assert load(bundle).default_sampling == SamplingParams.greedy()
    _with_generation_config(bundle, {"do_sample": True, "top_p": 2})
    with pytest.raises(BundleError, match="generation_config.json.*top_p"):
        load(bundle)
    _with_generation_config(bundle, {}, recorded={"do_sample": True, "temperature": -1.0})
    with pytest.raises(BundleError, match="generation.sampling.*temperature"):
        load(bundle)


def test_sampling_none_means_the_bundle_defaults(bundles, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(bundles("qwen2", "fp32"), bundle)
    _with_generation_config(bundle, {}, recorded={"do_sample": True, "temperature": 5.0})
    g = load(bundle)
    greedy = g.generate("def f(x):", max_new_tokens=12, sampling=SamplingParams.greedy(), stop_token_ids=())
    runs = {tuple(g.generate("def f(x):", max_new_tokens=12, stop_token_ids=()).token_ids) for _ in range(3)}
    assert runs != {tuple(greedy.token_ids)}  # hot sampling, not greedy
    chat = {tuple(g.chat(HI, max_new_tokens=12, stop_token_ids=()).token_ids) for _ in range(3)}
    assert len(chat) > 1
