"""Optional Ed25519 signatures over a bundle's manifest (extra `sign`: the `cryptography` package).

The manifest lists every file's sha256, so one signature over its exact bytes covers the whole
bundle once the files are checked against it: `verify_bundle_signature` does both. The signature
lives beside the manifest in `manifest.sig` (JSON: algorithm, the public key's sha256, the
signature in base64), which the manifest's integrity check does not count as an extra file.

`cryptography` is imported inside the functions only, so the runtime, which calls this module only
when an app passes `verify_signature=`, keeps its four hard dependencies.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import BundleError, ConfigError
from . import manifest as manifest_mod

ALGORITHM = "ed25519"


class SignatureError(BundleError):
    """The bundle's signature is missing, malformed, made by another key, or does not match."""


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ConfigError("signing needs the 'cryptography' package (pip install 'qwen-edge[sign]')") from None
    return ed25519, serialization, InvalidSignature


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PEM, public PEM)."""
    ed25519, serialization, _ = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def write_keypair(directory: Path) -> tuple[Path, Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private, public = generate_keypair()
    private_path, public_path = directory / "private.pem", directory / "public.pem"
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    public_path.write_bytes(public)
    return private_path, public_path


def _key_bytes(key: Any) -> bytes:
    if isinstance(key, (str, os.PathLike)) and not (isinstance(key, str) and key.lstrip().startswith("-----BEGIN")):
        try:
            return Path(key).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read key file ({exc.strerror})") from None
    return key.encode() if isinstance(key, str) else bytes(key)


def load_private_key(key: Any):
    ed25519, serialization, _ = _crypto()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    try:
        loaded = serialization.load_pem_private_key(_key_bytes(key), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"private key: not an unencrypted PEM private key ({exc})".splitlines()[0]) from None
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"private key: must be Ed25519, got {type(loaded).__name__}")
    return loaded


def load_public_key(key: Any):
    """An Ed25519 public key from a key object, raw 32 bytes, PEM bytes/str or a PEM file path."""
    ed25519, serialization, _ = _crypto()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    data = _key_bytes(key)
    try:
        if len(data) == 32 and not data.startswith(b"-----"):
            return ed25519.Ed25519PublicKey.from_public_bytes(data)
        loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"public key: not a PEM or raw Ed25519 public key ({exc})".splitlines()[0]) from None
    if not isinstance(loaded, ed25519.Ed25519PublicKey):
        raise ConfigError(f"public key: must be Ed25519, got {type(loaded).__name__}")
    return loaded


def _raw_public(public_key) -> bytes:
    _, serialization, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign_bundle(bundle: Path, private_key: Any) -> Path:
    """Sign the manifest of an intact bundle; writes (or replaces) `manifest.sig`."""
    bundle = Path(bundle)
    manifest_mod.load_intact(bundle, "sign")
    key = load_private_key(private_key)
    data = (bundle / manifest_mod.MANIFEST_NAME).read_bytes()
    record = {"algorithm": ALGORITHM,
              "public_key_sha256": hashlib.sha256(_raw_public(key.public_key())).hexdigest(),
              "signature": base64.b64encode(key.sign(data)).decode()}
    path = bundle / manifest_mod.SIGNATURE_NAME
    tmp = bundle / f".{manifest_mod.SIGNATURE_NAME}.tmp"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def verify_bundle_signature(bundle: Path, public_key: Any) -> None:
    """Raise SignatureError unless `manifest.sig` is a valid signature of the manifest by `public_key`,
    and BundleError unless every file matches the (now trusted) manifest."""
    _, _, InvalidSignature = _crypto()
    bundle = Path(bundle)
    key = load_public_key(public_key)
    sig_path = bundle / manifest_mod.SIGNATURE_NAME
    if not sig_path.is_file() or sig_path.is_symlink():
        raise SignatureError(f"{sig_path}: the bundle is not signed (signature file missing)")
    try:
        record = json.loads(sig_path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("algorithm") != ALGORITHM:
            raise ValueError(f"algorithm must be '{ALGORITHM}'")
        signature = base64.b64decode(record["signature"], validate=True)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"{sig_path}: malformed signature file ({exc})".splitlines()[0]) from None
    fingerprint = hashlib.sha256(_raw_public(key)).hexdigest()
    if record.get("public_key_sha256") != fingerprint:
        raise SignatureError(f"{sig_path}: signed by another key (sha256 {str(record.get('public_key_sha256'))[:16]}..., "
                             f"expected {fingerprint[:16]}...)")
    data = (bundle / manifest_mod.MANIFEST_NAME).read_bytes()
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise SignatureError(f"{bundle / manifest_mod.MANIFEST_NAME}: signature does not match the manifest "
                             f"(the manifest was changed after signing)") from None
    problems = manifest_mod.check_integrity(bundle)
    if problems:
        raise BundleError(f"{bundle}: integrity check failed: {problems[0]}")
