"""The files of a bundle: the tokenizer files copied from the checkpoint, and the manifest's file
table (sha256 and size of every file), optionally with digests hashed ahead on another thread."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from . import manifest as manifest_mod

# tokenizer.json alone defines the tokenizer for both our runtime and onnxruntime-genai, so the
# slow-tokenizer files (vocab.json, merges.txt) are not copied.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def copy_tokenizer_files(checkpoint, stage: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        path = checkpoint.tokenizer_files.get(name)
        if path is not None:
            shutil.copyfile(path, stage / name)
            copied.append(name)
    gen = Path(checkpoint.path) / "generation_config.json"
    if gen.is_file():
        shutil.copyfile(gen, stage / "generation_config.json")
        copied.append("generation_config.json")
    return copied


class AheadDigests:
    """sha256 of bundle files hashed ahead on a background thread (for instance while the smoke
    test's single-threaded load leaves a core idle), for file_table to reuse. A digest is used
    only while the file keeps the inode, size and modification time it had when hashing started."""

    def __init__(self, pool):
        self._pool = pool
        self._entries: dict[Path, tuple[tuple[int, int, int], Any]] = {}

    @staticmethod
    def _key(path: Path) -> tuple[int, int, int]:
        st = path.stat()
        return st.st_ino, st.st_size, st.st_mtime_ns

    def start(self, path: Path) -> None:
        path = Path(path)
        self._entries[path] = (self._key(path), self._pool.submit(manifest_mod.sha256_file, path))

    def get(self, path: Path) -> str | None:
        entry = self._entries.get(Path(path))
        if entry is None or entry[0] != self._key(path):
            return None
        return entry[1].result()


def file_table(stage: Path, ahead: AheadDigests | None = None) -> dict[str, dict[str, Any]]:
    table = {}
    for path in sorted(stage.rglob("*")):
        if path.is_file() and path.name != manifest_mod.MANIFEST_NAME:
            digest = ahead.get(path) if ahead is not None else None
            table[path.relative_to(stage).as_posix()] = {
                "sha256": digest or manifest_mod.sha256_file(path),
                "bytes": path.stat().st_size,
            }
    return table


def write_manifest(stage: Path, manifest: dict[str, Any], ahead: AheadDigests | None = None) -> dict[str, Any]:
    manifest = dict(manifest)
    manifest["files"] = file_table(stage, ahead)
    manifest = manifest_mod.seal(manifest)
    (stage / manifest_mod.MANIFEST_NAME).write_text(manifest_mod.dumps(manifest), encoding="utf-8")
    return manifest
