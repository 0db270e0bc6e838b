"""Chat templates: render a conversation to the prompt text, as transformers' apply_chat_template(tokenize=False).

The template is Hugging Face's jinja dialect, rendered the way transformers does it: a sandboxed, immutable
jinja2 environment with trim_blocks / lstrip_blocks and loop controls, a `tojson` filter that does not escape
HTML or non-ASCII, and the globals `raise_exception` and `strftime_now`. Like transformers, message keys whose
value is None are dropped before rendering, and reasoning given as `thinking` / `reasoning` is also exposed as
`reasoning_content` (the name Qwen3's template reads).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Mapping

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import InvalidRequestError, TemplateError

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class _TemplateRaised(Exception):
    """raise_exception() inside a template (kept apart from jinja's own errors to report the message as is)."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _raise_exception(message):
    raise _TemplateRaised(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format):  # noqa: A002 - the name templates use
    return datetime.now().strftime(format)


class _TemplateDict:
    """`dict(...)` for templates, without exposing the dict type itself."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """jinja's namespace(), refusing underscore-prefixed attributes (no reaching into Python internals)."""

    def __init__(*args, **kwargs):  # same signature trick as jinja2.utils.Namespace
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} is not allowed (leading underscore)")


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for transformers' training masks; here it
    just renders its body (in its own scope, as in transformers)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    @staticmethod
    def _render(caller):
        return caller()


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


def _plain(value: Any, where: str) -> Any:
    """A deep copy made of JSON types only (what a template may see)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidRequestError(f"{where}: keys must be strings, got {key!r}")
            out[key] = _plain(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise InvalidRequestError(f"{where}: unsupported value of type {type(value).__name__}")


def _check_messages(messages) -> list[dict]:
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, (list, tuple)):
        raise InvalidRequestError(f"messages must be a list of dicts, got {type(messages).__name__}")
    if not messages:
        raise InvalidRequestError("messages is empty")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise InvalidRequestError(f"{where} must be a dict, got {type(message).__name__}")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise InvalidRequestError(f"{where}: 'role' must be a non-empty string, got {role!r}")
        if "content" not in message and not message.get("tool_calls"):
            raise InvalidRequestError(f"{where}: no 'content'")
        content = message.get("content")
        if content is None:
            if not message.get("tool_calls"):
                raise InvalidRequestError(f"{where}: 'content' is None but the message has no tool_calls")
        elif isinstance(content, (list, tuple)):
            content = _join_text_parts(content, f"{where}.content")
        elif not isinstance(content, str):
            raise InvalidRequestError(f"{where}: 'content' must be a string or a list of text parts, got "
                                      f"{type(content).__name__}")
        tool_calls = message.get("tool_calls")
        if tool_calls is not None and not isinstance(tool_calls, (list, tuple)):
            raise InvalidRequestError(f"{where}: 'tool_calls' must be a list, got {type(tool_calls).__name__}")
        # As transformers: keys whose value is None are dropped (templates test for presence, not None).
        plain = {key: value for key, value in _plain(message, where).items() if value is not None}
        if content is not None:
            plain["content"] = content
        if tool_calls:
            plain["tool_calls"] = [_tool_call(call, f"{where}.tool_calls[{j}]") for j, call in enumerate(plain["tool_calls"])]
        reasoning = next((plain[key] for key in _REASONING_FIELDS if plain.get(key) is not None), None)
        if reasoning is not None:
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        out.append(plain)
    return out


def _join_text_parts(parts, where: str) -> str:
    """OpenAI content parts [{"type": "text", "text": ...}, ...] as one string: the texts joined with
    nothing between them, as Qwen's multimodal templates render a list of text items."""
    texts = []
    for j, part in enumerate(parts):
        if not isinstance(part, Mapping):
            raise InvalidRequestError(f"{where}[{j}] must be a dict, got {type(part).__name__}")
        kind = part.get("type", "text" if "text" in part else None)
        if kind != "text":
            raise InvalidRequestError(f"{where}[{j}].type {kind!r} is not supported (only 'text' parts)")
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidRequestError(f"{where}[{j}].text must be a string, got {type(text).__name__}")
        texts.append(text)
    return "".join(texts)


def _tool_call(call: Any, where: str) -> dict:
    """A tool call of an assistant message, with its arguments as a dict: OpenAI sends them as a JSON string,
    Qwen's templates iterate them as a mapping (Qwen3.5, Qwen3-Coder) or print them with tojson (Qwen2.5)."""
    if not isinstance(call, dict):
        raise InvalidRequestError(f"{where} must be a dict, got {type(call).__name__}")
    function = call.get("function", call)
    if not isinstance(function, dict):
        raise InvalidRequestError(f"{where}.function must be a dict, got {type(function).__name__}")
    fwhere = f"{where}.function" if "function" in call else where
    if not isinstance(function.get("name"), str):
        raise InvalidRequestError(f"{fwhere}.name must be a string, got {function.get('name')!r}")
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"{fwhere}.arguments is not valid JSON ({exc.msg} at {exc.pos})") from None
        if not isinstance(arguments, dict):
            raise InvalidRequestError(f"{fwhere}.arguments must be a JSON object, got {type(arguments).__name__}")
        function = {**function, "arguments": arguments}
        call = {**call, "function": function} if "function" in call else function
    return call


def _check_tools(tools) -> list[dict] | None:
    if tools is None:
        return None
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, (list, tuple)):
        raise InvalidRequestError(f"tools must be a list of JSON-schema dicts, got {type(tools).__name__}")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise InvalidRequestError(f"tools[{i}] must be a JSON-schema dict, got {type(tool).__name__}")
        out.append(_plain(tool, f"tools[{i}]"))
    return out


class ChatTemplate:
    """A compiled chat template.

        template = ChatTemplate(source, eos_token="<|im_end|>")
        prompt = template.render([{"role": "user", "content": "hi"}], enable_thinking=False)
    """

    def __init__(self, source: str, *, bos_token: str | None = None, eos_token: str | None = None):
        if not isinstance(source, str):
            raise TemplateError(f"a chat template must be a string, got {type(source).__name__}")
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"chat template syntax error at line {exc.lineno}: {_one_line(exc.message)}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"chat template does not compile: {_one_line(exc)}") from None

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True, tools: list[dict] | None = None,
               **extra: Any) -> str:
        """The prompt text for `messages`. `extra` are more template variables (e.g. enable_thinking=False);
        they override bos_token / eos_token."""
        context: dict[str, Any] = {}
        if self.bos_token is not None:
            context["bos_token"] = self.bos_token
        if self.eos_token is not None:
            context["eos_token"] = self.eos_token
        for name, value in extra.items():
            context[name] = _plain(value, name)
        context.setdefault("documents", None)
        context["messages"] = _check_messages(messages)
        context["tools"] = _check_tools(tools)
        context["add_generation_prompt"] = bool(add_generation_prompt)
        try:
            return self._template.render(**context)
        except _TemplateRaised as exc:
            raise TemplateError(f"chat template refused the conversation: {_one_line(exc)}") from None
        except jinja2.TemplateError as exc:
            line = _template_line(exc)
            raise TemplateError(f"chat template failed{line}: {type(exc).__name__}: {_one_line(exc)}") from None
        except Exception as exc:  # a template error surfacing as a Python one (e.g. str + None)
            line = _template_line(exc)
            raise TemplateError(f"chat template failed{line}: {type(exc).__name__}: {_one_line(exc)}") from None


def _template_line(exc: BaseException) -> str:
    """' at line N' of the innermost template frame of the traceback (jinja rewrites those frames so that
    their line numbers are the template's), if any."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" at line {line}" if line else ""


__all__ = ["ChatTemplate"]
