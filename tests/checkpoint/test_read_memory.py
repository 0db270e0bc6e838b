"""Reading a tensor costs about its own size: no full-size temporaries, no file pages left resident.

These guard the build's peak memory (benchmarks/build_memory.py measures the whole build): a bf16
embedding of a 0.5B model is 544 MB as float32, and each extra full-size copy shows up in peak RSS.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from qwen_edge.checkpoint.safetensors_file import SafetensorsFile
from qwen_edge.checkpoint.tiny import write_safetensors

ROWS, COLS = 2048, 2048  # 16 MiB as float32


@pytest.fixture(scope="module")
def bf16_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mem") / "model.safetensors"
    w = np.random.default_rng(0).standard_normal((ROWS, COLS), dtype=np.float32)
    write_safetensors(path, {"w": w}, dtype="BF16")
    return path


def test_bf16_read_allocates_little_beyond_the_result(bf16_file):
    out_bytes = ROWS * COLS * 4
    with SafetensorsFile.open(bf16_file) as f:
        tracemalloc.start()
        try:
            out = f.read("w")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert out.dtype == np.float32 and out.shape == (ROWS, COLS)
    assert peak < 1.2 * out_bytes, f"peak {peak / out_bytes:.2f}x the result"


def _mapped_rss_kib(path: Path) -> int | None:
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        return None
    total, inside = 0, False
    for line in smaps.read_text().splitlines():
        if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:  # a mapping header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_read_pages_are_released(bf16_file):
    with SafetensorsFile.open(bf16_file) as f:
        f.read("w")
        rss = _mapped_rss_kib(bf16_file)
        if rss is None:
            pytest.skip("no /proc/self/smaps on this platform")
        assert rss < 256, f"{rss} KiB of the file stay resident after the tensor was copied out"
