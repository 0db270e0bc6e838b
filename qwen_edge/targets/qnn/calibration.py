"""Calibration data for static QDQ quantization: realistic prefill and decode feeds.

Token ids come from a local text file or a small built-in corpus. The float static graphs are
run on CPU over that text window by window (a prefill chunk at a time, then the window's last
tokens through the decode graph), and every call's feeds, including the KV cache it saw, are
recorded, so the activation ranges cover real cache contents and attention masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ConfigError
from .runner import StaticGeometry, StaticRunner

BUILTIN_CORPUS = '''\
def read_config(path):
    """Load a JSON configuration file and return it as a dictionary."""
    import json
    with open(path, "r", encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object, got {type(data).__name__}")
    return data


class LRUCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.items = {}

    def get(self, key, default=None):
        if key not in self.items:
            return default
        value = self.items.pop(key)
        self.items[key] = value
        return value

    def put(self, key, value):
        self.items.pop(key, None)
        self.items[key] = value
        while len(self.items) > self.capacity:
            self.items.pop(next(iter(self.items)))


def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


for index, word in enumerate(["alpha", "beta", "gamma", "delta"]):
    print(index, word.upper(), len(word))

The committee met on Tuesday to review the budget. After a long discussion about the cost of
the new bridge, the members agreed to postpone the vote until the engineers had finished their
survey of the river banks. Several residents asked whether the old ferry would keep running.

SELECT customer_id, SUM(amount) AS total FROM orders WHERE created_at >= '2024-01-01'
GROUP BY customer_id HAVING SUM(amount) > 100 ORDER BY total DESC LIMIT 20;

import numpy as np

def normalize(matrix, axis=-1, eps=1e-6):
    norm = np.sqrt((matrix * matrix).sum(axis=axis, keepdims=True))
    return matrix / (norm + eps)

if __name__ == "__main__":
    values = np.random.default_rng(0).normal(size=(4, 8))
    print(normalize(values).round(3))
'''


def calibration_ids(encode, text_file: Path | None, tokens: int) -> tuple[np.ndarray, str]:
    """`tokens` ids from the file (or the built-in corpus, repeated as needed) and a source label."""
    if text_file is not None:
        try:
            text = Path(text_file).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ConfigError(f"{text_file}: cannot read calibration text ({exc})") from None
        source = Path(text_file).name
    else:
        text, source = BUILTIN_CORPUS, "built-in corpus"
    ids = np.asarray(encode(text), dtype=np.int64)
    if ids.size < 2:
        raise ConfigError(f"{source}: calibration text has fewer than 2 tokens")
    if ids.size < tokens:
        ids = np.tile(ids, -(-tokens // ids.size))
    return ids[:tokens], source


class RecordedFeeds:
    """onnxruntime CalibrationDataReader protocol over a list of recorded feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self._next = 0

    def get_next(self):
        if self._next >= len(self.feeds):
            return None
        self._next += 1
        return self.feeds[self._next - 1]

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.feeds)


def record_feeds(geo: StaticGeometry, prefill_run, decode_run, ids: np.ndarray,
                 decode_steps: int) -> tuple[RecordedFeeds, RecordedFeeds]:
    """Run the float graphs over `ids` in context-sized windows and keep every call's feeds."""
    recorded = {"prefill": [], "decode": []}

    def recording(kind, run):
        def call(feeds):
            recorded[kind].append({k: np.array(v, copy=True) for k, v in feeds.items()})
            return run(feeds)
        return call

    runner = StaticRunner(geo, recording("prefill", prefill_run), recording("decode", decode_run))
    for start in range(0, len(ids), geo.context):
        window = ids[start:start + geo.context]
        steps = min(decode_steps, max(len(window) - 1, 0))
        cache = runner.new_cache()
        runner.step(cache, window[:len(window) - steps] if steps else window)
        for token in window[len(window) - steps:]:
            runner.step(cache, [token])
    if not recorded["decode"]:  # always calibrate the decode graph on something
        cache = runner.new_cache()
        runner.step(cache, ids[:1])
    return RecordedFeeds(recorded["prefill"]), RecordedFeeds(recorded["decode"])
