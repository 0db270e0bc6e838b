"""N generations at once over one loaded model, a bounded queue behind them, and worker threads.

Each admitted request runs in a worker thread of its own slot (the event loop never waits on the
model): the thread opens the generation, iterates it, and posts each event to the loop. The request
side reads them with `async for`. When the client goes away, `Job.cancel()` sets a flag that the
worker checks after every step; it then closes the generation, and the slot goes to the next request
in the queue. A request that finds every slot busy waits in a FIFO queue of `queue` places; when that
is full it is refused at once (QueueFull, with a Retry-After from recent request durations).

All bookkeeping happens on the event loop's thread, so it needs no locks.
"""

from __future__ import annotations

import asyncio
import collections
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Iterable

from .errors import QueueFull, ServeError, Unavailable

_END = object()


class Job:
    """A request admitted to a slot: its events arrive from the worker thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.finished = asyncio.Event()
        self._on_cancel: list[Callable[[], None]] = []

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """From the worker: `callback` (thread-safe, e.g. a generation's close()) runs on cancel()."""
        self._on_cancel.append(callback)
        if self.cancelled.is_set():
            callback()

    def cancel(self) -> None:
        """Stop the work: the worker stops after its current step, and every on_cancel callback runs now
        (a generation's close() stops it before its next decode step, even mid-tool-call). Idempotent."""
        if self.cancelled.is_set():
            return
        self.cancelled.set()
        for callback in list(self._on_cancel):
            try:
                callback()
            except Exception:  # the worker closes it again in its own thread
                pass

    def post(self, item: Any) -> bool:
        """From the worker thread: hand an item to the loop. False when the loop is gone."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
            return True
        except RuntimeError:  # the loop closed (server shutting down)
            self.cancelled.set()
            return False

    async def next(self) -> Any:
        """The next event; raises the worker's error; StopAsyncIteration at the end."""
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # keep answering "ended"
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await self.next()


class Scheduler:
    """Admission and worker threads for `parallel` concurrent generations plus `queue` waiting ones."""

    def __init__(self, parallel: int, queue: int):
        self.parallel = parallel
        self.queue_size = queue
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="qwen-edge-serve")
        self._running = 0
        self._waiting: collections.deque[asyncio.Future] = collections.deque()
        self._jobs: set[Job] = set()
        self._durations: collections.deque[float] = collections.deque(maxlen=32)
        self._closed = False

    # state, for /health and tests
    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def retry_after(self) -> int:
        """Seconds until a place is likely to be free: the queue ahead, served `parallel` at a time."""
        typical = sorted(self._durations)[len(self._durations) // 2] if self._durations else 1.0
        return max(1, min(60, math.ceil(typical * (len(self._waiting) + 1) / self.parallel)))

    async def _admit(self) -> None:
        if self._closed:
            raise Unavailable("the server is shutting down")
        if self._running < self.parallel and not self._waiting:
            self._running += 1
            return
        if len(self._waiting) >= self.queue_size:
            raise QueueFull(f"all {self.parallel} generation slots are busy and the queue of {self.queue_size} "
                            "is full; retry later", retry_after=self.retry_after())
        ticket = asyncio.get_running_loop().create_future()
        self._waiting.append(ticket)
        try:
            await ticket  # _release hands its slot over: _running stays as it is
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self._release()  # the slot came just as we left: pass it on
            else:
                self._waiting.remove(ticket)
            raise

    def _release(self) -> None:
        while self._waiting:
            ticket = self._waiting.popleft()
            if not ticket.done():
                ticket.set_result(None)
                return
        self._running -= 1

    async def submit(self, work: Callable[[Job], Iterable[Any]]) -> Job:
        """Wait for a slot (or raise QueueFull), then run `work(job)` in a worker thread; its items
        become the job's events. The slot is freed when the worker has finished, not before."""
        await self._admit()
        loop = asyncio.get_running_loop()
        job = Job(loop)
        started = time.perf_counter()

        def done(_future) -> None:
            try:
                loop.call_soon_threadsafe(self._finished, job, started)
            except RuntimeError:  # the loop is gone: nothing left to hand the slot to
                pass

        try:
            future = self._pool.submit(_run, work, job)
        except RuntimeError:
            self._release()
            raise Unavailable("the server is shutting down") from None
        self._jobs.add(job)
        future.add_done_callback(done)
        return job

    def _finished(self, job: Job, started: float) -> None:
        self._jobs.discard(job)
        if not job.cancelled.is_set():
            self._durations.append(time.perf_counter() - started)
        job.finished.set()
        self._release()

    def close(self) -> None:
        """Cancel every running job and wait for the workers (server shutdown)."""
        self._closed = True
        for job in list(self._jobs):
            job.cancel()
        for ticket in self._waiting:
            if not ticket.done():
                ticket.set_exception(Unavailable("the server is shutting down"))
        self._pool.shutdown(wait=True)


def _run(work: Callable[[Job], Iterable[Any]], job: Job) -> None:
    """The worker thread: iterate `work`, post each item, stop when cancelled; always post the end."""
    items = None
    try:
        items = iter(work(job))
        for item in items:
            if not job.post(item) or job.cancelled.is_set():
                break
    except ServeError as exc:
        job.post(exc)
    except Exception as exc:  # never lose a worker to an unexpected error: the client gets a 500 line
        job.post(ServeError(f"{type(exc).__name__}: {exc}"))
    finally:
        try:
            close = getattr(items, "close", None)
            if callable(close):
                close()  # runs the generator's finally: the generation is closed in this thread
        finally:
            job.post(_END)


__all__ = ["Job", "Scheduler"]
