"""Worker threads that leave SIGINT and SIGTERM to the main thread.

The kernel hands a process signal to any thread that does not block it, but CPython runs signal
handlers only in the main thread: a signal that lands in another thread only sets a flag, for the
main thread to notice later. Such a signal would slip past the window in which bundle.py holds
signals while it swaps the output. So every pool the build starts blocks both signals in its
workers. `check_signals` covers the threads we do not start (onnxruntime's, a BLAS library's): it
runs whatever handler such a signal is owed, and the bundle commit calls it first.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


def _block_interrupts() -> None:
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)


def _block_interrupts_and_yield() -> None:
    _block_interrupts()
    lower_thread_priority()


def lower_thread_priority() -> bool:
    """Give the calling thread the lowest scheduling priority (Linux, where a thread has its own
    nice value): it then runs on cores the build's other threads leave idle. Returns whether it did."""
    if not (hasattr(os, "setpriority") and hasattr(threading, "get_native_id")) or not sys.platform.startswith("linux"):
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:
        return False
    return True


def usable_cpus(limit: int = 8) -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one), at most `limit`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, limit))


def split_work(count: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) ranges cutting range(count) into `parts` near-equal pieces (fewer if count is small)."""
    parts = max(1, min(parts, count))
    return [(count * i // parts, count * (i + 1) // parts) for i in range(parts)]


def run_split(count: int, work, parts: int | None = None, name: str = "qwen-edge-split") -> None:
    """work(start, end) over split_work(count, parts or usable_cpus()): the first piece on the
    calling thread, the others on a worker pool, waiting for all (a worker's exception is raised)."""
    pieces = split_work(count, parts or usable_cpus())
    if len(pieces) == 1:
        work(*pieces[0])
        return
    with worker_pool(len(pieces) - 1, name) as pool:
        futures = [pool.submit(work, a, b) for a, b in pieces[1:]]
        work(*pieces[0])
        for f in futures:
            f.result()


def worker_pool(max_workers: int, name: str, *, background: bool = False) -> ThreadPoolExecutor:
    """A thread pool whose workers never receive SIGINT or SIGTERM; `background` workers run at
    the lowest priority (lower_thread_priority)."""
    init = _block_interrupts_and_yield if background else _block_interrupts
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name, initializer=init)


def check_signals() -> None:
    """In the main thread, run the Python handler of any signal received so far (raising, for
    SIGINT, KeyboardInterrupt), also of one that a thread we did not start received."""
    if threading.current_thread() is threading.main_thread():
        ctypes.pythonapi.PyErr_CheckSignals()  # a PyDLL function: an exception it sets is raised here
