"""OpenAI request bodies -> typed, checked requests. Every problem is a BadRequest naming the field.

The body is parsed strictly (UTF-8, JSON without NaN, one object); known fields are checked for type and
range; fields we cannot honour (n > 1, logprobs, penalties other than repetition_penalty, JSON mode)
are refused by name rather than ignored; unknown fields are ignored, as OpenAI-compatible servers do,
because clients send their own (`user`, `metadata`, `store`, ...).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import BadRequest

ROLES = {"system", "user", "assistant", "tool"}
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 256
MAX_TOKENS_LIMIT = 1 << 31

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", dict: "an object",
               list: "an array"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def parse_json(raw: bytes) -> dict:
    """The request body as a JSON object."""
    if not raw.strip():
        raise BadRequest("the request body is empty (expected a JSON object)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not valid UTF-8 (byte {exc.start})") from None

    def no_constants(name: str):
        raise BadRequest(f"the request body is not valid JSON ({name} is not a JSON number)")

    try:
        data = json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise BadRequest("the request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the request body must be a JSON object, got {_json_type(data)}")
    return data


def _get(obj: dict, key: str, kind: type, where: str = "", *, required: bool = False) -> Any:
    """obj[key] checked to be of `kind` (int also passes as float; bool never passes as a number);
    None when absent or null, unless required."""
    path = f"{where}{key}"
    value = obj.get(key)
    if value is None:
        if required:
            raise BadRequest(f"'{path}' is required", param=path)
        return None
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise BadRequest(f"'{path}' must be {_TYPE_NAMES[kind]}, got {_json_type(value)}", param=path)
    if kind is float and not math.isfinite(value):
        raise BadRequest(f"'{path}' must be finite", param=path)
    return value


def _in_range(value, key: str, low=None, high=None, *, low_open: bool = False, note: str = ""):
    if value is None:
        return None
    if (low is not None and (value < low or (low_open and value == low))) or (high is not None and value > high):
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else f"<= {high}"
        rule = " and ".join(r for r in (lo, hi) if r)
        raise BadRequest(f"'{key}' must be {rule}{note}, got {value}", param=key)
    return value


@dataclass(frozen=True)
class Sampling:
    """The sampling and length fields of a request; None = the bundle's default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict]
    model: str | None = None
    tools: list[dict] | None = None
    template_vars: dict = field(default_factory=dict)
    thinking_budget: int | None = None
    stream: bool = False
    include_usage: bool = False
    sampling: Sampling = Sampling()


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str | list[int]
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    sampling: Sampling = Sampling()


def _refuse_unsupported(body: dict) -> None:
    n = _get(body, "n", int)
    if n is not None and n != 1:
        raise BadRequest(f"'n' must be 1 (one choice per request), got {n}", param="n")
    best_of = _get(body, "best_of", int)
    if best_of is not None and best_of != 1:
        raise BadRequest(f"'best_of' must be 1, got {best_of}", param="best_of")
    logprobs = body.get("logprobs")
    if logprobs not in (None, False, 0):
        raise BadRequest("'logprobs' is not supported", param="logprobs")
    if body.get("top_logprobs") not in (None, 0):
        raise BadRequest("'top_logprobs' is not supported", param="top_logprobs")
    for key in ("presence_penalty", "frequency_penalty"):
        value = _get(body, key, float)
        if value not in (None, 0.0):
            raise BadRequest(f"'{key}' is not supported (use repetition_penalty)", param=key)
    if body.get("logit_bias") not in (None, {}):
        raise BadRequest("'logit_bias' is not supported", param="logit_bias")
    fmt = _get(body, "response_format", dict)
    if fmt is not None and fmt.get("type") != "text":
        raise BadRequest(f"'response_format' type {fmt.get('type')!r} is not supported (only 'text')",
                         param="response_format")


def _stream_fields(body: dict) -> tuple[bool, bool]:
    stream = bool(_get(body, "stream", bool))
    options = _get(body, "stream_options", dict)
    include_usage = False
    if options is not None:
        if not stream:
            raise BadRequest("'stream_options' is only allowed with 'stream': true", param="stream_options")
        include_usage = bool(_get(options, "include_usage", bool, "stream_options."))
    return stream, include_usage


def _stop(body: dict) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise BadRequest(f"'stop' must be a string or an array of strings, got {_json_type(value)}", param="stop")
    if len(items) > MAX_STOP_STRINGS:
        raise BadRequest(f"'stop' has {len(items)} strings, at most {MAX_STOP_STRINGS} are allowed", param="stop")
    for item in items:
        if not isinstance(item, str):
            raise BadRequest(f"'stop' must hold strings, got {_json_type(item)}", param="stop")
        if not item or len(item) > MAX_STOP_LENGTH:
            raise BadRequest(f"'stop' strings must have 1 to {MAX_STOP_LENGTH} characters", param="stop")
    return tuple(items)


def parse_sampling(body: dict, *, chat: bool) -> Sampling:
    _refuse_unsupported(body)
    temperature = _in_range(_get(body, "temperature", float), "temperature", 0.0)
    top_p = _in_range(_get(body, "top_p", float), "top_p", 0.0, 1.0, low_open=True)
    top_k = _get(body, "top_k", int)
    if top_k == -1:  # the common extension's spelling of "off"
        top_k = 0
    _in_range(top_k, "top_k", 0, note=" (-1 or 0 = off)")
    penalty = _in_range(_get(body, "repetition_penalty", float), "repetition_penalty", 0.0, low_open=True)
    seed = _in_range(_get(body, "seed", int), "seed", 0, (1 << 63) - 1)
    keys = ("max_completion_tokens", "max_tokens") if chat else ("max_tokens",)
    max_tokens = None
    for key in keys:
        value = _in_range(_get(body, key, int), key, 1, MAX_TOKENS_LIMIT)
        if value is not None and max_tokens is None:
            max_tokens = value
    return Sampling(temperature, top_p, top_k, penalty, seed, max_tokens, _stop(body))


def _text_parts(content: list, where: str) -> str:
    texts = []
    for j, part in enumerate(content):
        path = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise BadRequest(f"'{path}' must be an object, got {_json_type(part)}", param=path)
        kind = part.get("type")
        if kind != "text":
            raise BadRequest(f"'{path}.type' {kind!r} is not supported (only 'text' parts)", param=f"{path}.type")
        texts.append(_get(part, "text", str, f"{path}.", required=True))
    return "\n".join(texts)


def _tool_calls(calls: Any, where: str) -> list[dict]:
    if not isinstance(calls, list):
        raise BadRequest(f"'{where}' must be an array, got {_json_type(calls)}", param=where)
    out = []
    for j, call in enumerate(calls):
        path = f"{where}[{j}]"
        if not isinstance(call, dict):
            raise BadRequest(f"'{path}' must be an object, got {_json_type(call)}", param=path)
        function = _get(call, "function", dict, f"{path}.", required=True)
        name = _get(function, "name", str, f"{path}.function.", required=True)
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, str):  # templates want the object, as transformers documents
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                raise BadRequest(f"'{path}.function.arguments' is not valid JSON",
                                 param=f"{path}.function.arguments") from None
        if not isinstance(arguments, dict):
            raise BadRequest(f"'{path}.function.arguments' must be a JSON object", param=f"{path}.function.arguments")
        entry = {"type": "function", "function": {"name": name, "arguments": arguments}}
        if isinstance(call.get("id"), str):
            entry["id"] = call["id"]
        out.append(entry)
    return out


def _message(message: Any, i: int) -> dict:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise BadRequest(f"'{where}' must be an object, got {_json_type(message)}", param=where)
    role = _get(message, "role", str, f"{where}.", required=True)
    if role == "developer":
        role = "system"
    if role not in ROLES:
        raise BadRequest(f"'{where}.role' must be one of {', '.join(sorted(ROLES))}, got {role!r}", param=f"{where}.role")
    out: dict[str, Any] = {"role": role}
    content = message.get("content")
    if isinstance(content, list):
        content = _text_parts(content, f"{where}.content")
    elif content is not None and not isinstance(content, str):
        raise BadRequest(f"'{where}.content' must be a string or an array of text parts, got {_json_type(content)}",
                         param=f"{where}.content")
    calls = message.get("tool_calls")
    if calls is not None:
        if role != "assistant":
            raise BadRequest(f"'{where}.tool_calls' is only allowed on assistant messages", param=f"{where}.tool_calls")
        out["tool_calls"] = _tool_calls(calls, f"{where}.tool_calls")
    if content is None and not out.get("tool_calls"):
        raise BadRequest(f"'{where}.content' is required", param=f"{where}.content")
    out["content"] = content if content is not None else ""
    for key in ("name", "tool_call_id"):
        value = _get(message, key, str, f"{where}.")
        if value is not None:
            out[key] = value
    for key in ("reasoning_content", "reasoning"):  # reasoning in history, under either name
        value = _get(message, key, str, f"{where}.")
        if value is not None:
            out["reasoning_content"] = value
    return out


def _tools(body: dict) -> list[dict] | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise BadRequest(f"'tools' must be an array, got {_json_type(tools)}", param="tools")
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise BadRequest(f"'{where}' must be an object, got {_json_type(tool)}", param=where)
        kind = tool.get("type", "function")
        if kind != "function":
            raise BadRequest(f"'{where}.type' must be 'function', got {kind!r}", param=f"{where}.type")
        function = _get(tool, "function", dict, f"{where}.", required=True)
        name = _get(function, "name", str, f"{where}.function.", required=True)
        if not name:
            raise BadRequest(f"'{where}.function.name' is empty", param=f"{where}.function.name")
        _get(function, "description", str, f"{where}.function.")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise BadRequest(f"'{where}.function.parameters' must be a JSON-schema object, got {_json_type(parameters)}",
                             param=f"{where}.function.parameters")
        out.append({"type": "function", "function": function})
    return out or None


def _tool_choice(body: dict, tools: list[dict] | None) -> list[dict] | None:
    choice = body.get("tool_choice")
    if choice is None or choice == "auto":
        return tools
    if choice == "none":
        return None
    raise BadRequest(f"'tool_choice' {choice!r} is not supported (only 'auto' or 'none')", param="tool_choice")


def _model(body: dict) -> str | None:
    return _get(body, "model", str)


def parse_chat(body: dict) -> ChatRequest:
    messages = body.get("messages")
    if messages is None:
        raise BadRequest("'messages' is required", param="messages")
    if not isinstance(messages, list):
        raise BadRequest(f"'messages' must be an array, got {_json_type(messages)}", param="messages")
    if not messages:
        raise BadRequest("'messages' is empty", param="messages")
    parsed = [_message(m, i) for i, m in enumerate(messages)]
    tools = _tool_choice(body, _tools(body))
    template_vars = _get(body, "chat_template_kwargs", dict) or {}
    for reserved in ("messages", "tools", "add_generation_prompt"):
        if reserved in template_vars:
            raise BadRequest(f"'chat_template_kwargs' may not set '{reserved}'", param="chat_template_kwargs")
    budget = _in_range(_get(body, "thinking_budget", int), "thinking_budget", 0)
    stream, include_usage = _stream_fields(body)
    return ChatRequest(parsed, _model(body), tools, dict(template_vars), budget, stream, include_usage,
                       parse_sampling(body, chat=True))


def parse_completion(body: dict) -> CompletionRequest:
    prompt = body.get("prompt")
    if prompt is None:
        raise BadRequest("'prompt' is required", param="prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, list):
        if not prompt:
            raise BadRequest("'prompt' is empty", param="prompt")
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            raise BadRequest("'prompt' must be a string or an array of token ids (one prompt per request)",
                             param="prompt")
    elif not isinstance(prompt, str):
        raise BadRequest(f"'prompt' must be a string or an array of token ids, got {_json_type(prompt)}", param="prompt")
    elif not prompt:
        raise BadRequest("'prompt' is empty", param="prompt")
    if body.get("echo") not in (None, False):
        raise BadRequest("'echo' is not supported", param="echo")
    if body.get("suffix") not in (None, ""):
        raise BadRequest("'suffix' is not supported", param="suffix")
    stream, include_usage = _stream_fields(body)
    return CompletionRequest(prompt, _model(body), stream, include_usage, parse_sampling(body, chat=False))


__all__ = ["ChatRequest", "CompletionRequest", "Sampling", "parse_chat", "parse_completion", "parse_json"]
