"""A content-addressed cache of built bundles and gate results.

A build's key is the sha256 of everything that decides its bytes: the checkpoint's source
fingerprint (config, tokenizer and weight file hashes), the full resolved recipe (the target
file's contents, the precision, the build options) and the tool (qwen-edge's version and source
digest, Python and dependency versions). An entry is trusted only after `check_integrity`
passes, so a damaged entry is rebuilt, never copied.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from .. import manifest as manifest_mod
from ..bundle import staged_output

KEY_SCHEMA = 1
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()


def code_digest(package_dir: Path = _PACKAGE_DIR) -> str:
    """sha256 over qwen_edge's own source files, so that a changed builder never reuses old bundles."""
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".toml", ".json", ".jinja") and "__pycache__" not in path.parts:
            h.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def build_key(fingerprint: dict[str, Any], recipe: dict[str, Any], tool: dict[str, Any]) -> tuple[str, dict]:
    inputs = {"schema": KEY_SCHEMA, "source": fingerprint, "recipe": recipe, "tool": tool}
    return digest(inputs), inputs


class BuildCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def bundle_dir(self, key: str) -> Path:
        return self.root / "builds" / key

    def lookup(self, key: str) -> Path | None:
        """The cached bundle for `key` when it exists and passes its integrity check."""
        path = self.bundle_dir(key)
        if not (path / manifest_mod.MANIFEST_NAME).is_file():
            return None
        try:
            return path if not manifest_mod.check_integrity(path) else None
        except Exception:  # an unreadable manifest is a cache miss, not an error
            return None

    def write_inputs(self, key: str, inputs: dict[str, Any]) -> None:
        """Record what a key was made from (for people reading the cache, not for lookups)."""
        path = self.root / "builds" / f"{key}.inputs.json"
        path.write_text(json.dumps(inputs, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")

    def gate_result(self, key: str) -> dict[str, Any] | None:
        path = self.root / "gates" / f"{key}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def store_gate_result(self, key: str, result: dict[str, Any]) -> None:
        path = self.root / "gates" / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, sort_keys=True, default=str), encoding="utf-8")
        tmp.replace(path)


def same_manifest(a: Path, b: Path) -> bool:
    pa, pb = Path(a) / manifest_mod.MANIFEST_NAME, Path(b) / manifest_mod.MANIFEST_NAME
    return pa.is_file() and pb.is_file() and pa.read_bytes() == pb.read_bytes()


def place(cached: Path, output: Path) -> None:
    """Copy a cached bundle to `output`, atomically (the previous output survives a failure)."""
    with staged_output(output) as stage:
        for path in sorted(Path(cached).rglob("*")):
            if path.is_file() and not path.is_symlink():
                dest = stage / path.relative_to(cached)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
