"""Calibration text for data-aware quantization: a file the user names, or a built-in corpus.

The built-in corpus is Python source from the running interpreter's standard library (local,
offline, and code like the domain of Qwen coder models). Which files, their sizes and sha256 are
recorded, so a manifest says exactly what the weights were fitted on.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

BUILTIN = "builtin"
# Standard-library modules of plain, idiomatic Python (no generated tables, no test data).
BUILTIN_FILES = (
    "argparse.py", "textwrap.py", "shutil.py", "fractions.py", "heapq.py", "json/encoder.py",
    "json/decoder.py", "csv.py", "dataclasses.py", "functools.py", "string.py", "calendar.py",
    "difflib.py", "configparser.py", "statistics.py", "tempfile.py", "enum.py", "graphlib.py",
    "bisect.py", "queue.py", "sched.py", "colorsys.py",
)
# Further modules, disjoint from BUILTIN_FILES: the default evaluation text of a build's quality report.
BUILTIN_EVAL_FILES = ("contextlib.py", "pprint.py", "gettext.py", "locale.py", "optparse.py")
FILE_SEPARATOR = "\n# ---- file boundary ----\n"
# Lines at least this long (stripped) are compared when checking overlap with an evaluation text.
_OVERLAP_MIN_LINE = 40


@dataclass(frozen=True)
class CalibrationText:
    text: str
    source: str  # "builtin" or the file's name
    files: tuple[dict, ...]  # {"path", "bytes", "sha256"} per file read

    def to_dict(self) -> dict:
        return {"source": self.source, "files": list(self.files), "characters": len(self.text)}


def _describe(path: Path, data: bytes, label: str) -> dict:
    return {"path": label, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def load_calibration_text(source: str | Path, builtin_files: tuple[str, ...] = BUILTIN_FILES) -> CalibrationText:
    """`builtin` (the standard-library files `builtin_files`) or the path of a UTF-8 text file."""
    if str(source) == BUILTIN:
        root = Path(sysconfig.get_paths()["stdlib"])
        parts, files = [], []
        for rel in builtin_files:
            path = root / rel
            if not path.is_file():
                raise ConfigError(f"calibration: built-in corpus file {path} is missing from this Python")
            data = path.read_bytes()
            parts.append(data.decode("utf-8", errors="replace"))
            files.append(_describe(path, data, f"stdlib/{rel}"))
        return CalibrationText(FILE_SEPARATOR.join(parts), BUILTIN, tuple(files))
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"calibration: {path} is not a file (pass a text file or '{BUILTIN}')")
    data = path.read_bytes()
    text = data.decode("utf-8", errors="replace")
    if not text.strip():
        raise ConfigError(f"calibration: {path} is empty")
    return CalibrationText(text, path.name, (_describe(path, data, path.name),))


def overlapping_lines(calibration: str, evaluation: str) -> float:
    """Fraction of the evaluation text's long lines that also occur in the calibration text."""
    def long_lines(text: str) -> set[str]:
        return {line.strip() for line in text.splitlines() if len(line.strip()) >= _OVERLAP_MIN_LINE}

    evaluated = long_lines(evaluation)
    if not evaluated:
        return 0.0
    return len(evaluated & long_lines(calibration)) / len(evaluated)


def token_windows(ids, window: int, max_tokens: int) -> np.ndarray:
    """Non-overlapping windows [count, window] of token ids, about `max_tokens` tokens in all,
    spread evenly over the whole text (so a long corpus is sampled, not just its start)."""
    ids = np.asarray(ids, dtype=np.int64)
    if window < 2:
        raise ConfigError(f"calibration: window {window} is shorter than 2 tokens")
    available = len(ids) // window
    if available == 0:
        raise ConfigError(f"calibration: the text has {len(ids)} tokens, fewer than one window of {window}")
    count = max(1, min(available, max_tokens // window))
    picks = np.linspace(0, available - 1, count).round().astype(np.int64)
    return np.stack([ids[p * window:(p + 1) * window] for p in picks])
