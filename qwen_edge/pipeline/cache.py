"""A content-addressed cache of built bundles and gate results.

A build's key is the sha256 of everything that decides its bytes: the checkpoint's source
fingerprint (config, tokenizer and weight file hashes), the full resolved recipe (the target
file's contents, the precision, the build options) and the tool (qwen-edge's version and source
digest, Python and dependency versions). An entry is trusted only after `check_integrity`
passes, so a damaged entry is rebuilt, never copied.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..bundle import manifest as manifest_mod
from ..bundle.staging import staged_output
from .config import is_url

KEY_SCHEMA = 2  # 2: the platform (machine, OS) joined the tool: a remote cache is shared by hosts
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
# Every package that can change a bundle's bytes, on any target (absent ones are recorded as None).
KEY_PACKAGES = ("qwen-edge", "onnx", "onnxruntime", "numpy", "tokenizers", "onnx-ir", "olive-ai",
                "onnxruntime-genai", "onnxruntime-qnn", "openvino", "nncf")
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    key: str
    bytes: int
    created: float  # seconds since the epoch (when it was published)


def redact(location: str) -> str:
    """A URL without user, password or query (where credentials may hide); paths unchanged."""
    if not is_url(location):
        return location
    parts = urlsplit(location)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def tool_fingerprint() -> dict[str, Any]:
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system(),
            "packages": versions, "source_sha256": code_digest()}


class FileHashes:
    """sha256 of files, remembered by (device, inode, size, mtime_ns, ctime_ns) as git's index does:
    a file whose status is unchanged is not read again. ctime cannot be set by a user, so a rewritten
    file is always hashed afresh."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._table = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(self._table, dict):
                self._table = {}
        except (OSError, ValueError):
            self._table = {}
        self._dirty = False

    def sha256(self, file: Path) -> str:
        file = Path(file).resolve()
        st = file.stat()
        stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        known = self._table.get(str(file))
        if isinstance(known, dict) and known.get("stat") == stamp and isinstance(known.get("sha256"), str):
            return known["sha256"]
        h = hashlib.sha256()
        with open(file, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                h.update(chunk)
        self._table[str(file)] = {"stat": stamp, "sha256": h.hexdigest()}
        self._dirty = True
        return h.hexdigest()

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._table, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)
        self._dirty = False


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


def manifest_sha256(bundle: Path) -> str | None:
    """sha256 of a bundle's manifest.json (which holds the sha256 of every other file), None when absent."""
    path = Path(bundle) / manifest_mod.MANIFEST_NAME
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def place(cached: Path, output: Path) -> None:
    """Copy a cached bundle to `output`, atomically (the previous output survives a failure)."""
    with staged_output(output) as stage:
        for path in sorted(Path(cached).rglob("*")):
            if path.is_file() and not path.is_symlink():
                dest = stage / path.relative_to(cached)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
