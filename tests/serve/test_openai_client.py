"""The server through the official `openai` client, on a real tiny bundle: chat and completions,
streamed and not, models, usage, stop strings, the API key, and greedy results equal to the runtime's."""

from __future__ import annotations

import time

import httpx
import pytest

from qwen_edge.runtime import SamplingParams

from .conftest import client_for, running

MESSAGES = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "def fibonacci(n):"}]
GREEDY = SamplingParams()  # the tiny bundle's defaults are greedy too; the server is asked for temperature 0


def runtime_chat(generator, messages, max_tokens, **template_vars):
    """What qwen_edge.runtime itself answers (the reference for the server's greedy output)."""
    if hasattr(generator, "start_chat"):
        result = generator.chat(messages, template_vars=template_vars or None, max_new_tokens=max_tokens,
                                sampling=GREEDY)
        return result.content if hasattr(result, "content") else result.text, result.token_ids
    result = generator.chat(messages, template_vars=template_vars, max_new_tokens=max_tokens, sampling=GREEDY)
    return result.text, result.token_ids


def test_chat_non_streaming_equals_the_runtime(client, generator):
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
    text, ids = runtime_chat(generator, MESSAGES, 12)
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == text and text  # the same greedy text, and not an empty one
    assert choice.finish_reason == ("length" if len(ids) == 12 else "stop")
    assert reply.usage.completion_tokens == len(ids)
    assert reply.usage.prompt_tokens == len(generator.model.encode(generator.render_chat(MESSAGES)))
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.id.startswith("chatcmpl-") and reply.model == "tiny" and reply.object == "chat.completion"


def test_chat_streaming_follows_the_rules_clients_check(client, generator):
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    body = [c for c in chunks if c.choices]
    assert [c.choices[0].finish_reason for c in body[:-1]] == [None] * (len(body) - 1)
    assert body[-1].choices[0].finish_reason in ("length", "stop")
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens <= 10
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in body)
    assert text == runtime_chat(generator, MESSAGES, 10)[0]
    assert usage_chunk.usage.completion_tokens == len(runtime_chat(generator, MESSAGES, 10)[1])


def test_stream_without_include_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3, stream=True))
    assert chunks[-1].choices[0].finish_reason is not None and all(c.usage is None for c in chunks)


def test_sse_wire_format_ends_with_done(server):
    with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=30,
                      json={"messages": MESSAGES, "max_tokens": 3, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_completions_equal_the_runtime(client, generator):
    reply = client.completions.create(model="tiny", prompt="def fibonacci(n):", max_tokens=12, temperature=0)
    expected = generator.generate("def fibonacci(n):", max_new_tokens=12, sampling=GREEDY)
    assert reply.choices[0].text == expected.text and expected.text
    assert reply.usage.completion_tokens == len(expected.token_ids)
    assert reply.usage.prompt_tokens == expected.stats.prompt_tokens
    stream = client.completions.create(model="tiny", prompt="def fibonacci(n):", max_tokens=12, temperature=0,
                                       stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected.text
    assert chunks[-1].usage.completion_tokens == len(expected.token_ids)
    assert len({c.id for c in chunks}) == 1


def test_completions_take_token_ids(client, generator):
    ids = [int(i) for i in generator.model.encode("class Stack:")]
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=6, temperature=0)
    by_text = client.completions.create(model="tiny", prompt="class Stack:", max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text


def test_stop_strings_cut_the_text_and_stop(client, generator):
    free = generator.generate("def fibonacci(n):", max_new_tokens=20, sampling=GREEDY).text
    stop = free[5:8]
    assert stop and stop not in free[:5]
    reply = client.completions.create(model="tiny", prompt="def fibonacci(n):", max_tokens=20, temperature=0,
                                      stop=[stop, "never-there"])
    assert reply.choices[0].text == free[:free.index(stop)]
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens < 20  # it stopped generating, not only cut the text
    streamed = client.completions.create(model="tiny", prompt="def fibonacci(n):", max_tokens=20, temperature=0,
                                         stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == free[:free.index(stop)]


def test_seeded_sampling_is_reproducible_and_differs_from_greedy(client):
    def sample(seed):
        return client.completions.create(model="tiny", prompt="def f(x):", max_tokens=16, temperature=1.5,
                                         top_p=1.0, seed=seed, extra_body={"top_k": 0}).choices[0].text

    assert sample(3) == sample(3)
    greedy = client.completions.create(model="tiny", prompt="def f(x):", max_tokens=16, temperature=0).choices[0].text
    assert any(sample(s) != greedy for s in (1, 2, 3))


def test_models_lists_the_one_model(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    response = httpx.get(server.url + "/v1/models/other", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_health(server):
    body = httpx.get(server.url + "/health", timeout=10).json()
    assert body["status"] == "ok" and body["slots"]["parallel"] == 2


def test_api_key_is_required_when_set(generator):
    with running(generator, api_key="s3cret") as server:
        with pytest.raises(Exception) as failed:
            client_for(server).models.list()
        assert getattr(failed.value, "status_code", None) == 401
        with pytest.raises(Exception) as wrong:
            client_for(server, api_key="wrong").chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
        assert getattr(wrong.value, "status_code", None) == 401
        assert client_for(server, api_key="s3cret").models.list().data[0].id == "tiny"
        assert httpx.get(server.url + "/health", timeout=10).status_code == 200  # probes need no key


def test_binds_loopback_by_default():
    from qwen_edge.serve import ServeOptions

    assert ServeOptions().host == "127.0.0.1"


def test_request_log_has_counts_and_no_prompt_text(client, caplog):
    secret = "zebra-quartz-unique"
    with caplog.at_level("INFO", logger="qwen_edge.serve"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": secret}], max_tokens=2)
        deadline = time.monotonic() + 5  # the line is written once the response has gone out
        while time.monotonic() < deadline and not any("/v1/chat" in r.getMessage() for r in caplog.records):
            time.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if r.name == "qwen_edge.serve"]
    line = next(line for line in lines if "/v1/chat/completions" in line)
    assert line.startswith("POST /v1/chat/completions 200 tokens=") and line.endswith("ms")
    assert "+2 " in line or "+1 " in line or "+0 " in line
    assert not any(secret in line for line in lines)
