"""A bundle directory is built in a staging directory beside the output and moved into place only
when complete: an interrupted or failed build leaves the previous output as it was."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import BundleError
from ..worker_threads import check_signals


@contextlib.contextmanager
def staged_output(output: Path) -> Iterator[Path]:
    """Yield a fresh staging directory beside `output`; on success it replaces `output`.

    On any exception (including KeyboardInterrupt, and SIGTERM, which is turned into one while
    staging) the staging directory is removed and an existing `output` is left untouched.
    """
    output = Path(output).absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists() and not output.is_dir():
        raise BundleError(f"{output}: exists and is not a directory")
    stage = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    previous_term = None
    if _in_main_thread():
        previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        try:
            yield stage
            check_signals()  # one received by a thread that cannot run Python handlers is honoured here
            with _signals_deferred():
                _replace_dir(stage, output)
        except OSError as exc:  # a full disk, a read-only directory...: one line, not a traceback
            reason = exc.strerror or str(exc) or type(exc).__name__
            where = f"{Path(exc.filename).name}: " if getattr(exc, "filename", None) else ""
            raise BundleError(f"{output}: cannot write the bundle ({where}{reason})") from exc
    except BaseException:
        with _signals_deferred():
            shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while the output is swapped or the stage removed, so that an
    interruption cannot land between the two renames or leave half a staging directory;
    a held signal is delivered (and raises) as soon as the block ends."""
    if not _in_main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _raise_interrupt(signum, frame):  # pragma: no cover - exercised by the interruption test
    raise KeyboardInterrupt(f"signal {signum}")


def _replace_dir(stage: Path, output: Path) -> None:
    """Swap `stage` into `output`; the old output survives until the new one is in place."""
    if not output.exists():
        os.replace(stage, output)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
    os.rmdir(old)
    os.replace(output, old)
    try:
        os.replace(stage, output)
    except BaseException:
        os.replace(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)
