"""Incremental detokenisation: text pieces out as token ids come in.

Decoding one token at a time is wrong in two ways: byte-level BPE tokens can hold part of a multi-byte UTF-8
character (decoded alone it becomes U+FFFD), and some decoders change a token's text by its position (a
SentencePiece-style leading space is dropped at the start of a sequence). So, as text-generation-inference
does, decode a small sliding window twice: the tokens already emitted since the previous emission point
(prefix_offset:read_offset) and the same window plus the new tokens (prefix_offset:). The new text is the
difference, emitted only once it does not end in U+FFFD (an incomplete character). Each push decodes only the
window, so the cost per token is O(1) amortised however long the generation runs.
"""

from __future__ import annotations

import numbers

import numpy as np

from .errors import InvalidRequestError

REPLACEMENT_CHAR = "\ufffd"
# Drop ids before the window once this many have accumulated (keeps memory bounded, amortised O(1)).
_TRIM_AT = 256


class TextStreamer:
    """Turns a stream of token ids into text pieces whose concatenation equals
    `tokenizer.decode(all_ids, skip_special_tokens=...)`, never splitting a UTF-8 character.

        streamer = TextStreamer(tokenizer)
        for token in tokens:
            print(streamer.push(token), end="")
        print(streamer.flush())
    """

    def __init__(self, tokenizer, *, skip_special_tokens: bool = True):
        if not callable(getattr(tokenizer, "decode", None)):
            raise InvalidRequestError(f"tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self.skip_special_tokens = bool(skip_special_tokens)
        self.reset()

    def reset(self) -> None:
        """Forget everything pushed so far (start a new stream)."""
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the decode window
        self._read_offset = 0  # end of what has been emitted
        self._prefix_text: str | None = ""  # decode(ids[prefix_offset:read_offset]), None = not computed yet

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        """Add one token id; return the text it completes (often "", e.g. mid-character or a skipped special)."""
        if isinstance(token_id, bool) or not isinstance(token_id, (numbers.Integral, np.integer)):
            raise InvalidRequestError(f"token id must be an integer, got {token_id!r}")
        token_id = int(token_id)
        if not 0 <= token_id < 1 << 32:
            raise InvalidRequestError(f"token id {token_id} is out of range [0, 2**32)")
        self._ids.append(token_id)
        return self._advance(final=False)

    def push_many(self, token_ids) -> str:
        """Push several ids; return the text they complete (as one string)."""
        return "".join(self.push(t) for t in token_ids)

    def flush(self) -> str:
        """The text still held back (an incomplete character is emitted as U+FFFD, as decode() does).
        Ends the stream: call reset() before pushing a new one."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        ids = self._ids
        if self._read_offset >= len(ids):
            return ""
        if self._prefix_text is None:
            self._prefix_text = self._decode(ids[self._prefix_offset:self._read_offset])
        prefix_text = self._prefix_text
        new_text = self._decode(ids[self._prefix_offset:])
        if len(new_text) <= len(prefix_text) or (not final and new_text.endswith(REPLACEMENT_CHAR)):
            return ""
        piece = new_text[len(prefix_text):]
        self._prefix_offset = self._read_offset
        self._read_offset = len(ids)
        self._prefix_text = None
        if self._prefix_offset >= _TRIM_AT:
            del ids[:self._prefix_offset]
            self._read_offset -= self._prefix_offset
            self._prefix_offset = 0
        return piece

    @property
    def pending(self) -> int:
        """How many pushed tokens have not been turned into text yet."""
        return len(self._ids) - self._read_offset


IncrementalDecoder = TextStreamer

__all__ = ["TextStreamer", "IncrementalDecoder"]
