"""The build's worker threads leave SIGINT/SIGTERM to the main thread (a signal one of them took
would slip past the window in which bundle.py holds signals while it swaps the output), and
check_signals runs the handler of one that another thread received."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from qwen_edge.quant.blockwise import QuantSpec, quantize_blockwise
from qwen_edge.worker_threads import INTERRUPTS, check_signals, run_split, split_work, worker_pool


def _blocked_in_worker(pool) -> set:
    return set(pool.submit(signal.pthread_sigmask, signal.SIG_BLOCK, []).result())


def test_worker_pools_block_interrupts_and_leave_the_main_thread_alone():
    with worker_pool(2, "test") as pool:
        assert INTERRUPTS <= _blocked_in_worker(pool)
    assert not INTERRUPTS & set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


def test_the_quantizer_pool_blocks_interrupts(monkeypatch):
    seen: list[set] = []
    import qwen_edge.quant.blockwise as blockwise

    real = blockwise.KERNELS[("rtn", True)]

    def recording(*args, **kwargs):
        seen.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
        return real(*args, **kwargs)

    monkeypatch.setitem(blockwise.KERNELS, ("rtn", True), recording)
    monkeypatch.setattr(blockwise, "_CHUNK_ELEMENTS", 64)  # several chunks: the pool is used
    monkeypatch.setattr(blockwise, "_workers", lambda: 2)
    quantize_blockwise(np.ones((8, 32), np.float32), QuantSpec(4, 32, True, "rtn"))
    assert seen and all(INTERRUPTS <= mask for mask in seen)


def _sigint_to_another_thread() -> None:
    """Deliver SIGINT to a plain thread that does not block it (as onnxruntime's would)."""
    ready, done = threading.Event(), threading.Event()

    def idle():
        ready.set()
        done.wait(5)

    t = threading.Thread(target=idle)
    t.start()
    ready.wait()
    signal.pthread_kill(t.ident, signal.SIGINT)
    time.sleep(0.05)
    done.set()
    t.join()


def test_a_sigint_another_thread_received_interrupts_the_main_thread():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # pytest may run with SIGINT ignored
    try:
        with pytest.raises(KeyboardInterrupt):
            _sigint_to_another_thread()  # CPython runs the handler in the main thread at its next check
    finally:
        signal.signal(signal.SIGINT, previous)


def test_check_signals_runs_pending_handlers_in_the_main_thread_only(monkeypatch):
    # Which thread's bytecode runs a pending handler first is CPython's choice, so what check_signals
    # adds is asserted on its own: it asks the interpreter to run them now, and never from a worker.
    import qwen_edge.worker_threads as wt

    calls = []

    class FakeApi:
        def PyErr_CheckSignals(self):  # noqa: N802 (the C API's name)
            calls.append(threading.current_thread().name)
            return 0

    monkeypatch.setattr(wt.ctypes, "pythonapi", FakeApi())
    check_signals()
    with worker_pool(1, "test-worker") as pool:
        pool.submit(check_signals).result()
    assert calls == [threading.main_thread().name]


def test_background_pools_run_at_the_lowest_priority_and_others_do_not():
    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread nice values are Linux's")

    def nice():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    with worker_pool(1, "test", background=True) as pool:
        assert pool.submit(nice).result() == 19
        assert INTERRUPTS <= _blocked_in_worker(pool)
    with worker_pool(1, "test") as pool:
        assert pool.submit(nice).result() == nice()


@pytest.mark.parametrize("count,parts", [(10, 3), (2, 5), (1, 1), (7, 1), (1000, 8)])
def test_split_work_covers_the_range_once(count, parts):
    pieces = split_work(count, parts)
    assert len(pieces) == min(count, parts)
    assert pieces[0][0] == 0 and pieces[-1][1] == count
    assert all(a < b for a, b in pieces)
    assert all(prev[1] == nxt[0] for prev, nxt in zip(pieces, pieces[1:]))


def test_run_split_runs_every_piece_and_raises_a_workers_error():
    done = []
    run_split(100, lambda a, b: done.append((a, b)), parts=4)
    assert sorted(done) == split_work(100, 4)

    def failing(a, b):
        if a > 0:
            raise ValueError(f"piece {a}")

    with pytest.raises(ValueError, match="piece"):
        run_split(100, failing, parts=2)
