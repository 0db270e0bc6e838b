"""Reasoning / content / tool-call parsing of chat answers, on outputs written the way Qwen models write them,
streamed in every way they can be cut."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_edge.runtime.chat_types import ChatDelta
from qwen_edge.runtime.output_parsing import OutputParser
from qwen_edge.runtime.tool_calls import argument_pieces, arguments_json, convert_value, parse_block, tool_schemas

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string"}, "days": {"type": "integer"},
                                                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                                                "required": ["city"]}}}
TYPED = {"type": "function", "function": {"name": "typed", "parameters": {"type": "object", "properties": {
    "n": {"type": "integer"}, "x": {"type": "number"}, "flag": {"type": "boolean"}, "obj": {"type": "object"},
    "items": {"type": "array"}, "code": {"type": "string"}, "maybe": {"type": ["integer", "null"]},
    "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]}, "untyped": {"description": "no type"}}}}}
TOOLS = [WEATHER, TYPED, {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
                                                                                             "properties": {}}}}]

# (text, parser options, content, reasoning, [(name, arguments)])
R = {"reasoning": True}  # a template that knows <think>, the model opens it
OPEN = {"reasoning": True, "starts_in_reasoning": True}  # the prompt opened it (Qwen3 thinking, Qwen3.5)
T = {"tools": TOOLS}
CASES = {
    "qwen3_thinking": (
        "<think>\nOkay, the user asks for 2 + 2. That is 4.\n</think>\n\n2 + 2 = **4**.", R,
        "2 + 2 = **4**.", "Okay, the user asks for 2 + 2. That is 4.", []),
    "prompt_opened": (
        "The user wants a haiku about Python.\nLet me count syllables: 5-7-5.\n</think>\n\nIndented with care,\n",
        OPEN, "Indented with care,\n", "The user wants a haiku about Python.\nLet me count syllables: 5-7-5.", []),
    "no_close_prompt_opened": ("Let me think about this carefully and", OPEN, "",
                               "Let me think about this carefully and", []),
    "no_close_model_opened": ("<think>\nstill going\n", R, "", "still going", []),
    "thinking_disabled": ("Hello! How can I help you today?", R, "Hello! How can I help you today?", None, []),
    "leading_space_then_think": ("\n <think>a</think>b", R, "b", "a", []),
    "not_a_reasoning_template": ("<think>x</think>\n\ny", {}, "<think>x</think>\n\ny", None, []),
    "empty_reasoning": ("\n\n</think>\n\nAnswer.", OPEN, "Answer.", None, []),
    "hermes_several_calls": (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "San Francisco, CA", "unit": "celsius"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tokyo", "unit": "celsius"}}\n'
        '</tool_call>', T, "", None,
        [("get_weather", {"city": "San Francisco, CA", "unit": "celsius"}),
         ("get_weather", {"city": "Tokyo", "unit": "celsius"})]),
    "call_after_reasoning": (
        "<think>\nThe user wants the weather in Paris, so I should call get_weather.\n</think>\n\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', R | T, "",
        "The user wants the weather in Paris, so I should call get_weather.", [("get_weather", {"city": "Paris"})]),
    "text_before_call": (
        "I'll look that up for you.\n\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>", T,
        "I'll look that up for you.", None, [("get_time", {})]),
    "text_after_call": ('<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n\nDone, see above.', T,
                        "Done, see above.", None, [("get_time", {})]),
    "unicode": (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "東京", "note": "naïve café 🙂", '
        '"escaped": "\\u6771\\u4eac"}}\n</tool_call>', T, "", None,
        [("get_weather", {"city": "東京", "note": "naïve café 🙂", "escaped": "東京"})]),
    "nested_json": (
        '<tool_call>\n{"name": "create_event", "arguments": {"title": "Standup", "attendees": [{"email": "a@x.io", '
        '"optional": false}, {"email": "b@y.io", "optional": true}], "time": {"start": "09:00", "end": "09:15"}, '
        '"repeat": null, "tags": ["a", "</tool_call> inside a string", "<tool_call> too \\" \\\\"]}}\n</tool_call>', T, "", None, None),
    "open_string_falls_back_to_the_first_tag": (
        '<tool_call>\n{"name": "f", "arguments": {"a": "oops}}\n</tool_call>\nAfter.', T,
        '<tool_call>\n{"name": "f", "arguments": {"a": "oops}}\n</tool_call>\nAfter.', None, []),
    "broken_json": (
        'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"\n</tool_call>', T,
        'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"\n</tool_call>', None, []),
    "unterminated_incomplete": ('Sure.\n<tool_call>\n{"name": "get_weather", "argu', T,
                                'Sure.\n<tool_call>\n{"name": "get_weather", "argu', None, []),
    "unterminated_complete": ('<tool_call>\n{"name": "get_time", "arguments": {}}\n', T, "", None,
                              [("get_time", {})]),
    "partial_open_tag_at_end": ("Here it comes <tool_ca", T, "Here it comes <tool_ca", None, []),
    "broken_then_good": (
        '<tool_call>\n{"name": "get_weather", "arguments": {\n<tool_call>\n{"name": "get_time", "arguments": {}}\n'
        '</tool_call>', T, '<tool_call>\n{"name": "get_weather", "arguments": {', None, [("get_time", {})]),
    "not_json": ("<tool_call>\nget_weather(city='Paris')\n</tool_call>", T,
                 "<tool_call>\nget_weather(city='Paris')\n</tool_call>", None, []),
    "no_name": ('<tool_call>\n{"arguments": {"city": "Paris"}}\n</tool_call>', T,
                '<tool_call>\n{"arguments": {"city": "Paris"}}\n</tool_call>', None, []),
    "arguments_as_string": ('<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}\n'
                            '</tool_call>', T, "", None, [("get_weather", {"city": "Oslo"})]),
    "nan_is_not_json": ('<tool_call>\n{"name": "typed", "arguments": {"x": NaN}}\n</tool_call>', T,
                        '<tool_call>\n{"name": "typed", "arguments": {"x": NaN}}\n</tool_call>', None, []),
    "tools_not_given": ('<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>', {},
                        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>', None, []),
    "xml_after_reasoning": (
        "The user wants a 3 day forecast for Paris.\n</think>\n\nLet me check.\n\n<tool_call>\n<function=get_weather>\n"
        "<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>", OPEN | T,
        "Let me check.", "The user wants a 3 day forecast for Paris.", [("get_weather", {"city": "Paris", "days": 3})]),
    "xml_typed_values": (
        "<tool_call>\n<function=typed>\n<parameter=n>\n007\n</parameter>\n<parameter=x>\n-2.5e3\n</parameter>\n"
        "<parameter=flag>\nTrue\n</parameter>\n<parameter=obj>\n{\"a\": [1, 2], \"b\": {\"c\": null}}\n</parameter>\n"
        "<parameter=items>\n[1, \"two\", 3.0]\n</parameter>\n<parameter=code>\ndef f(x):\n    return x < 2\n\n"
        "</parameter>\n<parameter=maybe>\nnull\n</parameter>\n<parameter=either>\n12\n</parameter>\n"
        "<parameter=untyped>\n42\n</parameter>\n<parameter=unknown>\n[1]\n</parameter>\n</function>\n</tool_call>",
        T, "", None,
        [("typed", {"n": "007", "x": -2500.0, "flag": True, "obj": {"a": [1, 2], "b": {"c": None}},
                    "items": [1, "two", 3.0], "code": "def f(x):\n    return x < 2\n", "maybe": None, "either": "12",
                    "untyped": "42", "unknown": "[1]"})]),
    "xml_two_calls_unicode": (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nZürich 🌧\n</parameter>\n</function>\n</tool_call>\n"
        "<tool_call>\n<function=get_time>\n</function>\n</tool_call>", T, "", None,
        [("get_weather", {"city": "Zürich 🌧"}), ("get_time", {})]),
    "xml_missing_parameter_close": (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</function>\n</tool_call>", T,
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</function>\n</tool_call>", None, []),
    "xml_stray_text": (
        "<tool_call>\n<function=get_weather>\ncity is Paris\n</function>\n</tool_call>", T,
        "<tool_call>\n<function=get_weather>\ncity is Paris\n</function>\n</tool_call>", None, []),
    "xml_unterminated_complete": ("<tool_call>\n<function=get_time>\n</function>", T, "", None, [("get_time", {})]),
    "xml_unterminated_incomplete": ("<tool_call>\n<function=get_weather>\n<parameter=ci", T,
                                    "<tool_call>\n<function=get_weather>\n<parameter=ci", None, []),
    "tool_call_inside_reasoning_is_reasoning": (
        '<think>\nmaybe <tool_call>{"name": "get_time"}</tool_call>\n</think>\n\nNo.', R | T, "No.",
        'maybe <tool_call>{"name": "get_time"}</tool_call>', []),
    "content_whitespace_kept_without_calls": ("  spaced  \n\n", T, "  spaced  \n\n", None, []),
}


def _ids():
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def parse(chunks, options) -> tuple[OutputParser, list[ChatDelta]]:
    parser = OutputParser(new_id=_ids(), **options)
    deltas = []
    for chunk in chunks:
        deltas += parser.push(chunk)
    deltas += parser.finish()
    return parser, deltas


def from_deltas(deltas: list[ChatDelta]) -> tuple[str, str, list[tuple[str, str, str]]]:
    """(content, reasoning, [(id, name, arguments)]) rebuilt from streamed deltas, checking their shape."""
    content = "".join(d.content for d in deltas if d.content is not None)
    reasoning = "".join(d.reasoning for d in deltas if d.reasoning is not None)
    calls: dict[int, list] = {}
    for d in deltas:
        assert sum(x is not None for x in (d.content, d.reasoning, d.tool_call)) == 1
        assert d.content != "" and d.reasoning != ""
        if d.tool_call is None:
            continue
        tc = d.tool_call
        if tc.index not in calls:
            assert tc.id and tc.name and tc.index == len(calls)  # the first piece names the call
            calls[tc.index] = [tc.id, tc.name, tc.arguments]
        else:
            assert tc.id is None and tc.name is None
            calls[tc.index][2] += tc.arguments
    return content, reasoning, [tuple(c) for c in calls.values()]


def check(parser: OutputParser, deltas: list[ChatDelta]) -> None:
    content, reasoning, calls = from_deltas(deltas)
    assert content == parser.content
    assert reasoning == (parser.reasoning or "")
    assert calls == [(c.id, c.name, c.arguments) for c in parser.tool_calls]


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_shot(name):
    text, options, content, reasoning, calls = CASES[name]
    parser, deltas = parse([text], options)
    check(parser, deltas)
    assert parser.content == content
    assert parser.reasoning == reasoning
    if calls is not None:
        assert [(c.name, json.loads(c.arguments)) for c in parser.tool_calls] == calls
    for call in parser.tool_calls:
        assert isinstance(json.loads(call.arguments), dict)  # always a JSON object in a string


def test_nested_arguments_survive_exactly():
    parser, _ = parse([CASES["nested_json"][0]], T)
    (call,) = parser.tool_calls
    args = json.loads(call.arguments)
    assert call.name == "create_event" and args["attendees"][1] == {"email": "b@y.io", "optional": True}
    assert args["repeat"] is None and args["tags"][1:] == ["</tool_call> inside a string", '<tool_call> too " \\']


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_two_piece_cut_and_char_by_char(name):
    text, options, *_ = CASES[name]
    whole, whole_deltas = parse([text], options)
    expected = from_deltas(whole_deltas)
    for cut in range(len(text) + 1):
        parser, deltas = parse([text[:cut], text[cut:]], options)
        check(parser, deltas)
        assert from_deltas(deltas) == expected, cut
    parser, deltas = parse(list(text), options)
    check(parser, deltas)
    assert from_deltas(deltas) == expected


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(CASES)), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_streaming_in_random_chunks_equals_the_one_shot_parse(name, cuts):
    text, options, *_ = CASES[name]
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    chunks = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    parser, deltas = parse(chunks, options)
    check(parser, deltas)
    whole, whole_deltas = parse([text], options)
    assert from_deltas(deltas) == from_deltas(whole_deltas)
    assert (parser.content, parser.reasoning) == (whole.content, whole.reasoning)


_PIECES = ["<think>", "</think>", "<tool_call>", "</tool_call>", "\n", " ", "a", "é", "{", "}", '"name"', ": ",
           '"f"', ', "arguments": ', '{"k": 1}', "<function=f>", "<parameter=k>", "</parameter>", "</function>",
           "<", "/", ">", "<tool_", "think>"]


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.sampled_from(_PIECES), max_size=30), cuts=st.lists(st.integers(0, 300), max_size=10),
       options=st.sampled_from([{}, R, OPEN, T, R | T, OPEN | T]))
def test_arbitrary_text_streams_like_one_shot_and_never_raises(parts, cuts, options):
    text = "".join(parts)
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    parser, deltas = parse([text[a:b] for a, b in zip(bounds, bounds[1:])], options)
    check(parser, deltas)
    whole, whole_deltas = parse([text], options)
    assert from_deltas(deltas) == from_deltas(whole_deltas)
    for call in parser.tool_calls:
        assert isinstance(json.loads(call.arguments), dict)


def test_nothing_is_lost_without_reasoning_or_tools():
    text = "<think>a</think> <tool_call>{}</tool_call>"
    parser, _ = parse([text[:5], text[5:]], {})
    assert parser.content == text and parser.reasoning is None


def test_in_reasoning_follows_the_text():
    parser = OutputParser(reasoning=True)
    assert not parser.in_reasoning
    parser.push("<thi")
    assert not parser.in_reasoning
    parser.push("nk>\nhm")
    assert parser.in_reasoning
    parser.push("</think>")
    assert not parser.in_reasoning
    parser.finish()
    with pytest.raises(ValueError):
        parser.push("x")


def test_call_ids_are_unique_by_default():
    parser = OutputParser(tools=TOOLS)
    parser.push('<tool_call>{"name": "get_time"}</tool_call><tool_call>{"name": "get_time"}</tool_call>')
    parser.finish()
    a, b = parser.tool_calls
    assert a.id.startswith("call_") and a.id != b.id and a.arguments == "{}"


# -- the block reader ------------------------------------------------------------------------------------------


def test_argument_pieces_join_to_the_json():
    for args in ({}, {"a": 1}, {"a": [1, {"b": None}], "ü": "東京", "q": "\"quoted\""}):
        pieces = list(argument_pieces(args))
        assert "".join(pieces) == arguments_json(args) and json.loads("".join(pieces)) == args
        assert len(pieces) == (1 if not args else len(args) + 1)


@pytest.mark.parametrize("value, schema, expected", [
    ("12", {"type": "integer"}, 12), ("12.0", {"type": "integer"}, 12), ("12.5", {"type": "integer"}, "12.5"),
    ("abc", {"type": "integer"}, "abc"), ("1e999", {"type": "number"}, "1e999"), ("NaN", {"type": "number"}, "NaN"),
    (" 3 ", {"type": "number"}, 3), ("false", {"type": "boolean"}, False), ("yes", {"type": "boolean"}, "yes"),
    ("true", {"type": "integer"}, "true"), ("[1]", {"type": "object"}, "[1]"), ("{}", {"type": "array"}, "{}"),
    ("null", {"type": "string"}, "null"), ("None", {"type": ["null", "integer"]}, None),
    ("5", {"type": ["string", "integer"]}, "5"), ("5", None, "5"), ("5", {"enum": [5]}, "5"),
    ("5", {"oneOf": [{"type": "integer"}]}, 5),
])
def test_convert_value(value, schema, expected):
    got = convert_value(value, schema)
    assert got == expected and type(got) is type(expected)


def test_parse_block_shapes():
    assert parse_block('{"name": " f ", "parameters": {"a": 1}}') == ("f", {"a": 1})
    assert parse_block('{"name": "f", "arguments": null}') == ("f", {})
    assert parse_block('{"name": "f", "arguments": [1]}') is None
    assert parse_block('{"name": "", "arguments": {}}') is None
    assert parse_block('[{"name": "f"}]') is None
    deep = '{"name": "f", "arguments": {"a": ' + "[" * 100000 + "]" * 100000 + "}}"
    assert parse_block(deep) is None  # nested too deeply: not a call, not a crash
    assert parse_block("<function=>\n</function>") is None
    assert parse_block("<function=f>\n</function>\ntrailing") is None
    assert tool_schemas([{"function": {"name": "f"}}, "junk", {"function": "x"}]) == {"f": {}}
