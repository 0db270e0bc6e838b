"""Hostile and broken inputs through the whole build (library and CLI): each refusal is one line
naming its culprit, exits non-zero, never runs the checkpoint's code, and leaves no output and
no temporary directory behind (an existing output stays as it was)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qwen_edge.bundle import manifest as manifest_mod
from qwen_edge.build import BuildRequest, build
from qwen_edge.cli import main
from qwen_edge.errors import CheckpointError, ConfigError, UnsupportedArchitectureError
from qwen_edge.graph.decoder import DecoderOptions
from qwen_edge.precision import Precision
from qwen_edge.checkpoint.tiny import TINY_QWEN2, make_tiny_checkpoint, write_safetensors

from tests.checkpoint.test_malformed import CASES

REPO = Path(__file__).resolve().parents[2]
OPEN_CASES = [c for c in CASES if c[4] is None]


def _snapshot(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): manifest_mod.sha256_file(p)
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def previous_bundle(tmp_path_factory) -> Path:
    """A good bundle that each refused build tries (and fails) to replace."""
    root = tmp_path_factory.mktemp("previous")
    ckpt = make_tiny_checkpoint(root / "ckpt")
    build(BuildRequest(ckpt, root / "bundle", Precision.preset("fp32")))
    return root / "bundle"


def _existing_output(tmp_path: Path, previous_bundle: Path) -> tuple[Path, dict[str, str]]:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    shutil.copytree(previous_bundle, out_dir / "bundle")
    return out_dir / "bundle", _snapshot(out_dir / "bundle")


def _assert_untouched(out: Path, before: dict[str, str]) -> None:
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name], "temporary files left beside the output"


# ------------------------------------------------------------------------------ the loader corpus via the CLI
@pytest.mark.parametrize("make,exc_type,culprits", [c[1:4] for c in OPEN_CASES], ids=[c[0] for c in OPEN_CASES])
def test_cli_build_refuses_malformed_checkpoint(tmp_path, capsys, previous_bundle, make, exc_type, culprits):
    root = tmp_path / "ckpt"
    make(root)
    out, before = _existing_output(tmp_path, previous_bundle)
    code = main(["build", str(root), "-o", str(out), "--precision", "fp32", "-q"])
    _, err = capsys.readouterr()
    assert code == exc_type.exit_code == 3
    assert err.startswith("qwen-edge: error: ") and err.count("\n") == 1, err
    for culprit in culprits:
        assert culprit in err, f"{culprit!r} not in {err!r}"
    _assert_untouched(out, before)
    assert not (tmp_path / "marker").exists()


# ------------------------------------------------------------------------------ failures found while building
def _tiny(root: Path, **config) -> Path:
    """A consistent tiny checkpoint whose config.json is then edited (the weights stay as they were)."""
    ckpt = make_tiny_checkpoint(root, TINY_QWEN2)
    path = ckpt / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    return ckpt


def _nan_in(root: Path, tensor: str) -> Path:
    from safetensors.numpy import load_file

    ckpt = _tiny(root)
    tensors = load_file(str(ckpt / "model.safetensors"))
    tensors[tensor] = tensors[tensor].copy()
    tensors[tensor].flat[7] = np.nan
    write_safetensors(ckpt / "model.safetensors", tensors)
    return ckpt


def _drop_weight(root: Path, tensor: str) -> Path:
    from safetensors.numpy import load_file

    ckpt = _tiny(root)
    tensors = load_file(str(ckpt / "model.safetensors"))
    del tensors[tensor]
    write_safetensors(ckpt / "model.safetensors", tensors)
    return ckpt


DOWN = "model.layers.1.mlp.down_proj.weight"
BUILD_CASES = [
    # (id, make(root), options, exception type, culprits)
    ("nan-weight-in-last-layer", lambda r: _nan_in(r, DOWN), {}, CheckpointError, [DOWN, "NaN"]),
    ("intermediate-size-mismatch", lambda r: _tiny(r, intermediate_size=161), {}, CheckpointError,
     ["model.layers.0.mlp.gate_proj.weight"]),
    ("hidden-size-mismatch", lambda r: _tiny(r, hidden_size=128), {}, CheckpointError, ["model.embed_tokens.weight"]),
    ("vocab-size-mismatch", lambda r: _tiny(r, vocab_size=1000), {}, CheckpointError,
     ["model.embed_tokens.weight"]),
    ("missing-weight", lambda r: _drop_weight(r, "model.layers.1.self_attn.k_proj.weight"), {}, CheckpointError,
     ["model.layers.1.self_attn.k_proj.weight"]),
    ("unknown-architecture", lambda r: _tiny(r, architectures=["LlamaForCausalLM"]), {},
     UnsupportedArchitectureError, ["config.json", "'LlamaForCausalLM'"]),
    ("absurd-dynamic-rope-context", lambda r: _tiny(r, max_position_embeddings=10_000_000,
                                                    rope_scaling={"rope_type": "dynamic", "factor": 2.0}),
     {}, CheckpointError, ["config.json", "'max_position_embeddings'", "10000000"]),
    ("absurd-max-length", _tiny, {"max_length": 10**9}, ConfigError, ["--max-length", "1000000000", "KV cache"]),
]


@pytest.mark.parametrize("make,options,exc_type,culprits", [c[1:] for c in BUILD_CASES],
                         ids=[c[0] for c in BUILD_CASES])
def test_build_refusals_leave_the_previous_output(tmp_path, capsys, previous_bundle, make, options, exc_type,
                                                  culprits):
    ckpt = make(tmp_path / "ckpt")
    out, before = _existing_output(tmp_path, previous_bundle)
    with pytest.raises(exc_type) as err:
        build(BuildRequest(ckpt, out, Precision.preset("int4"),
                           options=DecoderOptions(max_positions=options.get("max_length"))))
    message = str(err.value)
    assert "\n" not in message
    for culprit in culprits:
        assert culprit in message, f"{culprit!r} not in {message!r}"
    _assert_untouched(out, before)

    argv = ["build", str(ckpt), "-o", str(out), "--precision", "int4", "-q"]
    if "max_length" in options:
        argv += ["--max-length", str(options["max_length"])]
    code = main(argv)
    _, stderr = capsys.readouterr()
    assert code == exc_type.exit_code and stderr.count("\n") == 1 and culprits[0] in stderr, stderr
    _assert_untouched(out, before)


def test_exception_in_a_late_pass_leaves_nothing(tmp_path, previous_bundle, monkeypatch):
    """An exception after every file is written (here: in the smoke test) still lands nothing."""
    import qwen_edge.build.decoder_stages as stages
    from qwen_edge.errors import GraphError

    def broken(*args, **kwargs):
        raise GraphError("model.onnx: injected failure")

    monkeypatch.setattr(stages, "smoke_test", broken)
    out, before = _existing_output(tmp_path, previous_bundle)
    with pytest.raises(GraphError, match="injected"):
        build(BuildRequest(make_tiny_checkpoint(tmp_path / "ckpt"), out, Precision.preset("fp32")))
    _assert_untouched(out, before)


# ------------------------------------------------------------------------------ a full disk
def _cli(*argv: str, file_size_limit: int | None = None, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))

    def limit():
        if file_size_limit is not None:  # writes past it fail with EFBIG (Python ignores SIGXFSZ)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.Popen([sys.executable, "-m", "qwen_edge.cli", *argv], env=env, preexec_fn=limit,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_full_disk_is_one_line_and_leaves_the_previous_output(tmp_path, previous_bundle):
    out, before = _existing_output(tmp_path, previous_bundle)
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", seed=3)
    proc = _cli("build", str(ckpt), "-o", str(out), "--precision", "fp32", "-q", file_size_limit=64 << 10)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 5, err
    assert err.count("\n") == 1 and "cannot write the bundle" in err and "File too large" in err, err
    _assert_untouched(out, before)


# ------------------------------------------------------------------------------ reproducible and checkable
def test_a_one_byte_change_to_any_bundle_file_is_caught(bundles, tmp_path, capsys):
    source = bundles("qwen2", "int4")
    names = sorted(p.name for p in source.iterdir())
    assert "manifest.json" in names and "model.onnx.data" in names
    for name in names:
        for where in (0, 0.5, -1):
            bundle = tmp_path / f"{name}-{where}"
            shutil.copytree(source, bundle)
            data = bytearray((bundle / name).read_bytes())
            pos = int(len(data) * where) if where != -1 else len(data) - 1
            data[pos] ^= 0x20
            (bundle / name).write_bytes(bytes(data))
            code = main(["verify", str(bundle), "--integrity", "-q"])
            out, err = capsys.readouterr()
            assert code == 5, f"{name} byte {pos}: not caught ({out} {err})"
            assert name in out + err or "manifest" in out + err


def test_the_manifest_seal_is_deterministic_and_checked(bundles):
    m = manifest_mod.load(bundles("qwen2", "fp32"))
    assert m[manifest_mod.SEAL_KEY] == manifest_mod.seal(m)[manifest_mod.SEAL_KEY]
    assert manifest_mod.seal(manifest_mod.seal(m)) == manifest_mod.seal(m)
