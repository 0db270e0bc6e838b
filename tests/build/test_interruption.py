"""A build killed mid-way (SIGTERM, SIGINT) exits 130, leaves the previous output as it was and no
temporary directory, and the next build succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwen_edge.bundle import manifest as manifest_mod
from qwen_edge.build import BuildRequest, build
from qwen_edge.precision import Precision
from qwen_edge.checkpoint.tiny import TINY_QWEN2, make_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
# Big enough that the build spends a second or more writing layers, small enough for the fast suite.
SLOW_CONFIG = {**TINY_QWEN2, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 24,
               "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 4096}


@pytest.fixture(scope="module")
def slow_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("slow") / "ckpt", SLOW_CONFIG, dtype="BF16")


def _hashes(directory: Path) -> dict[str, str]:
    return {p.name: manifest_mod.sha256_file(p) for p in sorted(directory.iterdir())}


def _start_build(ckpt: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    # A job started in the background by a non-interactive shell inherits SIGINT ignored, and then
    # Python installs no KeyboardInterrupt handler: give the build the default disposition.
    return subprocess.Popen([sys.executable, "-m", "qwen_edge.cli", "build", str(ckpt), "-o", str(out),
                             "--precision", "int4", "--quant-method", "search", "-q"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _stop_mid_build(proc: subprocess.Popen, out: Path, timeout: float = 120.0) -> Path:
    """Freeze the build (SIGSTOP) once its staging directory holds some weights; return that directory."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stage in out.parent.glob(f".{out.name}.partial-*"):
            data = stage / "model.onnx.data"
            try:
                if data.stat().st_size > 0:
                    proc.send_signal(signal.SIGSTOP)
                    return stage
            except FileNotFoundError:
                pass
        if proc.poll() is not None:
            pytest.fail(f"the build ended (rc {proc.returncode}) before it could be interrupted: {proc.stderr.read()}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail("the build never started writing weights")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupted_build_leaves_the_previous_output_and_no_temporary_files(slow_checkpoint, tmp_path, sig):
    out = tmp_path / "bundle"
    build(BuildRequest(slow_checkpoint, out, Precision.preset("fp32"), smoke_test=False))
    before = _hashes(out)

    proc = _start_build(slow_checkpoint, out)
    stage = _stop_mid_build(proc, out)
    assert stage.is_dir() and not (stage / "manifest.json").exists()  # really mid-way
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == 130, err
    assert err.strip() == "qwen-edge: interrupted"
    assert _hashes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]

    rerun = _start_build(slow_checkpoint, out)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert manifest_mod.load(out)["precision"]["weights"] == "int4"
    assert manifest_mod.check_integrity(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
