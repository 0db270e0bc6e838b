"""One request's generation as a sequence of events, with the OpenAI `stop` strings applied.

Stop strings are the server's job: the answer text is cut at the first match (the match itself is not
returned) and the generation is closed there, so it stops using its slot. Text that might be the start
of a stop string is held back until the next piece shows whether it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, Union

from .adapter import Piece, Stream
from .errors import ServeError
from .scheduler import Job


@dataclass(frozen=True)
class Opened:
    """The generation was accepted (the prompt fits, the template rendered): the response may start."""

    prompt_tokens: int


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # stop | length | tool_calls
    prompt_tokens: int
    completion_tokens: int


Event = Union[Opened, Piece, Finished]


class StopMatcher:
    """Finds the first of several stop strings in text that arrives in pieces."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self.stops), default=0)
        self._held = ""

    def push(self, text: str) -> tuple[str, bool]:
        """The text that is safe to emit now, and whether a stop string was found (then nothing more
        should be emitted)."""
        if not self.stops:
            return text, False
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._held = ""
            return buf[:min(hits)], True
        keep = 0
        for k in range(min(len(buf), self._longest - 1), 0, -1):
            tail = buf[-k:]
            if any(s.startswith(tail) for s in self.stops):
                keep = k
                break
        self._held = buf[len(buf) - keep:]
        return buf[:len(buf) - keep], False

    def release(self) -> str:
        """The text held back (no stop string can complete it any more)."""
        held, self._held = self._held, ""
        return held


def events(open_stream: Callable[[], Stream], stops: Sequence[str], job: Job) -> Iterator[Event]:
    """Opened, then Pieces, then Finished; runs in a worker thread. Stops early, closing the generation,
    on a stop string or when the job is cancelled (the client went away: the job closes the generation
    from the event loop's thread at once, which the runtime allows)."""
    cancelled = job.cancelled
    stream = open_stream()
    job.on_cancel(stream.close)
    try:
        yield Opened(stream.prompt_tokens)
        matcher = StopMatcher(stops)
        stopped = False
        for piece in stream:
            if piece.content:
                text, stopped = matcher.push(piece.content)
                if text:
                    yield Piece(content=text)
            else:
                held = matcher.release()
                if held:
                    yield Piece(content=held)
                yield piece
            if stopped or cancelled.is_set():
                break
        else:
            held = matcher.release()
            if held:
                yield Piece(content=held)
        if cancelled.is_set():
            return
        finished = Finished("stop" if stopped else stream.finish_reason(), stream.prompt_tokens,
                            stream.completion_tokens())
        stream.close()  # free the slot's KV cache before the last bytes go out
        yield finished
    except ServeError:
        raise
    except Exception as exc:  # a runtime failure mid-generation: one line to the client, never a traceback
        raise ServeError(f"generation failed: {type(exc).__name__}: {exc}") from exc
    finally:
        stream.close()


__all__ = ["Event", "Finished", "Opened", "StopMatcher", "events"]
