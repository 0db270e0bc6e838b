"""Checks a bundle directory before the runtime loads it: every failure is a one-line BundleError.

Always (cheap, stat only): every file the manifest lists exists, is a plain file and has the
listed size, so a truncated or missing model file is named instead of surfacing as an
onnxruntime error; the manifest's `io` section has the types the runtime relies on.
On request: every file's sha256 (`verify_integrity`), and the manifest's Ed25519 signature
(`verify_signature`, which imports `cryptography` only then).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..bundle import manifest as manifest_mod
from ..errors import BundleError

KV_DTYPES = ("fp32", "fp16")
_IO_INTS = ("num_layers", "num_kv_heads", "head_dim", "vocab_size", "context_length")


def check_bundle(path: Path, manifest: dict[str, Any], *, verify_integrity: bool = False,
                 verify_signature: Any = None) -> None:
    where = f"{path}/{manifest_mod.MANIFEST_NAME}"
    _check_io(where, manifest)
    if verify_signature is not None:
        from ..bundle.signing import verify_bundle_signature  # imports cryptography lazily

        verify_bundle_signature(path, verify_signature)
    elif verify_integrity:
        problems = manifest_mod.check_integrity(path, manifest)
        if problems:
            raise BundleError(f"{path}: integrity check failed: {problems[0]}")
    else:
        _check_sizes(path, manifest)


def _check_io(where: str, manifest: dict[str, Any]) -> None:
    io = manifest.get("io")
    if not isinstance(io, dict):
        raise BundleError(f"{where}: 'io' must be an object")
    for key in _IO_INTS:
        value = io.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise BundleError(f"{where}: 'io.{key}' must be a positive integer, got {value!r}")
    if io.get("kv_dtype") not in KV_DTYPES:
        raise BundleError(f"{where}: 'io.kv_dtype' must be one of {', '.join(KV_DTYPES)}, got {io.get('kv_dtype')!r}")
    model_file = io.get("model_file")
    if not isinstance(model_file, str) or model_file not in manifest["files"]:
        raise BundleError(f"{where}: 'io.model_file' {model_file!r} is not one of the bundle's files")
    _check_layers(where, io)
    eos = manifest.get("generation", {}).get("eos_token_ids")
    if not isinstance(eos, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in eos):
        raise BundleError(f"{where}: 'generation.eos_token_ids' must be a list of non-negative integers")


def _check_layers(where: str, io: dict[str, Any]) -> None:
    """A hybrid decoder's cache description: which layers have key/values, which a state, and its shapes."""
    layers = range(io["num_layers"])
    for key in ("kv_layers", "state_layers"):
        value = io.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                                           and i in layers for i in value)):
            raise BundleError(f"{where}: 'io.{key}' must be a list of layer indices below {io['num_layers']}")
    states = io.get("states", {})
    if not isinstance(states, dict) or (states and "state_layers" not in io):
        raise BundleError(f"{where}: 'io.states' must be an object, with 'io.state_layers'")
    for kind, state in states.items():
        shape = state.get("shape") if isinstance(state, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise BundleError(f"{where}: 'io.states.{kind}.shape' must be a list of positive integers")
        if state.get("dtype") not in KV_DTYPES:
            raise BundleError(f"{where}: 'io.states.{kind}.dtype' must be one of {', '.join(KV_DTYPES)}")


def _check_sizes(path: Path, manifest: dict[str, Any]) -> None:
    for name, entry in sorted(manifest["files"].items()):
        file = path / name
        if file.is_symlink() or not file.is_file():
            raise BundleError(f"{file}: listed in the manifest but missing or not a plain file")
        size = file.stat().st_size
        if isinstance(entry.get("bytes"), int) and size != entry["bytes"]:
            raise BundleError(f"{file}: {size} bytes, the manifest says {entry['bytes']} (truncated or replaced?)")
