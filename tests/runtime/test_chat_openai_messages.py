"""Qwen3.5's real chat template against transformers' apply_chat_template, and OpenAI-shaped messages
(content parts, tool calls with JSON-string arguments) on all three real Qwen templates.

tests/runtime/templates/README.md says where each template comes from."""

from __future__ import annotations

import copy
import json

import pytest

from qwen_edge.runtime.chat import ChatTemplate
from qwen_edge.runtime.errors import InvalidRequestError, TemplateError
from tests.runtime.test_chat import (CONVERSATIONS, QWEN2_5, QWEN3, TEMPLATES, TOOLS, compare, hf_render,
                                     tokenizer_file)  # noqa: F401 - tokenizer_file is a fixture

QWEN3_5 = (TEMPLATES / "qwen3_5.jinja").read_text(encoding="utf-8")

QWEN35_CONVERSATIONS = {
    **CONVERSATIONS,
    "reasoning_then_tool_calls": [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Paris for 3 days, and 2+3?"},
        {"role": "assistant", "content": "Let me check.", "reasoning_content": "Two tools are needed.",
         "tool_calls": [
             {"id": "call_1", "type": "function",
              "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3, "hourly": False}}},
             {"id": "call_2", "type": "function",
              "function": {"name": "add", "arguments": {"a": 2, "b": 3, "extra": {"nested": [1, "x"]}}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21, "sky": "晴れ"}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "5"},
        {"role": "assistant", "content": "<think>\nBoth results are in.\n</think>\n\n21°C and clear; 2+3 = 5."},
    ],
    "reasoning_before_last_query_dropped": [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one", "reasoning_content": "old thoughts"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "two", "reasoning_content": "new thoughts"},
    ],
}

PARTS = [
    {"role": "system", "content": [{"type": "text", "text": "You are "}, {"type": "text", "text": "terse."}]},
    {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "東京?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Checking."}],
     "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "東京"}}}]},
    {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "sunny"}]},
]


def _joined(messages):
    """The messages with every list of text parts joined into one string."""
    out = copy.deepcopy(messages)
    for message in out:
        if isinstance(message.get("content"), list):
            message["content"] = "".join(part["text"] for part in message["content"])
    return out


def _openai_arguments(messages):
    """The messages with tool call arguments as JSON strings, as OpenAI clients send them."""
    out = copy.deepcopy(messages)
    for message in out:
        for call in message.get("tool_calls", []):
            function = call.get("function", call)
            function["arguments"] = json.dumps(function["arguments"])
    return out


@pytest.mark.parametrize("name", sorted(QWEN35_CONVERSATIONS))
@pytest.mark.parametrize("tools", [None, TOOLS])
@pytest.mark.parametrize("thinking", [None, True, False])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_qwen3_5_template(tokenizer_file, name, tools, thinking, add_generation_prompt):
    extra = {} if thinking is None else {"enable_thinking": thinking}
    out = compare(tokenizer_file, QWEN3_5, QWEN35_CONVERSATIONS[name], tools=tools,
                  add_generation_prompt=add_generation_prompt, **extra)
    if add_generation_prompt:  # Qwen3.5 opens the reasoning in the prompt unless thinking is off
        assert out.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n" if thinking is False
                            else "<|im_start|>assistant\n<think>\n")
    if tools:
        assert "<function=example_function_name>" in out and "東京" in out
    if name == "reasoning_then_tool_calls":
        assert ("<think>\nTwo tools are needed.\n</think>\n\nLet me check.\n\n<tool_call>\n<function=get_weather>\n"
                "<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n</parameter>\n") in out
        assert '<parameter=extra>\n{"nested": [1, "x"]}\n</parameter>' in out
    if name == "reasoning_before_last_query_dropped":
        assert "old thoughts" not in out and "<think>\nnew thoughts\n</think>\n\ntwo" in out


@pytest.mark.parametrize("thinking", [True, False])
def test_qwen3_5_content_parts_render_as_transformers_renders_them(tokenizer_file, thinking):
    # Qwen3.5's template renders lists of text parts itself: ours joins them first and must agree.
    ours = ChatTemplate(QWEN3_5).render(copy.deepcopy(PARTS) + [{"role": "user", "content": "thanks"}],
                                        tools=TOOLS, enable_thinking=thinking)
    theirs = hf_render(tokenizer_file, QWEN3_5, PARTS + [{"role": "user", "content": "thanks"}], tools=TOOLS,
                       add_generation_prompt=True, enable_thinking=thinking)
    assert ours == theirs and "You are terse." in ours and "Weather in 東京?" in ours


@pytest.mark.parametrize("source", [QWEN2_5, QWEN3, QWEN3_5], ids=["qwen2_5", "qwen3", "qwen3_5"])
@pytest.mark.parametrize("name", ["tool_flow", "tool_call_with_text", "reasoning_then_tool_calls"])
def test_openai_string_arguments_render_like_dicts(tokenizer_file, source, name):
    # OpenAI sends arguments as a JSON string; Qwen's templates expect a mapping (Qwen2.5 would print the
    # string as a quoted JSON string, Qwen3.5 cannot iterate it): the runtime parses it first.
    messages = QWEN35_CONVERSATIONS[name]
    ours = ChatTemplate(source).render(_openai_arguments(messages), tools=TOOLS)
    assert ours == hf_render(tokenizer_file, source, messages, tools=TOOLS, add_generation_prompt=True)


@pytest.mark.parametrize("source", [QWEN2_5, QWEN3], ids=["qwen2_5", "qwen3"])
def test_content_parts_render_as_their_joined_text(tokenizer_file, source):
    # Qwen2.5 / Qwen3 templates drop non-string content: the runtime joins the parts before rendering.
    messages = PARTS + [{"role": "user", "content": "thanks"}]
    ours = ChatTemplate(source).render(copy.deepcopy(messages), tools=TOOLS)
    assert ours == hf_render(tokenizer_file, source, _joined(messages), tools=TOOLS, add_generation_prompt=True)
    assert "Weather in 東京?" in ours


@pytest.mark.parametrize("messages, where", [
    ([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]}],
     r"messages\[0\]\.content\[1\]\.type"),
    ([{"role": "user", "content": ["plain string part"]}], r"messages\[0\]\.content\[0\] must be a dict"),
    ([{"role": "user", "content": [{"type": "text", "text": 3}]}], r"messages\[0\]\.content\[0\]\.text"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{not json"}}]}],
     r"messages\[1\]\.tool_calls\[0\]\.function\.arguments is not valid JSON"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}]}],
     r"messages\[1\]\.tool_calls\[0\]\.function\.arguments must be a JSON object"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [{"type": "function", "function": {}}]}],
     r"messages\[1\]\.tool_calls\[0\]\.function\.name"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": ["f()"]}],
     r"messages\[1\]\.tool_calls\[0\] must be a dict"),
])
def test_bad_openai_messages_name_the_field(messages, where):
    with pytest.raises(InvalidRequestError, match=where) as info:
        ChatTemplate(QWEN3_5).render(messages)
    assert "\n" not in str(info.value)


def test_qwen3_5_refuses_what_it_refuses_in_transformers():
    with pytest.raises(TemplateError, match="No user query found"):
        ChatTemplate(QWEN3_5).render([{"role": "system", "content": "only a system message"}])
