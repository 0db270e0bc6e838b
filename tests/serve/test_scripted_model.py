"""Reasoning and tool calls end to end: a tiny Qwen3 bundle (Qwen3's real template) whose greedy answer
is reasoning followed by a tool call, through the runtime's parser, the server and the official client,
equal to what qwen_edge.runtime answers for the same request."""

from __future__ import annotations

import json

import pytest

from qwen_edge.runtime import RuntimeOptions, SamplingParams
from qwen_edge.targets.catalog import load_generator

from .conftest import client_for, running
from .scripted import CALL_ARGUMENTS, REASONING, make_scripted_checkpoint

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ASK = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def scripted_generator(tmp_path_factory):
    from qwen_edge.build import BuildRequest, build
    from qwen_edge.precision import Precision

    root = tmp_path_factory.mktemp("scripted")
    ckpt = make_scripted_checkpoint(root / "ckpt")
    build(BuildRequest(ckpt, root / "bundle", Precision.preset("fp32")))
    return load_generator(root / "bundle", RuntimeOptions())


@pytest.fixture(scope="module")
def scripted(scripted_generator):
    with running(scripted_generator, model_id="qwen3-scripted") as server:
        yield client_for(server)


def runtime_answer(generator, messages, max_new_tokens=40, **kwargs):
    return generator.chat(messages, max_new_tokens=max_new_tokens, sampling=SamplingParams.greedy(), **kwargs)


def test_reasoning_and_a_tool_call_through_the_server(scripted, scripted_generator):
    reply = scripted.chat.completions.create(model="qwen3-scripted", messages=ASK, tools=TOOLS, max_tokens=40,
                                             temperature=0)
    message, choice = reply.choices[0].message, reply.choices[0]
    assert message.model_extra["reasoning_content"] == message.model_extra["reasoning"] == REASONING
    assert not message.content
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("get_weather", CALL_ARGUMENTS)]
    assert choice.finish_reason == "tool_calls"
    expected = runtime_answer(scripted_generator, ASK, tools=TOOLS)  # the runtime's own answer
    assert expected.reasoning == REASONING and [c.name for c in expected.tool_calls] == ["get_weather"]
    assert [json.loads(c.arguments) for c in expected.tool_calls] == [json.loads(message.tool_calls[0].function.arguments)]
    assert reply.usage.completion_tokens == len(expected.token_ids)


def test_streamed_reasoning_then_tool_call(scripted):
    chunks = list(scripted.chat.completions.create(model="qwen3-scripted", messages=ASK, tools=TOOLS, max_tokens=40,
                                                   temperature=0, stream=True,
                                                   stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant" and len({c.id for c in chunks}) == 1
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas) == REASONING
    calls = [call for d in deltas for call in d.tool_calls or []]
    assert calls[0].id and calls[0].function.name == "get_weather"
    assert json.loads("".join(c.function.arguments or "" for c in calls)) == CALL_ARGUMENTS
    assert chunks[-2].choices[0].finish_reason == "tool_calls" and chunks[-1].usage.completion_tokens > 0


def test_the_tool_round_trip(scripted, scripted_generator):
    first = scripted.chat.completions.create(model="qwen3-scripted", messages=ASK, tools=TOOLS, max_tokens=40,
                                             temperature=0).choices[0].message
    call = first.tool_calls[0]
    history = ASK + [{"role": "assistant", "content": first.content or "", "tool_calls": [call.model_dump()]},
                     {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21})}]
    second = scripted.chat.completions.create(model="qwen3-scripted", messages=history, tools=TOOLS, max_tokens=40,
                                              temperature=0)
    expected = runtime_answer(scripted_generator, history, tools=TOOLS)
    assert second.choices[0].message.model_extra.get("reasoning") == expected.reasoning
    assert [c.function.name for c in second.choices[0].message.tool_calls] == [c.name for c in expected.tool_calls]
    prompt = scripted_generator.render_chat(history, tools=TOOLS)
    assert "<tool_response>" in prompt and '"temp_c": 21' in prompt  # the result went back into the template
    assert second.usage.prompt_tokens == len(scripted_generator.model.encode(prompt))


def test_enable_thinking_false_per_request(scripted):
    reply = scripted.chat.completions.create(model="qwen3-scripted", messages=ASK, tools=TOOLS, max_tokens=40,
                                             temperature=0,
                                             extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    message = reply.choices[0].message
    assert "reasoning" not in (message.model_extra or {}) and message.tool_calls[0].function.name == "get_weather"


def test_thinking_budget_per_request(scripted, scripted_generator):
    reply = scripted.chat.completions.create(model="qwen3-scripted", messages=ASK, tools=TOOLS, max_tokens=200,
                                             temperature=0, extra_body={"thinking_budget": 1})
    message = reply.choices[0].message
    expected = runtime_answer(scripted_generator, ASK, 200, tools=TOOLS, thinking_budget=1)
    assert message.model_extra["reasoning"] == expected.reasoning != REASONING  # the budget closed it early
    assert message.tool_calls[0].function.name == "get_weather"


def test_without_tools_the_call_stays_text(scripted, scripted_generator):
    reply = scripted.chat.completions.create(model="qwen3-scripted", messages=ASK, max_tokens=40, temperature=0)
    message = reply.choices[0].message
    assert not message.tool_calls and "<tool_call>" in message.content
    assert message.content == runtime_answer(scripted_generator, ASK).content
