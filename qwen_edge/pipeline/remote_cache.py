"""A cache in object storage through fsspec (the `remote` extra: fsspec, and s3fs for `s3://`;
gcsfs or adlfs for `gs://` / `az://`). Credentials come from each store's own environment and
config files; nothing here reads, logs or reports them.

Layout under the URL's prefix:

    entries/<key>.json               the entry's manifest: the archive's path, size and sha256, the
                                     sha256 of the bundle's manifest.json, when, and the key's inputs
    archives/<key>/<sha256>.tar      the bundle as one uncompressed tar (bundle/<files>)
    gates/<gate key>.json            a passed gate's result (with its own sha256)

Publishing uploads the archive first (its name is its content hash, so a second upload of the same
bytes changes nothing), checks its size on the store, then creates the entry's manifest with
put-if-absent: the manifest is the commit. On S3 that is a conditional PUT (`If-None-Match: *`,
which AWS S3 and moto honour and s3fs sends for `mode="create"`); a store that ignores the header
overwrites instead. Local paths (`file://`) use a hard link, which fails when the name exists. Other
protocols get fsspec's `mode="create"`, which checks for the object and then writes it: two racing
jobs may then both publish; that is safe (an object store writes an object whole, every manifest
names a complete archive of equal content, and readers check the sha256), it only costs an upload.
Fetching checks the archive's size and sha256 and the bundle's file hashes before anything is used;
a damaged entry is removed (its manifest first) and rebuilt by the caller.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ..bundle import manifest as manifest_mod
from ..bundle.archive import BUNDLE_DIR, unpack
from ..errors import BundleError, CacheError
from .cache import Entry, FileHashes, canonical, manifest_sha256, place, redact

ENTRY_SCHEMA = 1
_CHUNK = 1 << 20


class _Damaged(Exception):
    pass


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_archive(bundle: Path, dest: Path) -> None:
    """An uncompressed, reproducible tar of the bundle's listed files (mtime 0, no owners)."""
    manifest = manifest_mod.load(bundle)
    names = sorted([*manifest["files"], manifest_mod.MANIFEST_NAME])
    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            path = Path(bundle) / name
            info = tarfile.TarInfo(f"{BUNDLE_DIR}/{name}")
            info.size, info.mtime, info.mode, info.uid, info.gid = path.stat().st_size, 0, 0o644, 0, 0
            with open(path, "rb") as fh:
                tar.addfile(info, fh)


class FsspecCache:
    def __init__(self, url: str, state_dir: Path):
        self.location = redact(url)
        try:
            import fsspec
        except ImportError:
            raise CacheError(f"cache {self.location}: a remote cache needs fsspec (pip install 'qwen-edge[remote]')") \
                from None
        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise CacheError(f"cache {self.location}: no filesystem for this URL ({exc}); "
                             f"pip install 'qwen-edge[remote]' (s3fs) or the store's fsspec package") from None
        self.root = root.rstrip("/")
        self.state_dir = Path(state_dir)
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self._local = protocol in ("file", "local")

    # ------------------------------------------------------------------ paths and small objects
    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _error(self, what: str, exc: BaseException) -> CacheError:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return CacheError(f"cache {self.location}: cannot {what} ({text})")

    def _cat(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._error(f"read {path}", exc) from None

    def _put_if_absent(self, path: str, data: bytes) -> bool:
        try:
            if self._local:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
                with open(tmp, "wb") as fh:
                    fh.write(data)
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
                finally:
                    os.unlink(tmp)
                return True
            self.fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except Exception as exc:
            if "precondition" in str(exc).lower():  # a 412 that the client did not map
                return False
            raise self._error(f"write {path}", exc) from None

    def file_hashes(self) -> FileHashes:
        return FileHashes(self.state_dir / "file_hashes.json")

    # ------------------------------------------------------------------ entries
    def _entry(self, key: str) -> dict[str, Any] | None:
        """The entry's manifest, None when there is none; _Damaged when it cannot be trusted."""
        data = self._cat(self._path("entries", f"{key}.json"))
        if data is None:
            return None
        try:
            entry = json.loads(data)
            ok = (isinstance(entry, dict) and entry.get("schema") == ENTRY_SCHEMA and entry.get("key") == key
                  and isinstance(entry.get("archive"), str) and isinstance(entry.get("archive_sha256"), str)
                  and entry["archive"] == f"archives/{key}/{entry['archive_sha256']}.tar"
                  and isinstance(entry.get("archive_bytes"), int)
                  and isinstance(entry.get("bundle_manifest_sha256"), str))
        except ValueError:
            ok = False
        if not ok:
            raise _Damaged(f"entries/{key}.json")
        return entry

    def bundle_manifest_sha256(self, key: str) -> str | None:
        try:
            entry = self._entry(key)
        except _Damaged:
            return None
        return entry["bundle_manifest_sha256"] if entry else None

    def fetch(self, key: str, output: Path) -> bool:
        try:
            entry = self._entry(key)
        except _Damaged:
            self.remove(key)
            return False
        if entry is None:
            return False
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".qwen-edge-fetch-", dir=output.parent) as tmp:
            local = Path(tmp) / "entry.tar"
            try:
                self.fs.get_file(self._path(entry["archive"]), str(local))
            except FileNotFoundError:
                self.remove(key, entry)
                return False
            except Exception as exc:
                raise self._error(f"download {entry['archive']}", exc) from None
            if local.stat().st_size != entry["archive_bytes"] or _sha256_file(local) != entry["archive_sha256"]:
                self.remove(key, entry)
                return False
            try:
                bundle = unpack(local, Path(tmp) / "unpacked")  # checks every file's sha256
            except BundleError:
                self.remove(key, entry)
                return False
            if manifest_sha256(bundle) != entry["bundle_manifest_sha256"]:
                self.remove(key, entry)
                return False
            place(bundle, output)
        return True

    def publish(self, key: str, bundle: Path, inputs: dict[str, Any]) -> bool:
        problems = manifest_mod.check_integrity(bundle)
        if problems:
            raise CacheError(f"{bundle}: not published to the cache {self.location}: {problems[0]}")
        with tempfile.TemporaryDirectory(prefix=".qwen-edge-publish-", dir=Path(bundle).parent) as tmp:
            local = Path(tmp) / "entry.tar"
            write_archive(bundle, local)
            sha, size = _sha256_file(local), local.stat().st_size
            archive = f"archives/{key}/{sha}.tar"
            try:
                stored = self._size(archive)
                if stored != size:  # absent, or another job's upload of these bytes is not complete
                    self._upload(local, archive)
                    stored = self._size(archive)
            except Exception as exc:
                raise self._error(f"upload {archive}", exc) from None
            if stored != size:
                raise CacheError(f"cache {self.location}: {archive} holds {stored} bytes after upload, not {size}")
        entry = {"schema": ENTRY_SCHEMA, "key": key, "archive": archive, "archive_sha256": sha, "archive_bytes": size,
                 "bundle_manifest_sha256": manifest_sha256(bundle), "created": time.time(), "inputs": inputs}
        data = (json.dumps(entry, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
        if self._put_if_absent(self._path("entries", f"{key}.json"), data):
            return True
        try:  # lost the race: keep the winner's archive, drop ours if it differs
            winner = self._entry(key)
        except _Damaged:
            winner = None
        if winner is not None and winner["archive"] != archive:
            self._rm(archive)
        return False

    def _size(self, path: str) -> int | None:
        try:
            return self.fs.info(self._path(path)).get("size")
        except FileNotFoundError:
            return None

    def _upload(self, local: Path, path: str) -> None:
        """An object store shows an object only once it is whole; a local directory gets a rename."""
        if not self._local:
            self.fs.put_file(str(local), self._path(path))
            return
        os.makedirs(os.path.dirname(self._path(path)), exist_ok=True)
        tmp = f"{self._path(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
        try:
            self.fs.put_file(str(local), tmp)
            os.replace(tmp, self._path(path))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _rm(self, path: str) -> None:
        try:
            self.fs.rm_file(self._path(path))
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise self._error(f"remove {path}", exc) from None

    def remove(self, key: str, entry: dict[str, Any] | None = None) -> None:
        """The manifest first (the entry is gone at once), then the archive it names."""
        if entry is None:
            try:
                entry = self._entry(key)
            except _Damaged:
                entry = None
        self._rm(f"entries/{key}.json")
        if entry is not None:
            self._rm(entry["archive"])

    def entries(self) -> list[Entry]:
        try:
            listed = self.fs.ls(self._path("entries"), detail=False) if self.fs.exists(self._path("entries")) else []
        except Exception as exc:
            raise self._error("list entries", exc) from None
        found = []
        for path in sorted(listed):
            name = path.rsplit("/", 1)[-1]
            if not name.endswith(".json"):
                continue
            key = name[:-len(".json")]
            try:
                entry = self._entry(key)
            except _Damaged:
                found.append(Entry(key, 0, 0.0))  # oldest: pruned first
                continue
            if entry is not None:
                found.append(Entry(key, entry["archive_bytes"], float(entry.get("created") or 0.0)))
        return found

    # ------------------------------------------------------------------ gate results
    def gate_result(self, key: str) -> dict[str, Any] | None:
        data = self._cat(self._path("gates", f"{key}.json"))
        try:
            record = json.loads(data) if data is not None else None
            result = record["result"]
            if hashlib.sha256(canonical(result).encode()).hexdigest() != record["sha256"]:
                return None
            return result
        except (ValueError, TypeError, KeyError):
            return None

    def store_gate_result(self, key: str, bundle_key: str, result: dict[str, Any]) -> None:
        record = {"bundle": bundle_key, "result": result,
                  "sha256": hashlib.sha256(canonical(result).encode()).hexdigest()}
        data = json.dumps(record, sort_keys=True, default=str).encode("utf-8")
        try:
            if self._local:
                self.fs.makedirs(self._path("gates"), exist_ok=True)
            self.fs.pipe_file(self._path("gates", f"{key}.json"), data)
        except Exception as exc:
            raise self._error(f"write gates/{key}.json", exc) from None

    def prune_gates(self, keep: set[str]) -> int:
        try:
            listed = self.fs.ls(self._path("gates"), detail=False) if self.fs.exists(self._path("gates")) else []
        except Exception as exc:
            raise self._error("list gate results", exc) from None
        removed = 0
        for path in listed:
            name = path.rsplit("/", 1)[-1]
            data = self._cat(self._path("gates", name))
            try:
                bundle = json.loads(data).get("bundle") if data is not None else None
            except (ValueError, AttributeError):
                bundle = None
            if bundle not in keep:
                self._rm(f"gates/{name}")
                removed += 1
        return removed


