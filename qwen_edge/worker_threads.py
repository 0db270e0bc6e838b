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
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


def _block_interrupts() -> None:
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)


def worker_pool(max_workers: int, name: str) -> ThreadPoolExecutor:
    """A thread pool whose workers never receive SIGINT or SIGTERM."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name, initializer=_block_interrupts)


def check_signals() -> None:
    """In the main thread, run the Python handler of any signal received so far (raising, for
    SIGINT, KeyboardInterrupt), also of one that a thread we did not start received."""
    if threading.current_thread() is threading.main_thread():
        ctypes.pythonapi.PyErr_CheckSignals()  # a PyDLL function: an exception it sets is raised here
