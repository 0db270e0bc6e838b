"""Digests hashed ahead (during the smoke test) are reused only for files that did not change."""

from __future__ import annotations

import hashlib
import os

from qwen_edge.bundle import manifest
from qwen_edge.bundle.files import AheadDigests, file_table
from qwen_edge.worker_threads import worker_pool


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_unchanged_file_is_not_hashed_again(tmp_path, monkeypatch):
    (tmp_path / "model.onnx.data").write_bytes(b"weights" * 1000)
    (tmp_path / "model.onnx").write_bytes(b"graph")
    with worker_pool(1, "test", background=True) as pool:
        ahead = AheadDigests(pool)
        ahead.start(tmp_path / "model.onnx.data")
        ahead.get(tmp_path / "model.onnx.data")  # wait for it
        hashed = []
        real = manifest.sha256_file
        monkeypatch.setattr(manifest, "sha256_file", lambda p, *a: hashed.append(p.name) or real(p, *a))
        table = file_table(tmp_path, ahead)
    assert hashed == ["model.onnx"]
    assert table["model.onnx.data"]["sha256"] == _sha(b"weights" * 1000)
    assert table["model.onnx"]["sha256"] == _sha(b"graph")


def test_a_file_rewritten_after_its_hashing_started_is_hashed_again(tmp_path):
    data = tmp_path / "model.onnx.data"
    data.write_bytes(b"a" * 4096)
    with worker_pool(1, "test", background=True) as pool:
        ahead = AheadDigests(pool)
        ahead.start(data)
        ahead.get(data)
        before = data.stat().st_mtime_ns
        data.write_bytes(b"b" * 4096)  # same size, same inode
        os.utime(data, ns=(before + 1_000_000, before + 1_000_000))
        assert ahead.get(data) is None
        assert file_table(tmp_path, ahead)["model.onnx.data"]["sha256"] == _sha(b"b" * 4096)

        ahead.start(data)
        ahead.get(data)
        replacement = tmp_path / "new"
        replacement.write_bytes(b"c" * 4096)
        os.utime(replacement, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns))
        os.replace(replacement, data)  # same size and time, another inode
        assert ahead.get(data) is None
        assert file_table(tmp_path, ahead)["model.onnx.data"]["sha256"] == _sha(b"c" * 4096)
