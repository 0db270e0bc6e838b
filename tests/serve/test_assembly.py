"""The server's own logic without a model: what it passes to the runtime, how it assembles tool calls and
reasoning into OpenAI objects (whole and streamed), stop strings, the sampling defaults, the fallbacks
for a generator without chat."""

from __future__ import annotations

import json
import threading

import pytest

from qwen_edge.runtime import SamplingParams
from qwen_edge.serve import Engine
from qwen_edge.serve.errors import BadRequest
from qwen_edge.serve.protocol import Sampling, parse_chat
from qwen_edge.serve.stream import StopMatcher

from .conftest import client_for, running
from .stubs import CallDelta, Delta, StubGenerator

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                         "required": ["city"]}}}]
TOOL_SCRIPT = [Delta(reasoning="The user wants "), Delta(reasoning="the weather."),
               Delta(content="Let me check."),
               Delta(tool_call=CallDelta(0, "call_a", "get_weather", "")),
               Delta(tool_call=CallDelta(0, None, None, '{"city": ')), Delta(tool_call=CallDelta(0, None, None, '"Paris"}')),
               Delta(tool_call=CallDelta(1, "call_b", "get_weather", '{"city": "Oslo"}'))]


@pytest.fixture(scope="module")
def tool_stub():
    return StubGenerator(script=TOOL_SCRIPT, finish="tool_calls")


@pytest.fixture(scope="module")
def tool_server(tool_stub):
    with running(tool_stub, model_id="stub") as server:
        yield server


def test_tool_calls_and_reasoning_in_a_whole_response(tool_server, tool_stub):
    client = client_for(tool_server)
    reply = client.chat.completions.create(model="stub", messages=[{"role": "user", "content": "Weather?"}],
                                           tools=TOOLS, max_tokens=20)
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    assert message.content == "Let me check."
    extra = message.model_extra
    assert extra["reasoning_content"] == extra["reasoning"] == "The user wants the weather."
    calls = [(c.id, c.type, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]
    assert calls == [("call_a", "function", "get_weather", {"city": "Paris"}),
                     ("call_b", "function", "get_weather", {"city": "Oslo"})]
    assert tool_stub.calls[-1]["tools"] == TOOLS and reply.usage.completion_tokens == len(TOOL_SCRIPT)


def test_tool_calls_and_reasoning_streamed(tool_server):
    client = client_for(tool_server)
    chunks = list(client.chat.completions.create(model="stub", messages=[{"role": "user", "content": "Weather?"}],
                                                 tools=TOOLS, max_tokens=20, stream=True))
    deltas = [c.choices[0].delta for c in chunks]
    assert deltas[0].role == "assistant"
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert reasoning == "The user wants the weather."
    calls: dict[int, dict] = {}
    for d in deltas:
        for call in d.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
            if call.id:
                assert entry["id"] is None  # the id and name come once, first
                entry["id"], entry["name"] = call.id, call.function.name
            entry["arguments"] += call.function.arguments or ""
    assert calls == {0: {"id": "call_a", "name": "get_weather", "arguments": '{"city": "Paris"}'},
                     1: {"id": "call_b", "name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_tool_round_trip_reaches_the_runtime_in_template_shape(tool_server, tool_stub):
    client = client_for(tool_server)
    first = client.chat.completions.create(model="stub", messages=[{"role": "user", "content": "Weather?"}],
                                           tools=TOOLS, max_tokens=20)
    call = first.choices[0].message.tool_calls[0]
    history = [{"role": "user", "content": "Weather?"},
               {"role": "assistant", "content": None, "reasoning_content": "thinking",
                "tool_calls": [call.model_dump()]},
               {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'}]
    client.chat.completions.create(model="stub", messages=history, tools=TOOLS, max_tokens=20)
    sent = tool_stub.calls[-1]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert sent[1]["reasoning_content"] == "thinking"
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'}


def test_per_request_template_vars_and_thinking_budget_reach_the_runtime(tool_server, tool_stub):
    client_for(tool_server).chat.completions.create(
        model="stub", messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        max_tokens=5, extra_body={"chat_template_kwargs": {"enable_thinking": False}, "thinking_budget": 7})
    call = tool_stub.calls[-1]
    assert call["template_vars"] == {"enable_thinking": False} and call["thinking_budget"] == 7
    assert call["messages"] == [{"role": "user", "content": "a\nb"}]
    assert call["max_new_tokens"] == 5


def test_unspecified_sampling_fields_come_from_the_bundle():
    stub = StubGenerator()
    engine = Engine(stub, "stub")
    assert engine.sampling(Sampling()) == stub.default_sampling
    assert engine.sampling(Sampling(top_p=0.5)) == SamplingParams(do_sample=True, temperature=0.7, top_k=20, top_p=0.5,
                                                                  repetition_penalty=1.05)
    greedy = engine.sampling(Sampling(temperature=0))
    assert not greedy.do_sample and greedy.repetition_penalty == 1.05
    assert engine.sampling(Sampling(temperature=1.3, seed=4, top_k=0, repetition_penalty=1.0)) == SamplingParams(
        do_sample=True, temperature=1.3, top_k=0, top_p=0.8, repetition_penalty=1.0, seed=4)


def test_max_tokens_defaults_to_what_the_context_leaves():
    stub = StubGenerator(context_length=64, prompt_tokens=10)
    stream = Engine(stub, "stub").open_chat(parse_chat({"messages": [{"role": "user", "content": "hi"}]}))
    assert stub.calls[-1]["max_new_tokens"] == 54
    assert stream.prompt_tokens == 10


@pytest.mark.parametrize("max_tokens", [60, 64, 10**6])
def test_prompt_plus_max_tokens_over_the_context_names_both_numbers(max_tokens):
    engine = Engine(StubGenerator(context_length=64, prompt_tokens=10), "stub")
    with pytest.raises(BadRequest, match=r"n_prompt_tokens=10, n_ctx=64") as failed:
        engine.open_chat(parse_chat({"messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}))
    assert failed.value.code == "context_length_exceeded" and "\n" not in str(failed.value)


class _PromptOnly:
    """A backend generator with only `start` and `render_chat` (as the QNN one)."""

    def __init__(self):
        self.prompts = []

    def render_chat(self, messages, **template_vars):
        return "|".join(m["content"] for m in messages) + repr(sorted(template_vars))

    def start(self, prompt, *, max_new_tokens=128, sampling=None):
        self.prompts.append(prompt)
        return iter(["a", "b"])


def test_a_generator_without_start_chat_is_served_through_its_template():
    backend = _PromptOnly()
    engine = Engine(backend, "npu")
    stream = engine.open_chat(parse_chat({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                                          "chat_template_kwargs": {"x": 1}}))
    assert [p.content for p in stream] == ["a", "b"] and backend.prompts == ["hi['x']"]
    with pytest.raises(BadRequest, match="thinking_budget"):
        engine.open_chat(parse_chat({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                                     "thinking_budget": 3}))


@pytest.mark.parametrize("pieces,stops,expected", [
    (["Hello wor", "ld, bye"], ["world"], ("Hello ", True)),
    (["ab", "c", "d"], ["cd", "bc"], ("a", True)),  # the earliest match wins, across pieces
    (["abc", "def"], ["xyz"], ("abcdef", False)),
    (["wo", "rm"], ["world"], ("worm", False)),  # held back while it could still match, then let go
    (["a\nb"], ["\n"], ("a", True)),
])
def test_stop_matcher(pieces, stops, expected):
    matcher = StopMatcher(stops)
    out, hit = [], False
    for piece in pieces:
        text, hit = matcher.push(piece)
        out.append(text)
        if hit:
            break
    if not hit:
        out.append(matcher.release())
    assert ("".join(out), hit) == expected


def test_stop_strings_apply_to_the_answer_and_close_the_generation():
    stub = StubGenerator(script=[Delta(reasoning="STOP is fine here"), Delta(content="one "), Delta(content="two ST"),
                                 Delta(content="OP three"), Delta(content="four")])
    with running(stub, model_id="stub") as server:
        reply = client_for(server).chat.completions.create(model="stub", messages=[{"role": "user", "content": "x"}],
                                                           max_tokens=10, stop=["STOP"])
    assert reply.choices[0].message.content == "one two " and reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.model_extra["reasoning"] == "STOP is fine here"
    assert stub.closed and reply.usage.completion_tokens == 4  # closed after the 4th piece, not run to the end


def test_worker_errors_mid_stream_become_an_error_event():
    class Broken(StubGenerator):
        def start(self, prompt, **kwargs):
            def pieces():
                yield "ok"
                raise RuntimeError("the model produced NaN logits")
            return _Iterable(pieces)

    with running(Broken(), model_id="stub") as server:
        import httpx

        with httpx.stream("POST", server.url + "/v1/completions", timeout=10,
                          json={"prompt": "x", "max_tokens": 5, "stream": True}) as response:
            lines = [line for line in response.iter_lines() if line]
        assert response.status_code == 200
        error = json.loads(next(line[6:] for line in lines if '"error"' in line))["error"]
        assert "NaN logits" in error["message"] and lines[-1] == "data: [DONE]"
        assert httpx.get(server.url + "/health", timeout=10).json()["slots"]["running"] == 0


class _Iterable:
    def __init__(self, fn):
        self.fn = fn
        self.prompt_tokens = 1

    def __iter__(self):
        return self.fn()


def test_events_close_the_generation_when_cancelled():
    from qwen_edge.serve.scheduler import Job
    from qwen_edge.serve.stream import events

    class FakeJob(Job):
        def __init__(self):
            self.cancelled = threading.Event()
            self._on_cancel = []

    stub = StubGenerator(endless=True)
    engine = Engine(stub, "stub")
    job = FakeJob()
    it = events(lambda: engine.open_chat(parse_chat({"messages": [{"role": "user", "content": "x"}],
                                                     "max_tokens": 40})), (), job)
    next(it), next(it)
    job.cancel()
    assert stub.closed  # closed at once, from the cancelling thread
    assert list(it) == []
