"""Writing bundle directories: staged beside the output, moved into place only when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterator

from . import manifest as manifest_mod
from .errors import BundleError
from .worker_threads import check_signals

# tokenizer.json alone defines the tokenizer for both our runtime and onnxruntime-genai, so the
# slow-tokenizer files (vocab.json, merges.txt) are not copied.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


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


def copy_tokenizer_files(checkpoint, stage: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        path = checkpoint.tokenizer_files.get(name)
        if path is not None:
            shutil.copyfile(path, stage / name)
            copied.append(name)
    gen = Path(checkpoint.path) / "generation_config.json"
    if gen.is_file():
        shutil.copyfile(gen, stage / "generation_config.json")
        copied.append("generation_config.json")
    return copied


class AheadDigests:
    """sha256 of bundle files hashed ahead on a background thread (for instance while the smoke
    test's single-threaded load leaves a core idle), for file_table to reuse. A digest is used
    only while the file keeps the inode, size and modification time it had when hashing started."""

    def __init__(self, pool):
        self._pool = pool
        self._entries: dict[Path, tuple[tuple[int, int, int], Any]] = {}

    @staticmethod
    def _key(path: Path) -> tuple[int, int, int]:
        st = path.stat()
        return st.st_ino, st.st_size, st.st_mtime_ns

    def start(self, path: Path) -> None:
        path = Path(path)
        self._entries[path] = (self._key(path), self._pool.submit(manifest_mod.sha256_file, path))

    def get(self, path: Path) -> str | None:
        entry = self._entries.get(Path(path))
        if entry is None or entry[0] != self._key(path):
            return None
        return entry[1].result()


def file_table(stage: Path, ahead: AheadDigests | None = None) -> dict[str, dict[str, Any]]:
    table = {}
    for path in sorted(stage.rglob("*")):
        if path.is_file() and path.name != manifest_mod.MANIFEST_NAME:
            digest = ahead.get(path) if ahead is not None else None
            table[path.relative_to(stage).as_posix()] = {
                "sha256": digest or manifest_mod.sha256_file(path),
                "bytes": path.stat().st_size,
            }
    return table


def write_manifest(stage: Path, manifest: dict[str, Any], ahead: AheadDigests | None = None) -> dict[str, Any]:
    manifest = dict(manifest)
    manifest["files"] = file_table(stage, ahead)
    manifest = manifest_mod.seal(manifest)
    (stage / manifest_mod.MANIFEST_NAME).write_text(manifest_mod.dumps(manifest), encoding="utf-8")
    return manifest
