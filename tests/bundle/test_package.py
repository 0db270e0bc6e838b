"""`qwen-edge package` / `unpack`: reproducible archives and an extraction that trusts nothing."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from qwen_edge.bundle import manifest as manifest_mod
from qwen_edge.bundle.archive import package, package_bundle, unpack
from qwen_edge.cli import main
from qwen_edge.errors import BundleError


@pytest.fixture
def bundle(bundles, tmp_path) -> Path:
    copy = tmp_path / "src" / "tiny-int4"
    shutil.copytree(bundles("qwen2", "int4"), copy)
    return copy


def test_same_bundle_same_bytes_whatever_the_file_metadata(bundle, tmp_path):
    a = package_bundle(bundle, tmp_path / "a")
    other = tmp_path / "elsewhere" / "tiny-int4"
    shutil.copytree(bundle, other)
    for path in other.iterdir():
        os.utime(path, (1_000_000, 1_234_567_890))
        path.chmod(0o600)
    b = package_bundle(other, tmp_path / "b")
    assert a.name == b.name == "tiny-int4-cpu.tar.gz"
    assert manifest_mod.sha256_file(a) == manifest_mod.sha256_file(b)

    with tarfile.open(a) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "README.md" and names[1] == "bundle"
    assert names[2:] == sorted(names[2:]) and "bundle/manifest.json" in names
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert {m.mode for m in members if m.isfile()} == {0o644}
    assert a.read_bytes()[4:8] == b"\0\0\0\0"  # gzip header mtime


def test_readme_names_runtime_package_version_and_provider(bundle, tmp_path):
    archive = package_bundle(bundle, tmp_path)
    with tarfile.open(archive) as tar:
        readme = tar.extractfile("README.md").read().decode()
    m = manifest_mod.load(bundle)
    assert f"{m['target']['onnxruntime_package']}>={m['target']['min_onnxruntime_version']}" in readme
    assert m["target"]["provider"] in readme
    assert json.dumps(m["runtime"], sort_keys=True) in readme


def test_unpack_round_trip_loads_and_runs(bundle, tmp_path, capsys):
    code = main(["package", str(bundle), "-o", str(tmp_path / "dist"), "--json"])
    archives = json.loads(capsys.readouterr().out)["archives"]
    assert code == 0 and len(archives) == 1
    code = main(["unpack", archives[0], "-o", str(tmp_path / "app"), "--json"])
    unpacked = Path(json.loads(capsys.readouterr().out)["bundle"])
    assert code == 0 and unpacked == tmp_path / "app" / "bundle"
    assert manifest_mod.check_integrity(unpacked) == []
    from qwen_edge.runtime import load

    assert len(load(unpacked).generate("def f(x):", max_new_tokens=3, stop_token_ids=()).token_ids) == 3


def test_directory_of_bundles_gives_one_archive_per_target(bundle, tmp_path):
    archives = package(bundle.parent, tmp_path / "dist")
    assert [a.name for a in archives] == ["tiny-int4-cpu.tar.gz"]
    with pytest.raises(BundleError, match="holds no bundles"):
        package(tmp_path / "dist", tmp_path / "x")


def test_refuses_to_package_a_damaged_bundle(bundle, tmp_path):
    (bundle / "tokenizer.json").write_text("{}")
    with pytest.raises(BundleError, match="tokenizer.json"):
        package_bundle(bundle, tmp_path / "dist")
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


# ------------------------------------------------------------------------------------------ hostile archives
def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


HOSTILE = [
    ("absolute-path", [_file("/tmp/evil")], ["'/tmp/evil'", "absolute"]),
    ("dotdot", [_file("bundle/../../evil")], ["'bundle/../../evil'", "'..'"]),
    ("leading-dotdot", [_file("../evil")], ["'../evil'", "'..'"]),
    ("symlink", [_special("bundle/model.onnx", tarfile.SYMTYPE, "/etc/passwd")], ["'bundle/model.onnx'", "link"]),
    ("hardlink", [_file("a"), _special("bundle/b", tarfile.LNKTYPE, "a")], ["'bundle/b'", "link"]),
    ("char-device", [_special("bundle/null", tarfile.CHRTYPE)], ["'bundle/null'", "device"]),
    ("block-device", [_special("bundle/sda", tarfile.BLKTYPE)], ["'bundle/sda'", "device"]),
    ("fifo", [_special("bundle/pipe", tarfile.FIFOTYPE)], ["'bundle/pipe'", "FIFO"]),
    ("duplicate", [_file("bundle/a"), _file("bundle/a", b"y")], ["'bundle/a'", "twice"]),
    ("backslash", [_file("bundle\\..\\evil")], ["invalid name"]),
    ("no-manifest", [_file("bundle/model.onnx")], ["no bundle/manifest.json"]),
]


@pytest.mark.parametrize("members,culprits", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_archives_are_refused_and_leave_nothing(tmp_path, members, culprits, capsys):
    archive = _tar(tmp_path / "evil.tar.gz", members)
    dest = tmp_path / "out" / "app"
    code = main(["unpack", str(archive), "-o", str(dest)])
    err = capsys.readouterr().err
    assert code == 5 and err.count("\n") == 1 and "evil.tar.gz" in err, err
    for culprit in culprits:
        assert culprit in err, f"{culprit!r} not in {err!r}"
    assert not dest.exists() and list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()


def test_size_limit_and_tampered_content(bundle, tmp_path):
    archive = package_bundle(bundle, tmp_path / "dist")
    with pytest.raises(BundleError, match="limit"):
        unpack(archive, tmp_path / "small", max_bytes=1000)
    assert not (tmp_path / "small").exists()

    # Same manifest, one byte of a weight file changed inside the archive: caught before landing.
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(tampered, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name == "bundle/model.onnx.data":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    previous = tmp_path / "app"
    unpack(archive, previous)
    before = manifest_mod.sha256_file(previous / "bundle" / "model.onnx.data")
    with pytest.raises(BundleError, match="model.onnx.data"):
        unpack(tampered, previous)
    assert manifest_mod.sha256_file(previous / "bundle" / "model.onnx.data") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "dist", "src", "tampered.tar.gz"]


def test_garbage_archive_is_one_line(tmp_path, capsys):
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    code = main(["unpack", str(tmp_path / "junk.tar.gz"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 5 and "junk.tar.gz" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
