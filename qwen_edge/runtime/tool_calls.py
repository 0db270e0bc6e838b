"""Reading one `<tool_call>...</tool_call>` block the way Qwen models write it.

Two spellings:

* Hermes (Qwen2.5, Qwen3): a JSON object, `{"name": "get_weather", "arguments": {"city": "Paris"}}`.
* XML (Qwen3-Coder, Qwen3.5): `<function=get_weather>` then `<parameter=city>` blocks, each value on its
  own lines, `</parameter>`, `</function>`. Values are text; they are converted by the type the tool's JSON
  schema gives the parameter (integer, number, boolean, null, object, array), and kept as strings where it
  gives none, says string, or the text does not fit the type.

Anything else is not a call: `parse_block` returns None and the caller shows the block as text.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator, Mapping

_FUNCTION = re.compile(r"<function=([^>\n]+)>(.*)</function>", re.DOTALL)
_PARAMETER_OPEN = re.compile(r"<parameter=([^>\n]+)>")
_PARAMETER_CLOSE = "</parameter>"


def tool_schemas(tools: list[dict] | None) -> dict[str, dict[str, Any]]:
    """{function name: {parameter name: its JSON schema}} from OpenAI-style tools (malformed entries skipped:
    the template has already shown them to the model as they are)."""
    out: dict[str, dict[str, Any]] = {}
    for tool in tools or ():
        if not isinstance(tool, Mapping):
            continue
        function = tool.get("function", tool)
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            continue
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        out[function["name"]] = dict(properties) if isinstance(properties, Mapping) else {}
    return out


def parse_block(body: str, schemas: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[str, dict] | None:
    """(name, arguments) of the call written between the tags, or None when it is not a well-formed call."""
    text = body.strip()
    if text.startswith("<function="):
        return _parse_xml(text, schemas or {})
    if text.startswith("{"):
        return _parse_hermes(text)
    return None


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{literal} overflows")
    return value


def _loads(text: str) -> Any:
    """json.loads refusing NaN / Infinity (not JSON: a client could not read them back); raises ValueError."""
    try:
        return json.loads(text, parse_constant=_no_constants, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _parse_hermes(text: str) -> tuple[str, dict] | None:
    try:
        call = _loads(text)
    except ValueError:
        return None
    if not isinstance(call, dict):
        return None
    name = call.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):  # some fine-tunes write the arguments as a JSON string
        try:
            arguments = _loads(arguments) if arguments.strip() else {}
        except ValueError:
            return None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None
    return name.strip(), arguments


def _parse_xml(text: str, schemas: Mapping[str, Mapping[str, Any]]) -> tuple[str, dict] | None:
    match = _FUNCTION.fullmatch(text)
    if match is None:
        return None
    name, inner = match.group(1).strip(), match.group(2)
    if not name:
        return None
    properties = schemas.get(name, {})
    arguments: dict[str, Any] = {}
    pos = 0
    while True:
        while pos < len(inner) and inner[pos].isspace():
            pos += 1
        if pos == len(inner):
            return name, arguments
        opened = _PARAMETER_OPEN.match(inner, pos)
        if opened is None:
            return None  # text that is not a parameter
        end = inner.find(_PARAMETER_CLOSE, opened.end())
        if end < 0:
            return None
        param = opened.group(1).strip()
        value = inner[opened.end():end]
        if value.startswith("\n"):
            value = value[1:]
        if value.endswith("\n"):
            value = value[:-1]
        arguments[param] = convert_value(value, properties.get(param))
        pos = end + len(_PARAMETER_CLOSE)


def _types(schema: Any) -> list[str]:
    if not isinstance(schema, Mapping):
        return []
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    for key in ("anyOf", "oneOf"):  # e.g. {"anyOf": [{"type": "integer"}, {"type": "null"}]}
        if isinstance(schema.get(key), list):
            return [t for option in schema[key] for t in _types(option)]
    return []


def convert_value(value: str, schema: Any) -> Any:
    """An XML parameter's text as the JSON value its schema's type asks for; the text itself when the
    schema gives no type, allows a string, or the text does not parse as any type it allows."""
    types = _types(schema)
    if not types or "string" in types:
        return value
    text = value.strip()
    for kind in types:
        converted = _convert(text, kind)
        if converted is not _NO:
            return converted
    return value


_NO = object()


def _convert(text: str, kind: str) -> Any:
    if kind == "null":
        return None if text.lower() in ("null", "none") else _NO
    if kind == "boolean":
        return {"true": True, "false": False}.get(text.lower(), _NO)
    if kind in ("integer", "number"):
        try:
            number = _loads(text)
        except ValueError:
            return _NO
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            return _NO
        if kind == "integer":
            return number if isinstance(number, int) else (int(number) if number.is_integer() else _NO)
        return number
    if kind in ("object", "array"):
        try:
            parsed = _loads(text)
        except ValueError:
            return _NO
        return parsed if isinstance(parsed, dict if kind == "object" else list) else _NO
    return _NO


def arguments_json(arguments: dict) -> str:
    """The arguments as OpenAI sends them: a JSON object in a string (non-ASCII kept)."""
    return json.dumps(arguments, ensure_ascii=False)


def argument_pieces(arguments: dict) -> Iterator[str]:
    """arguments_json(arguments) in pieces, one per top-level argument (then the closing brace), so that a
    client sees them arrive in order; the pieces join to exactly arguments_json(arguments)."""
    if not arguments:
        yield "{}"
        return
    for k, (key, value) in enumerate(arguments.items()):
        yield ("{" if k == 0 else ", ") + json.dumps(key, ensure_ascii=False) + ": " + json.dumps(value, ensure_ascii=False)
    yield "}"


__all__ = ["argument_pieces", "arguments_json", "convert_value", "parse_block", "tool_schemas"]
