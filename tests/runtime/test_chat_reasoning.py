"""Reasoning, thinking budget and tool calls end to end: a tiny Qwen3 bundle whose tokenizer has Qwen3's
<think> / </think> / <tool_call> / </tool_call> added tokens and whose template is Qwen3.5's (it opens
<think> in the prompt unless enable_thinking is false). Its random weights never choose the tags, so tests
that need the model to write them force the tokens (Generation.force), which run through the model, the
detokenizer and the parser like sampled ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen_edge.checkpoint.tiny import REASONING_TOKENS, TINY_QWEN3
from qwen_edge.runtime import DEFAULT_BUDGET_MESSAGE, InvalidRequestError, SamplingParams, load
from tests.conftest import make_hf_checkpoint

TEMPLATES = Path(__file__).resolve().parent / "templates"
HI = [{"role": "user", "content": "hi"}]
GREEDY = SamplingParams.greedy()
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    from qwen_edge.build import BuildRequest, build
    from qwen_edge.precision import Precision

    root = tmp_path_factory.mktemp("thinking")
    config = TINY_QWEN3 | {"max_position_embeddings": 2048}  # Qwen3.5's tool prompt is long in a tiny vocabulary
    ckpt = make_hf_checkpoint(root / "ckpt", config, seed=1, added_tokens=REASONING_TOKENS,
                              chat_template=(TEMPLATES / "qwen3_5.jinja").read_text(encoding="utf-8"))
    build(BuildRequest(ckpt, root / "bundle", Precision.preset("fp32")))
    return load(root / "bundle")


def ids(gen, text: str) -> list[int]:
    return [int(i) for i in gen.model.encode(text)]


def collect(chat):
    deltas = list(chat)
    result = chat.result()
    assert "".join(d.content or "" for d in deltas) == result.content
    assert "".join(d.reasoning or "" for d in deltas) == (result.reasoning or "")
    return deltas, result


def test_the_tags_are_single_tokens(gen):
    tok = gen.model.tokenizer
    for tag in REASONING_TOKENS:
        assert len(ids(gen, tag)) == 1 and tok.decode(ids(gen, tag)) == tag  # kept by skip_special_tokens


def test_prompt_opened_reasoning_without_an_end_is_all_reasoning(gen):
    prompt = gen.render_chat(HI)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    chat = gen.start_chat(HI, max_new_tokens=16, sampling=GREEDY, stop_token_ids=())
    _, result = collect(chat)
    assert result.content == "" and result.reasoning == result.text.strip("\n")
    assert result.finish_reason == "length" and result.tool_calls == []
    assert chat.reasoning_tokens == 16


def test_enable_thinking_false_passes_through(gen):
    chat = gen.start_chat(HI, template_vars={"enable_thinking": False}, max_new_tokens=12, sampling=GREEDY,
                          stop_token_ids=())
    _, result = collect(chat)
    assert result.reasoning is None and result.content == result.text and chat.reasoning_tokens == 0


@pytest.mark.parametrize("budget", [0, 1, 7])
def test_thinking_budget_closes_the_reasoning_after_n_tokens(gen, budget):
    forced = ids(gen, DEFAULT_BUDGET_MESSAGE)
    end_think = ids(gen, "</think>")[0]
    assert end_think in forced  # the single </think> token, not its text pieces
    chat = gen.start_chat(HI, thinking_budget=budget, max_new_tokens=budget + len(forced) + 10, sampling=GREEDY,
                          stop_token_ids=())
    deltas, result = collect(chat)
    tokens = result.token_ids
    free = tokens[:budget]
    assert end_think not in free  # the model did not close it itself
    assert tokens[budget:budget + len(forced)] == forced  # inserted right after N reasoning tokens
    assert chat.reasoning_tokens == budget
    thought = gen.model.decode(free).strip("\n")
    message = DEFAULT_BUDGET_MESSAGE.split("</think>")[0]
    assert result.reasoning == (thought + message).strip("\n")
    answer = gen.model.decode(tokens[budget + len(forced):])
    assert result.content == answer.lstrip("\n") and len(tokens) - budget - len(forced) == 10  # the answer follows
    # in the stream, all reasoning comes before any content
    kinds = [("r" if d.reasoning else "c") for d in deltas if d.reasoning or d.content]
    assert kinds == sorted(kinds, reverse=True)


def test_thinking_budget_counts_from_the_models_own_think_tag(gen):
    opening = ids(gen, "<think>\nab")
    forced = ids(gen, DEFAULT_BUDGET_MESSAGE)
    chat = gen.start_chat(HI, template_vars={"enable_thinking": False}, thinking_budget=4,
                          max_new_tokens=len(opening) + 2 + len(forced) + 3, sampling=GREEDY, stop_token_ids=())
    chat._gen.force(opening)  # the model opens <think> itself
    _, result = collect(chat)
    # "<think>" is not reasoning; "\n", "a", "b" are (3 tokens), then one of the model's own
    start = len(opening) + 1
    assert chat.reasoning_tokens == 4 and result.token_ids[start:start + len(forced)] == forced
    assert result.reasoning.startswith("ab") and result.reasoning.endswith("directly now.")


def test_a_custom_budget_message(gen):
    chat = gen.start_chat(HI, thinking_budget=2, thinking_budget_message="\nOK.\n</think>\n\n", max_new_tokens=12,
                          sampling=GREEDY, stop_token_ids=())
    _, result = collect(chat)
    assert result.reasoning.endswith("OK.")
    with pytest.raises(InvalidRequestError, match="thinking_budget_message"):
        gen.start_chat(HI, thinking_budget=2, thinking_budget_message="no closing tag")
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(InvalidRequestError, match="thinking_budget"):
            gen.start_chat(HI, thinking_budget=bad)


def test_no_budget_when_the_model_closes_first(gen):
    said = ids(gen, "short\n</think>\n\nDone.")
    chat = gen.start_chat(HI, thinking_budget=50, max_new_tokens=len(said) + 5, sampling=GREEDY, stop_token_ids=())
    chat._gen.force(said)
    _, result = collect(chat)
    assert result.reasoning == "short" and result.content.startswith("Done.")
    assert ids(gen, "Considering")[0] not in result.token_ids


def test_a_tool_call_after_reasoning_end_to_end(gen):
    said = ("The user wants the weather.\n</think>\n\nLet me check.\n\n<tool_call>\n<function=get_weather>\n"
            "<parameter=city>\n東京\n</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>")
    forced = ids(gen, said)
    # every sampled token stops: the answer is exactly the forced text, then a stop token
    chat = gen.start_chat(HI, tools=[WEATHER], max_new_tokens=len(forced) + 5, sampling=GREEDY,
                          stop_token_ids=range(gen.model.vocab_size))
    chat._gen.force(forced)
    deltas, result = collect(chat)
    assert result.reasoning == "The user wants the weather." and result.content == "Let me check."
    (call,) = result.tool_calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "東京", "days": 3}
    assert result.finish_reason == "tool_calls" and result.stats.finish_reason == "eos"
    pieces = [d.tool_call for d in deltas if d.tool_call]
    assert pieces[0].id == call.id and pieces[0].name == "get_weather" and pieces[0].arguments == ""
    assert "".join(p.arguments for p in pieces) == call.arguments
    assert result.text == said


def test_tool_calls_are_text_without_tools(gen):
    said = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    forced = ids(gen, said)
    chat = gen.start_chat(HI, template_vars={"enable_thinking": False}, max_new_tokens=len(forced) + 1,
                          stop_token_ids=range(gen.model.vocab_size))
    chat._gen.force(forced)
    _, result = collect(chat)
    assert result.tool_calls == [] and result.content == said and result.finish_reason == "stop"


def test_close_in_the_middle_of_reasoning(gen):
    chat = gen.start_chat(HI, max_new_tokens=40, sampling=GREEDY, stop_token_ids=())
    it = iter(chat)
    next(it)
    chat.close()
    result = chat.result()
    assert result.stats.finish_reason == "cancelled" and result.finish_reason == "stop"
    assert result.reasoning and result.content == "" and len(result.token_ids) < 40
