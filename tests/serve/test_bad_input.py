"""Malformed requests: each gets a 4xx with an OpenAI-shaped one-line error, and the server keeps serving."""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import BODY_LIMIT

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "hi"}]


def chat(**fields):
    return json.dumps({"messages": USER, "max_tokens": 4, **fields}).encode()


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}

# (name, method, path, body bytes, expected status, a word the message must hold)
CASES = [
    ("bad json", "POST", CHAT, b'{"messages": [', 400, "JSON"),
    ("trailing garbage", "POST", CHAT, b'{"messages": []} x', 400, "JSON"),
    ("empty body", "POST", CHAT, b"", 400, "empty"),
    ("not an object", "POST", CHAT, b"[1, 2]", 400, "object"),
    ("broken utf-8", "POST", CHAT, b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, "UTF-8"),
    ("NaN", "POST", CHAT, b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, "NaN"),
    ("oversized body", "POST", CHAT, chat(pad="x" * (BODY_LIMIT + 10)), 413, "limit"),
    ("missing messages", "POST", CHAT, b'{"model": "tiny"}', 400, "messages"),
    ("empty messages", "POST", CHAT, json.dumps({"messages": []}).encode(), 400, "empty"),
    ("messages not a list", "POST", CHAT, json.dumps({"messages": "hi"}).encode(), 400, "array"),
    ("message not an object", "POST", CHAT, json.dumps({"messages": ["hi"]}).encode(), 400, "object"),
    ("bad role", "POST", CHAT, json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), 400, "role"),
    ("missing role", "POST", CHAT, json.dumps({"messages": [{"content": "x"}]}).encode(), 400, "role"),
    ("content a number", "POST", CHAT, json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), 400, "content"),
    ("missing content", "POST", CHAT, json.dumps({"messages": [{"role": "user"}]}).encode(), 400, "content"),
    ("image part", "POST", CHAT, json.dumps({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}).encode(), 400, "image_url"),
    ("lone surrogate", "POST", CHAT, b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 400, "surrogate"),
    ("max_tokens a string", "POST", CHAT, chat(max_tokens="10"), 400, "max_tokens"),
    ("max_tokens zero", "POST", CHAT, chat(max_tokens=0), 400, "max_tokens"),
    ("max_tokens a float", "POST", CHAT, chat(max_tokens=1.5), 400, "max_tokens"),
    ("huge max_tokens", "POST", CHAT, chat(max_tokens=10**9), 400, "n_ctx"),
    ("over the context", "POST", CHAT, chat(max_tokens=250), 400, "n_prompt_tokens"),
    ("negative temperature", "POST", CHAT, chat(temperature=-0.5), 400, "temperature"),
    ("temperature a string", "POST", CHAT, chat(temperature="hot"), 400, "temperature"),
    ("top_p zero", "POST", CHAT, chat(top_p=0), 400, "top_p"),
    ("top_p over one", "POST", CHAT, chat(top_p=1.5), 400, "top_p"),
    ("negative top_k", "POST", CHAT, chat(top_k=-5), 400, "top_k"),
    ("repetition_penalty zero", "POST", CHAT, chat(repetition_penalty=0), 400, "repetition_penalty"),
    ("negative seed", "POST", CHAT, chat(seed=-1), 400, "seed"),
    ("seed a bool", "POST", CHAT, chat(seed=True), 400, "seed"),
    ("stream a string", "POST", CHAT, chat(stream="yes"), 400, "stream"),
    ("stream_options without stream", "POST", CHAT, chat(stream_options={"include_usage": True}), 400, "stream"),
    ("stop a number", "POST", CHAT, chat(stop=5), 400, "stop"),
    ("empty stop string", "POST", CHAT, chat(stop=[""]), 400, "stop"),
    ("n > 1", "POST", CHAT, chat(n=2), 400, "'n'"),
    ("logprobs", "POST", CHAT, chat(logprobs=True), 400, "logprobs"),
    ("presence_penalty", "POST", CHAT, chat(presence_penalty=0.5), 400, "presence_penalty"),
    ("json mode", "POST", CHAT, chat(response_format={"type": "json_object"}), 400, "response_format"),
    ("tools not a list", "POST", CHAT, chat(tools={"type": "function"}), 400, "tools"),
    ("tool schema not an object", "POST", CHAT, chat(tools=[{"type": "function", "function": {
        "name": "f", "parameters": "a string"}}]), 400, "parameters"),
    ("tool without a name", "POST", CHAT, chat(tools=[{"type": "function", "function": {}}]), 400, "name"),
    ("tool of another type", "POST", CHAT, chat(tools=[{"type": "retrieval"}]), 400, "type"),
    ("tool_choice required", "POST", CHAT, chat(tools=[TOOL], tool_choice="required"), 400, "tool_choice"),
    ("tool call arguments not JSON", "POST", CHAT, json.dumps({"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function",
                                                               "function": {"name": "f", "arguments": "{oops"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "r"}]}).encode(), 400, "arguments"),
    ("template vars not an object", "POST", CHAT, chat(chat_template_kwargs=[1]), 400, "chat_template_kwargs"),
    ("template vars set messages", "POST", CHAT, chat(chat_template_kwargs={"messages": []}), 400, "messages"),
    ("negative thinking budget", "POST", CHAT, chat(thinking_budget=-1), 400, "thinking_budget"),
    ("unknown model", "POST", CHAT, chat(model="gpt-4o"), 404, "gpt-4o"),
    ("model a number", "POST", CHAT, chat(model=3), 400, "model"),
    ("completion without prompt", "POST", COMPLETIONS, b'{"max_tokens": 3}', 400, "prompt"),
    ("empty prompt", "POST", COMPLETIONS, b'{"prompt": ""}', 400, "empty"),
    ("prompt a dict", "POST", COMPLETIONS, b'{"prompt": {"a": 1}}', 400, "prompt"),
    ("batch of prompts", "POST", COMPLETIONS, b'{"prompt": ["a", "b"]}', 400, "prompt"),
    ("token id out of range", "POST", COMPLETIONS, b'{"prompt": [1, 99999], "max_tokens": 2}', 400, "vocabulary"),
    ("echo", "POST", COMPLETIONS, b'{"prompt": "a", "echo": true}', 400, "echo"),
    ("unknown route", "POST", "/v1/embeddings", b"{}", 404, "route"),
    ("wrong method", "GET", CHAT, None, 405, "not allowed"),
    ("wrong method on models", "POST", "/v1/models", b"{}", 405, "not allowed"),
]


@pytest.mark.parametrize("name,method,path,body,status,word", CASES, ids=[c[0] for c in CASES])
def test_malformed_request_gets_a_4xx_with_one_line(server, name, method, path, body, status, word):
    response = httpx.request(method, server.url + path, content=body, timeout=30,
                             headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "\n" not in error["message"] and len(error["message"]) < 400
    assert word.lower() in error["message"].lower(), error["message"]


def test_there_are_more_than_thirty_cases():
    assert len(CASES) >= 30


def test_the_server_keeps_serving_after_all_of_them(server, client):
    for _, method, path, body, _, _ in CASES:
        httpx.request(method, server.url + path, content=body, timeout=30)
    reply = client.chat.completions.create(model="tiny", messages=USER, max_tokens=3, temperature=0)
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens >= 1
    assert httpx.get(server.url + "/health", timeout=10).json()["slots"]["running"] == 0


def test_context_overflow_error_names_both_numbers(server, generator):
    response = httpx.post(server.url + CHAT, content=chat(max_tokens=250), timeout=30)
    error = response.json()["error"]
    n_prompt = len(generator.model.encode(generator.render_chat(USER)))
    assert f"n_prompt_tokens={n_prompt}" in error["message"]
    assert f"n_ctx={generator.model.context_length}" in error["message"]
    assert error["code"] == "context_length_exceeded"
