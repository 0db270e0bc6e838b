"""The CLI keeps freed memory for reuse: the quantizer's per-chunk arrays stop page-faulting."""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import textwrap

import pytest

from qwen_edge.cli import app, malloc_tuning

_FAULTS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from qwen_edge.cli.malloc_tuning import reuse_freed_memory
    from qwen_edge.quant import QuantSpec, quantize_blockwise
    if sys.argv[1] == "tuned":
        assert reuse_freed_memory()
    w = (np.random.default_rng(0).standard_normal((4096, 1024)) * 0.02).astype(np.float32)
    spec = QuantSpec(4, 32, False, "rtn")  # numpy temporaries per chunk (the search is compiled: few)
    quantize_blockwise(w, spec)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        quantize_blockwise(w, spec)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_repeated_quantization_stops_page_faulting():
    plain, tuned = _faults("plain"), _faults("tuned")
    # Measured for three rtn passes over a 4M-weight matrix: ~1,200 minor faults with glibc's defaults,
    # ~7 tuned. (The numpy scale search faulted ~61k times; compiled, it allocates little per chunk.)
    assert plain > 500
    assert tuned < plain / 10


def test_the_cli_applies_it_before_running_a_command(monkeypatch):
    order = []
    monkeypatch.setattr(malloc_tuning, "reuse_freed_memory", lambda: order.append("tuned") or True)
    command = argparse.Namespace(func=lambda args: order.append("command") or 0)
    monkeypatch.setattr(app, "parser", lambda: argparse.Namespace(parse_args=lambda argv: command))
    assert app.main([]) == 0
    assert order == ["tuned", "command"]
