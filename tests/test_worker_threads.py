"""The build's worker threads leave SIGINT/SIGTERM to the main thread (a signal one of them took
would slip past the window in which bundle.py holds signals while it swaps the output), and
check_signals runs the handler of one that another thread received."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from qwen_edge.quant.blockwise import QuantSpec, quantize_blockwise
from qwen_edge.worker_threads import INTERRUPTS, check_signals, worker_pool


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


def test_check_signals_runs_the_handler_of_a_signal_another_thread_received():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # pytest may run with SIGINT ignored
    try:
        with pytest.raises(KeyboardInterrupt):
            _sigint_to_another_thread()
            check_signals()
    finally:
        signal.signal(signal.SIGINT, previous)
