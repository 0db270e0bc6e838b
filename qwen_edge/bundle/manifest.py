"""The bundle manifest: one schema, used by the builder that writes it and the runtime that reads it.

Standard library only, because the runtime imports it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import BundleError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"  # optional, beside the manifest (see signing.py); not a listed file
REQUIRED_KEYS = ("schema_version", "tool", "source", "architecture", "precision", "target", "files", "io")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dumps(manifest: dict[str, Any]) -> str:
    """Canonical JSON: sorted keys, fixed indentation, trailing newline (stable bytes)."""
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


SEAL_KEY = "manifest_sha256"  # sha256 of the canonical manifest without this key


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its own content hash, so that a change to manifest.json itself is caught too."""
    body = {k: v for k, v in manifest.items() if k != SEAL_KEY}
    return body | {SEAL_KEY: hashlib.sha256(dumps(body).encode("utf-8")).hexdigest()}


def seal_problems(bundle_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """A sealed manifest must be byte-for-byte canonical and match its seal (unsealed ones pass: older bundles)."""
    if SEAL_KEY not in manifest:
        return []
    raw = (Path(bundle_dir) / MANIFEST_NAME).read_bytes()
    if raw != dumps(manifest).encode("utf-8"):
        return [f"{MANIFEST_NAME}: not in canonical form (edited or corrupted)"]
    if seal(manifest)[SEAL_KEY] != manifest[SEAL_KEY]:
        return [f"{MANIFEST_NAME}: content differs from its {SEAL_KEY} (edited or corrupted)"]
    return []


def load(bundle_dir: Path) -> dict[str, Any]:
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{path}: manifest not found (is this a qwen-edge bundle?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: manifest must be a JSON object")
    for key in REQUIRED_KEYS:
        if key not in manifest:
            raise BundleError(f"{path}: manifest key '{key}' is missing")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"{path}: manifest schema_version {manifest['schema_version']!r} is not supported "
            f"(this qwen-edge reads {SCHEMA_VERSION})"
        )
    files = manifest["files"]
    if not isinstance(files, dict) or not all(isinstance(v, dict) and "sha256" in v for v in files.values()):
        raise BundleError(f"{path}: manifest key 'files' must map names to {{'sha256', 'bytes'}}")
    return manifest


def check_integrity(bundle_dir: Path, manifest: dict[str, Any] | None = None) -> list[str]:
    """Every file's sha256 against the manifest; returns a list of problems (empty when intact)."""
    bundle_dir = Path(bundle_dir)
    manifest = manifest if manifest is not None else load(bundle_dir)
    problems: list[str] = seal_problems(bundle_dir, manifest)
    listed = manifest["files"]
    present = {
        p.relative_to(bundle_dir).as_posix()
        for p in bundle_dir.rglob("*")
        if (p.is_file() or p.is_symlink()) and p.relative_to(bundle_dir).as_posix() not in (MANIFEST_NAME, SIGNATURE_NAME)
    }
    for name in sorted(set(listed) - present):
        problems.append(f"{name}: listed in the manifest but missing")
    for name in sorted(present - set(listed)):
        problems.append(f"{name}: present but not listed in the manifest")
    for name in sorted(set(listed) & present):
        path = bundle_dir / name
        if path.is_symlink():
            problems.append(f"{name}: is a symbolic link (bundles hold plain files only)")
            continue
        expected = listed[name]
        if path.stat().st_size != expected.get("bytes", path.stat().st_size):
            problems.append(f"{name}: size {path.stat().st_size} differs from the manifest's {expected['bytes']}")
        elif sha256_file(path) != expected["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    return problems


def load_intact(bundle_dir: Path, action: str) -> dict[str, Any]:
    """The manifest of a bundle that passes its integrity check; `action` names what is refused."""
    manifest = load(bundle_dir)
    problems = check_integrity(bundle_dir, manifest)
    if problems:
        raise BundleError(f"{bundle_dir}: refusing to {action} a bundle that fails its integrity check: {problems[0]}")
    return manifest
