"""Splitting a chat answer, as it streams, into reasoning, visible content and tool calls.

The parser reads text pieces in order, however they are cut (a tag may arrive split over several tokens
or pieces), and hands back ChatDelta pieces. Whatever the cuts, the pieces and the final fields are those
of one pass over the whole text, because a piece that might be the start of a tag (or whitespace whose
fate depends on what follows) is held back until the text after it decides.

What it recognises (Qwen's output conventions):

* Reasoning, for templates that know `<think>`: the answer starts inside it when the prompt already opened
  it (Qwen3 with enable_thinking, Qwen3.5), else when the model opens it first thing (leading whitespace
  allowed). Reasoning ends at `</think>`; newlines around it are dropped, as Qwen's templates drop them
  when they put reasoning back into the history. With no `</think>` by the end, all of it is reasoning.
* Tool calls, when tools were given: each `<tool_call>...</tool_call>` block in the content, in either
  spelling that tool_calls.parse_block reads. A block is handed out once it is complete (its name first,
  then its arguments in pieces), so that a block that turns out malformed can still come back as text,
  unchanged, and never as half a call. Whitespace between content and calls is dropped. A `<tool_call>`
  left open at the end is a call only if what follows it is a complete one.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

from .chat_types import ChatDelta, ToolCall, ToolCallDelta
from .tool_calls import argument_pieces, arguments_json, parse_block, tool_schemas

THINK_START, THINK_END = "<think>", "</think>"
CALL_START, CALL_END = "<tool_call>", "</tool_call>"

_START, _REASONING, _CONTENT, _CALL = "start", "reasoning", "content", "call"


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of tag (0 if none)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


class OutputParser:
    """Feed text pieces in order with push(), then call finish(); each returns the ChatDeltas it completes.

    `reasoning`: the template knows `<think>` (the answer may start with reasoning); `starts_in_reasoning`:
    the prompt already opened it; `tools`: the tools given to the template (tool calls are parsed only when
    this is not None; their JSON schemas type the XML spelling's values); `new_id` makes tool call ids.
    After finish(), `content`, `reasoning` (None when there was none) and `tool_calls` hold the whole answer.
    """

    def __init__(self, *, reasoning: bool = False, starts_in_reasoning: bool = False, tools: list[dict] | None = None,
                 new_id: Callable[[], str] = new_call_id):
        self._state = _REASONING if starts_in_reasoning else (_START if reasoning else _CONTENT)
        self._parse_tools = tools is not None
        self._schemas = tool_schemas(tools)
        self._new_id = new_id
        self._buf = ""
        self._scan = _BlockScan()
        self._gap = ""  # whitespace between content and a <tool_call> that may still turn out to be text
        self._skip = ""  # characters dropped while they lead the current section ("\n" or any whitespace)
        if self._state == _REASONING:
            self._skip = "\n"
        self._content: list[str] = []
        self._reasoning: list[str] | None = [] if starts_in_reasoning else None
        self.tool_calls: list[ToolCall] = []
        self.finished = False
        self._out: list[ChatDelta] = []

    # -- results ---------------------------------------------------------------------------------------------

    @property
    def content(self) -> str:
        return "".join(self._content)

    @property
    def reasoning(self) -> str | None:
        return ("".join(self._reasoning) or None) if self._reasoning is not None else None

    @property
    def in_reasoning(self) -> bool:
        """Whether the text so far ends inside the reasoning."""
        return self._state == _REASONING

    # -- feeding ---------------------------------------------------------------------------------------------

    def push(self, text: str) -> list[ChatDelta]:
        if self.finished:
            raise ValueError("push() after finish()")
        if text:
            self._buf += text
            self._advance(final=False)
        return self._take()

    def finish(self) -> list[ChatDelta]:
        if not self.finished:
            self._advance(final=True)
            self.finished = True
        return self._take()

    def _take(self) -> list[ChatDelta]:
        out, self._out = self._out, []
        merged: list[ChatDelta] = []
        for delta in out:  # consecutive text of one kind in one delta
            last = merged[-1] if merged else None
            if last is not None and delta.content is not None and last.content is not None:
                merged[-1] = ChatDelta(content=last.content + delta.content)
            elif last is not None and delta.reasoning is not None and last.reasoning is not None:
                merged[-1] = ChatDelta(reasoning=last.reasoning + delta.reasoning)
            else:
                merged.append(delta)
        return merged

    # -- emitting --------------------------------------------------------------------------------------------

    def _emit_text(self, kind: str, text: str) -> None:
        if not text:
            return
        if self._skip:
            text = text.lstrip(self._skip)
            if not text:
                return
            self._skip = ""
        if kind == _REASONING:
            self._reasoning.append(text)
            self._out.append(ChatDelta(reasoning=text))
        else:
            self._content.append(text)
            self._out.append(ChatDelta(content=text))

    def _emit_call(self, name: str, arguments: dict[str, Any]) -> None:
        index = len(self.tool_calls)
        call_id = self._new_id()
        self.tool_calls.append(ToolCall(id=call_id, name=name, arguments=arguments_json(arguments)))
        self._out.append(ChatDelta(tool_call=ToolCallDelta(index=index, id=call_id, name=name, arguments="")))
        for piece in argument_pieces(arguments):
            self._out.append(ChatDelta(tool_call=ToolCallDelta(index=index, id=None, name=None, arguments=piece)))

    # -- the states ------------------------------------------------------------------------------------------

    def _advance(self, *, final: bool) -> None:
        while True:
            state = self._state
            if state == _START:
                progressed = self._start(final)
            elif state == _REASONING:
                progressed = self._in_reasoning(final)
            elif state == _CONTENT:
                progressed = self._in_content(final)
            else:
                progressed = self._in_call(final)
            if not progressed:
                return

    def _start(self, final: bool) -> bool:
        """Before anything is decided: does the model open <think> (after optional whitespace)?"""
        head = self._buf.lstrip()
        if head.startswith(THINK_START):
            self._buf = head[len(THINK_START):]
            self._state, self._skip = _REASONING, "\n"
            if self._reasoning is None:
                self._reasoning = []
            return True
        if not final and THINK_START.startswith(head):  # "" or a prefix of the tag: wait
            return False
        self._state = _CONTENT
        return True

    def _in_reasoning(self, final: bool) -> bool:
        buf = self._buf
        end = buf.find(THINK_END)
        if end >= 0:
            self._emit_text(_REASONING, buf[:end].rstrip("\n"))
            self._buf = buf[end + len(THINK_END):]
            self._state, self._skip = _CONTENT, "\n"
            return True
        if final:
            self._emit_text(_REASONING, buf.rstrip("\n"))
            self._buf = ""
            return False
        self._emit_settled(_REASONING, THINK_END, lambda ch: ch == "\n")  # newlines are dropped if </think> follows
        return False

    def _in_content(self, final: bool) -> bool:
        buf = self._buf
        if not self._parse_tools:
            if buf:
                self._emit_text(_CONTENT, buf)
                self._buf = ""
            return False
        start = buf.find(CALL_START)
        if start >= 0:
            self._content_before_call(buf[:start])
            self._buf = buf[start:]
            self._state = _CALL
            return True
        if final:
            self._emit_text(_CONTENT, buf)
            self._buf = ""
            return False
        self._emit_settled(_CONTENT, CALL_START, str.isspace)  # whitespace is dropped if a call follows
        return False

    def _emit_settled(self, kind, tag: str, droppable) -> None:
        """Emit the buffer except what is not settled yet: a possible start of `tag` at its end, and the
        `droppable` characters before it (which the tag, if it comes, removes)."""
        buf = self._buf
        cut = len(buf) - _partial_tag(buf, tag)
        while cut > 0 and droppable(buf[cut - 1]):
            cut -= 1
        if cut > 0:
            self._emit_text(kind, buf[:cut])
            self._buf = buf[cut:]

    def _content_before_call(self, text: str) -> None:
        """Content up to a <tool_call>: its trailing whitespace waits, dropped if the call is one, kept if not."""
        kept = text.rstrip()
        self._emit_text(_CONTENT, kept)
        self._gap = text[len(kept):]

    def _in_call(self, final: bool) -> bool:
        """The buffer starts with <tool_call>: wait for its end, then a call or, if malformed, text."""
        found = self._scan.find(self._buf, final)
        if found is None:
            return False
        buf, (kind, at) = self._buf, found
        self._scan = _BlockScan()
        if kind == "again":  # a new block opens before this one closed: this one is text
            self._content_before_call(self._gap + buf[:at])
            self._buf = buf[at:]
            return True
        body = buf[len(CALL_START):at]
        block_end = at + len(CALL_END) if kind == "end" else at
        parsed = parse_block(body, self._schemas)
        if parsed is None:
            self._emit_text(_CONTENT, self._gap + buf[:block_end])
        else:
            self._emit_call(*parsed)
            self._skip = " \t\r\n\f\v"  # whitespace after a call is not content
        self._buf = buf[block_end:]
        self._gap = ""
        self._state = _CONTENT
        return True


class _BlockScan:
    """Where the <tool_call> block at the start of a buffer ends: ("end", index of its </tool_call>),
    ("again", index of a <tool_call> that opens before it closed) or ("eof", len) at the end of the text;
    None while the text so far cannot tell.

    A JSON body is scanned with its strings in mind, so that a tag written inside a string argument does
    not end the block; the scan resumes where it stopped. A body whose string is still open at the end
    falls back to the first tag, as other bodies do."""

    def __init__(self):
        self.pos = len(CALL_START)
        self.mode: str | None = None
        self.in_string = False
        self.escaped = False

    def find(self, buf: str, final: bool) -> tuple[str, int] | None:
        if self.mode is None:
            head = buf[self.pos:].lstrip()
            if not head:
                return ("eof", len(buf)) if final else None
            self.mode = "json" if head[0] == "{" else "plain"
        if self.mode == "json":
            found = self._scan_json(buf, final)
            if found is not None or not final or not self.in_string:
                return found
        return _first_tag(buf, final)

    def _scan_json(self, buf: str, final: bool) -> tuple[str, int] | None:
        i, n = self.pos, len(buf)
        in_string, escaped = self.in_string, self.escaped
        while i < n:
            c = buf[i]
            if in_string:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == '"':
                    in_string = False
            elif c == '"':
                in_string = True
            elif c == "<":
                if buf.startswith(CALL_END, i):
                    return "end", i
                if buf.startswith(CALL_START, i):
                    return "again", i
                rest = buf[i:]
                if not final and (CALL_END.startswith(rest) or CALL_START.startswith(rest)):
                    break  # a tag may be arriving: look again with more text
            i += 1
        self.pos, self.in_string, self.escaped = i, in_string, escaped
        return ("eof", n) if final and not in_string else None


def _first_tag(buf: str, final: bool) -> tuple[str, int] | None:
    start = len(CALL_START)
    end, again = buf.find(CALL_END, start), buf.find(CALL_START, start)
    if again >= 0 and (end < 0 or again < end):
        return "again", again
    if end >= 0:
        return "end", end
    return ("eof", len(buf)) if final else None


__all__ = ["OutputParser", "new_call_id"]
