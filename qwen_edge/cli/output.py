"""What every command shares: progress on stderr, results on stdout (`--json` for machines), and
the common flags."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any, Iterator


class Progress:
    """Progress on stderr: a live line on a terminal, one line per finished stage otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.start = time.perf_counter()
        self.live = enabled and sys.stderr.isatty()
        self._stage = None
        self._open = False

    def _write(self, text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage and self._open:
            self._write("\n")
            self._open = False
        self._stage = stage
        line = f"[{time.perf_counter() - self.start:6.1f}s] {stage}: {done}/{total}"
        if self.live:
            self._write("\r" + line)
            self._open = True
            if done >= total:
                self._write("\n")
                self._open = False
        elif done >= total:
            self._write(line + "\n")

    def note(self, message: str) -> None:
        if self.enabled:
            if self._open:
                self._write("\n")
                self._open = False
            self._write(f"[{time.perf_counter() - self.start:6.1f}s] {message}\n")


def progress_for(args: argparse.Namespace) -> Progress:
    return Progress(not (args.quiet or args.json))


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(text)


def add_common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    sp.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def add_runtime_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the bundle's setting)")
    sp.add_argument("--check-integrity", action="store_true", help="check file hashes before loading")
    sp.add_argument("--public-key", help="require a valid Ed25519 signature by this key (PEM file) before loading")


@contextlib.contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr meanwhile: native libraries may print there (Qualcomm's HTP
    library prints a line when it first loads), and stdout is for our results (`--json` must parse)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (embedded use): nothing to protect
        yield
        return
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
