"""ChatTemplate against transformers' apply_chat_template(tokenize=False), plus validation and errors."""

from __future__ import annotations

import copy
import datetime
import json
import os
from pathlib import Path

import pytest

from qwen_edge.runtime.chat import ChatTemplate
from tests.conftest import TRAINED_MODEL, trained_checkpoint
from qwen_edge.runtime.errors import InvalidRequestError, TemplateError
from qwen_edge.checkpoint.tiny import QWEN_CHAT_TEMPLATE, make_tokenizer

transformers = pytest.importorskip("transformers")

TEMPLATES = Path(__file__).resolve().parent / "templates"
QWEN2_5 = (TEMPLATES / "qwen2_5.jinja").read_text(encoding="utf-8")
QWEN3 = (TEMPLATES / "qwen3.jinja").read_text(encoding="utf-8")

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city (°C) — e.g. 東京",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two numbers <a> & <b>",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}},
]

CONVERSATIONS = {
    "single": [{"role": "user", "content": "Write a haiku about Python."}],
    "system": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"}],
    "multi_turn": [
        {"role": "system", "content": "You are a coder."},
        {"role": "user", "content": "def fib(n):"},
        {"role": "assistant", "content": "    return n if n < 2 else fib(n - 1) + fib(n - 2)"},
        {"role": "user", "content": "Now in 日本語, with emoji 🙂"},
    ],
    "thinking_in_content": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nsimple arithmetic\n</think>\n\n4"},
        {"role": "user", "content": "and 3+3?"},
        {"role": "assistant", "content": "<think>\nagain\n</think>\n\n6"},
    ],
    "reasoning_field": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning_content": "because"},
    ],
    "thinking_alias": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "thinking": "hmm"},
    ],
    "tool_flow": [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and 2+3?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}]},
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "tool", "content": "5"},
        {"role": "assistant", "content": "21°C, and 5."},
    ],
    "tool_call_with_text": [
        {"role": "user", "content": "Add 1 and 2"},
        {"role": "assistant", "content": "Let me add.", "tool_calls": [
            {"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]},
        {"role": "tool", "content": "3"},
    ],
}


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    make_tokenizer(384).save(str(path))
    return path


def hf_render(tokenizer_file: Path, source: str, messages, *, bos_token=None, eos_token=None, **kwargs) -> str:
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), bos_token=bos_token,
                                               eos_token=eos_token)
    return tok.apply_chat_template(messages, chat_template=source, tokenize=False, **kwargs)


def compare(tokenizer_file, source, messages, *, bos_token=None, eos_token=None, **kwargs):
    before = copy.deepcopy(messages)
    ours = ChatTemplate(source, bos_token=bos_token, eos_token=eos_token).render(messages, **kwargs)
    assert messages == before  # the caller's messages are not modified
    theirs = hf_render(tokenizer_file, source, copy.deepcopy(messages), bos_token=bos_token, eos_token=eos_token,
                       **kwargs)
    assert ours == theirs
    return ours


# -- against transformers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["single", "system", "multi_turn"])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_repo_tiny_template(tokenizer_file, name, add_generation_prompt):
    compare(tokenizer_file, QWEN_CHAT_TEMPLATE, CONVERSATIONS[name], add_generation_prompt=add_generation_prompt)
    compare(tokenizer_file, QWEN_CHAT_TEMPLATE, CONVERSATIONS[name], add_generation_prompt=add_generation_prompt,
            enable_thinking=False)


@pytest.mark.parametrize("name", ["single", "system", "multi_turn"])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_trained_model_template(name, add_generation_prompt):
    model = trained_checkpoint(TRAINED_MODEL, "QWEN_EDGE_TRAINED_MODEL")
    source = json.loads((model / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"]
    out = compare(model / "tokenizer.json", source, CONVERSATIONS[name], eos_token="<|endoftext|>",
                  add_generation_prompt=add_generation_prompt)
    assert out.endswith("<|im_start|>assistant\n") is add_generation_prompt


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("tools", [None, TOOLS])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_qwen2_5_template(tokenizer_file, name, tools, add_generation_prompt):
    out = compare(tokenizer_file, QWEN2_5, CONVERSATIONS[name], tools=tools,
                  add_generation_prompt=add_generation_prompt)
    if tools:
        assert "<tools>\n" in out and "東京" in out and "</tools>" in out  # tojson keeps non-ASCII
    elif CONVERSATIONS[name][0]["role"] != "system":
        assert out.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    if name == "tool_flow":
        assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in out
        assert "<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response>\n<tool_response>\n5" in out


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("tools", [None, TOOLS])
@pytest.mark.parametrize("thinking", [None, True, False])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_qwen3_template(tokenizer_file, name, tools, thinking, add_generation_prompt):
    extra = {} if thinking is None else {"enable_thinking": thinking}
    out = compare(tokenizer_file, QWEN3, CONVERSATIONS[name], tools=tools,
                  add_generation_prompt=add_generation_prompt, **extra)
    empty_think = out.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert empty_think is (add_generation_prompt and thinking is False)
    if name == "thinking_in_content":
        # Reasoning of turns before the last user query is dropped; the last answer keeps its think block.
        assert "simple arithmetic" not in out and "<think>\nagain\n</think>\n\n6" in out
    if name in ("reasoning_field", "thinking_alias"):
        assert "<think>\n" + CONVERSATIONS[name][1].get("reasoning_content", "hmm") in out


def test_qwen3_enable_thinking_switch(tokenizer_file):
    messages = CONVERSATIONS["single"]
    template = ChatTemplate(QWEN3)
    on = template.render(messages, enable_thinking=True)
    off = template.render(messages, enable_thinking=False)
    assert on.endswith("<|im_start|>assistant\n")
    assert off == on + "<think>\n\n</think>\n\n"
    assert template.render(messages) == on  # undefined means thinking


def test_bos_eos_and_extra_variables(tokenizer_file):
    source = ("{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token }}\n{% endfor %}"
              "{% if add_generation_prompt %}assistant:{% endif %}{{ greeting | default('') }}")
    compare(tokenizer_file, source, CONVERSATIONS["multi_turn"], bos_token="<|endoftext|>", eos_token="<|im_end|>",
            add_generation_prompt=True, greeting=" hello")
    out = ChatTemplate(source, bos_token="<s>", eos_token="</s>").render(CONVERSATIONS["single"], eos_token="<E>")
    assert out.startswith("<s>user: ") and "<E>" in out and "</s>" not in out  # extra overrides


def test_tojson_options(tokenizer_file):
    source = ("{{ tools | tojson }}|{{ tools | tojson(indent=2) }}|{{ tools | tojson(separators=(',', ':')) }}|"
              "{{ tools | tojson(sort_keys=true) }}|{{ messages[0].content | tojson }}|"
              "{{ tools | tojson(ensure_ascii=true) }}")
    messages = [{"role": "user", "content": "<b>\"quoted\" & 'single' — 日本</b>"}]
    out = compare(tokenizer_file, source, messages, tools=TOOLS)
    assert "<b>" in out and "東京" in out and "\\u6771" in out  # no HTML escaping; ensure_ascii on request


def test_loopcontrols_namespace_and_dict(tokenizer_file):
    source = ("{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
              "{% if m.role == 'system' %}{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}{{ m.content }};"
              "{% endfor %}{{ ns.n }}{{ dict(a=1) | tojson }}")
    assert compare(tokenizer_file, source, CONVERSATIONS["multi_turn"]) == "def fib(n):;1{\"a\": 1}"


def test_generation_tags_render_their_body(tokenizer_file):
    source = ("{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' %}{% generation %}{{ m.content }}"
              "{% set inner = 1 %}{% endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}"
              "{{ inner is defined }}")
    assert compare(tokenizer_file, source, CONVERSATIONS["multi_turn"]).endswith("fib(n - 2)<user>Now in 日本語, "
                                                                                 "with emoji 🙂False")


def test_strftime_now():
    out = ChatTemplate("{{ strftime_now('%Y-%m-%d') }}").render(CONVERSATIONS["single"])
    today = datetime.date.today()
    assert out in {str(today), str(today - datetime.timedelta(days=1)), str(today + datetime.timedelta(days=1))}


def test_trailing_newline_and_whitespace_control(tokenizer_file):
    source = "{% for m in messages %}\n  {% if true %}\n{{ m.content }}\n  {% endif %}\n{% endfor %}\n"
    compare(tokenizer_file, source, CONVERSATIONS["system"])


# -- errors ------------------------------------------------------------------------------------------------


def test_raise_exception_becomes_template_error():
    source = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start\nwith a user') }}{% endif %}ok"
    template = ChatTemplate(source)
    assert template.render(CONVERSATIONS["single"]) == "ok"
    with pytest.raises(TemplateError) as info:
        template.render(CONVERSATIONS["system"])
    assert "Conversation must start with a user" in str(info.value) and "\n" not in str(info.value)


def test_syntax_error_names_the_line():
    with pytest.raises(TemplateError) as info:
        ChatTemplate("line one\n{% for m in messages %}\n{{ m.content }\n{% endfor %}")
    assert "line 3" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(TemplateError):
        ChatTemplate("{% endfor %}")
    with pytest.raises(TemplateError):
        ChatTemplate(None)


def test_render_failures_are_template_errors():
    with pytest.raises(TemplateError) as info:
        ChatTemplate("a\nb\n{{ messages[0].content + undefined_thing.x }}").render(CONVERSATIONS["single"])
    assert "line 3" in str(info.value)
    with pytest.raises(TemplateError):  # str + None inside the template
        ChatTemplate("{{ 'x' + messages[0].nothing }}").render(CONVERSATIONS["single"])


@pytest.mark.parametrize("source", [
    "{{ messages.__class__.__mro__ }}",
    "{{ ''.__class__.__subclasses__() }}",
    "{% set ns = namespace(_secret=1) %}",
    "{{ messages.append({'role': 'x'}) }}",  # immutable sandbox
    "{% set d = dict(a=1) %}{{ d.update(b=2) }}",
])
def test_sandbox(source):
    with pytest.raises(TemplateError):
        ChatTemplate(source).render(CONVERSATIONS["single"])


@pytest.mark.parametrize("messages", [
    "hello",
    {"role": "user", "content": "hi"},
    [],
    ["hello"],
    [{"content": "no role"}],
    [{"role": "", "content": "x"}],
    [{"role": 3, "content": "x"}],
    [{"role": "user"}],
    [{"role": "user", "content": None}],
    [{"role": "user", "content": 42}],
    [{"role": "user", "content": [{"type": "image", "image": "x.png"}]}],
    [{"role": "assistant", "content": None, "tool_calls": "call()"}],
    [{"role": "user", "content": "x", "meta": object()}],
    [{"role": "user", "content": "x", "meta": {1: "non-string key"}}],
    None,
])
def test_invalid_messages(messages):
    with pytest.raises(InvalidRequestError):
        ChatTemplate(QWEN3).render(messages)


@pytest.mark.parametrize("tools", ["get_weather", {"name": "x"}, [lambda: None], ["x"]])
def test_invalid_tools(tools):
    with pytest.raises(InvalidRequestError):
        ChatTemplate(QWEN3).render(CONVERSATIONS["single"], tools=tools)


def test_tool_call_message_without_content_is_valid(tokenizer_file):
    messages = [{"role": "user", "content": "add"},
                {"role": "assistant", "tool_calls": [{"function": {"name": "add", "arguments": '{"a": 1}'}}]}]
    out = compare(tokenizer_file, QWEN3, messages, add_generation_prompt=False)
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>' in out


def test_compiled_once_rendered_many_times():
    template = ChatTemplate(QWEN3)
    compiled = template._template
    outs = {template.render(CONVERSATIONS["multi_turn"], enable_thinking=False) for _ in range(5)}
    assert len(outs) == 1 and template._template is compiled
