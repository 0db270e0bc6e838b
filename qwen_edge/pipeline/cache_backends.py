"""Where cache entries live: the `CacheBackend` interface, the local-directory backend, opening a
cache from PIPELINE.toml's `cache` (a directory or a URL), and pruning.

An entry is one bundle under its build key. Every backend keeps the same promises:

- `fetch` puts an entry's bundle in place only after checking it by sha256 (the bundle's manifest
  lists every file's); a damaged or partial entry is removed and reported as a miss, so it is rebuilt;
- `publish` is put-if-absent: of several jobs publishing one key at once, one wins and the others
  learn that they lost (the entries are equal: builds are deterministic to the byte);
- only bundles that built and pass their integrity check are published: a failed build leaves nothing.

The local backend keeps each entry as a bundle directory (`builds/<key>/`), published by renaming a
complete copy into place (a directory rename onto an existing entry fails, which makes it
put-if-absent). URLs (`s3://`, `gs://`, `az://`, `file://`, any fsspec protocol) go to
`remote_cache.FsspecCache`, imported only then.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..bundle import manifest as manifest_mod
from ..errors import CacheError, ConfigError
from .cache import Entry, FileHashes, manifest_sha256, place, redact
from .config import is_url


class CacheBackend(Protocol):
    location: str  # for reports and messages: a path, or a URL without credentials

    def file_hashes(self) -> FileHashes: ...
    def bundle_manifest_sha256(self, key: str) -> str | None: ...
    def fetch(self, key: str, output: Path) -> bool: ...
    def publish(self, key: str, bundle: Path, inputs: dict[str, Any]) -> bool: ...
    def gate_result(self, key: str) -> dict[str, Any] | None: ...
    def store_gate_result(self, key: str, bundle_key: str, result: dict[str, Any]) -> None: ...
    def entries(self) -> list[Entry]: ...
    def remove(self, key: str) -> None: ...
    def prune_gates(self, keep: set[str]) -> int: ...


def open_cache(location: str, state_dir: Path) -> CacheBackend:
    """The backend for a cache location; `state_dir` holds what stays on this machine for a remote
    cache (the stat-keyed file hash table)."""
    if not is_url(location):
        return LocalCache(Path(location))
    if urlsplit(location).query or urlsplit(location).password:
        raise ConfigError(f"cache {redact(location)}: credentials and options do not belong in the URL; "
                          f"use the store's usual environment or config")
    from .remote_cache import FsspecCache

    return FsspecCache(location, Path(state_dir))


class LocalCache:
    """builds/<key>/ (a bundle), builds/<key>.inputs.json, gates/<gate key>.json, file_hashes.json."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.location = str(self.root)

    def file_hashes(self) -> FileHashes:
        return FileHashes(self.root / "file_hashes.json")

    def bundle_dir(self, key: str) -> Path:
        return self.root / "builds" / key

    def bundle_manifest_sha256(self, key: str) -> str | None:
        return manifest_sha256(self.bundle_dir(key))

    def _intact(self, path: Path) -> bool:
        try:
            return (path / manifest_mod.MANIFEST_NAME).is_file() and not manifest_mod.check_integrity(path)
        except Exception:  # an unreadable manifest is a damaged entry, not an error
            return False

    def fetch(self, key: str, output: Path) -> bool:
        path = self.bundle_dir(key)
        if not path.exists():
            return False
        if not self._intact(path):
            self.remove(key)
            return False
        place(path, output)
        return True

    def publish(self, key: str, bundle: Path, inputs: dict[str, Any]) -> bool:
        final = self.bundle_dir(key)
        if self._intact(final):
            return False
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
        try:
            for path in sorted(Path(bundle).rglob("*")):
                if path.is_file() and not path.is_symlink():
                    dest = tmp / path.relative_to(bundle)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, dest)
            problems = manifest_mod.check_integrity(tmp)
            if problems:
                raise CacheError(f"{bundle}: not published to the cache {self.root}: {problems[0]}")
            for attempt in range(2):
                try:
                    os.rename(tmp, final)
                    break
                except OSError:
                    if self._intact(final):
                        return False  # another job published it first
                    if attempt:
                        raise CacheError(f"{final}: cannot publish the cache entry") from None
                    self.remove(key)  # a damaged entry is in the way
            (final.parent / f"{key}.inputs.json").write_text(
                json.dumps(inputs, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
            return True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def gate_result(self, key: str) -> dict[str, Any] | None:
        try:
            record = json.loads((self.root / "gates" / f"{key}.json").read_text(encoding="utf-8"))
            return record["result"] if isinstance(record.get("result"), dict) else None
        except (OSError, ValueError, AttributeError):
            return None

    def store_gate_result(self, key: str, bundle_key: str, result: dict[str, Any]) -> None:
        path = self.root / "gates" / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"bundle": bundle_key, "result": result}, sort_keys=True, default=str),
                       encoding="utf-8")
        tmp.replace(path)

    def entries(self) -> list[Entry]:
        found = []
        builds = self.root / "builds"
        for path in sorted(builds.iterdir()) if builds.is_dir() else []:
            if path.is_dir() and not path.name.startswith("."):
                files = [p for p in path.rglob("*") if p.is_file()]
                created = (path / manifest_mod.MANIFEST_NAME).stat().st_mtime if \
                    (path / manifest_mod.MANIFEST_NAME).is_file() else path.stat().st_mtime
                found.append(Entry(path.name, sum(p.stat().st_size for p in files), created))
        return found

    def remove(self, key: str) -> None:
        shutil.rmtree(self.bundle_dir(key), ignore_errors=True)
        (self.root / "builds" / f"{key}.inputs.json").unlink(missing_ok=True)

    def prune_gates(self, keep: set[str]) -> int:
        removed = 0
        gates = self.root / "gates"
        for path in sorted(gates.glob("*.json")) if gates.is_dir() else []:
            try:
                bundle = json.loads(path.read_text(encoding="utf-8")).get("bundle")
            except (OSError, ValueError, AttributeError):
                bundle = None
            if bundle not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def prune(cache: CacheBackend, max_bytes: int | None = None, older_than_s: float | None = None,
          now: float | None = None) -> dict[str, Any]:
    """Remove entries published more than `older_than_s` ago, then the oldest ones until the rest
    fit in `max_bytes`; gate results of removed entries go with them."""
    now = time.time() if now is None else now
    entries = sorted(cache.entries(), key=lambda e: (e.created, e.key))
    removed = [e for e in entries if older_than_s is not None and now - e.created > older_than_s]
    kept = [e for e in entries if e not in removed]
    if max_bytes is not None:
        while kept and sum(e.bytes for e in kept) > max_bytes:
            removed.append(kept.pop(0))
    for entry in removed:
        cache.remove(entry.key)
    gates = cache.prune_gates({e.key for e in kept})
    return {"cache": cache.location, "removed": [e.key for e in removed], "removed_bytes": sum(e.bytes for e in removed),
            "kept": len(kept), "kept_bytes": sum(e.bytes for e in kept), "gate_results_removed": gates}


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
               "t": 1000**4, "tb": 1000**4, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str, what: str = "size") -> int:
    """'10GB', '512MiB', '2e9' -> bytes."""
    number = text.strip().rstrip("BbIiKkMmGgTt ")
    unit = text.strip()[len(number):].strip().lower()
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _SIZE_UNITS or value < 0:
        raise ConfigError(f"{what}: expected a size such as 10GB or 512MiB, got {text!r}")
    return int(value * _SIZE_UNITS[unit])


def parse_age(text: str, what: str = "age") -> float:
    """'30d', '12h', '90m', '45s', '2w' -> seconds."""
    t = text.strip().lower()
    try:
        value = float(t[:-1]) if t and t[-1] in _AGE_UNITS else -1.0
    except ValueError:
        value = -1.0
    if value < 0:
        raise ConfigError(f"{what}: expected an age such as 30d, 12h, 90m or 45s, got {text!r}")
    return value * _AGE_UNITS[t[-1]]
