"""Reproducible bundle archives (`qwen-edge package`) and their safe extraction (`qwen-edge unpack`).

An archive is a gzip-compressed tar with two entries at its root: `README.md` (what an app needs
to run the bundle: runtime package, version, execution provider and session options, taken from
the manifest) and `bundle/` (the bundle, manifest included). Entries are sorted and carry fixed
metadata (mtime 0, uid/gid 0, no user names, mode 644/755), and the gzip header has no name and
mtime 0, so the same bundle always gives the same bytes.

Extraction trusts nothing in the archive: it accepts only regular files and directories with
relative, normalised names (no absolute paths, no `..`, no links, no devices or FIFOs, no
duplicates), bounds the total size, writes into a staging directory beside the destination and
moves it into place only when the bundle passes its integrity check.

Standard library only, so that the runtime may use it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import posixpath
import tarfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import BundleError
from . import manifest as manifest_mod
from .staging import staged_output

BUNDLE_DIR = "bundle"
README = "README.md"
DEFAULT_MAX_BYTES = 64 << 30
DEFAULT_MAX_MEMBERS = 10_000
_CHUNK = 1 << 20


# ------------------------------------------------------------------------------------------ packing
def find_bundles(path: Path) -> list[Path]:
    """`path` itself when it is a bundle, else its immediate subdirectories that are bundles."""
    path = Path(path)
    if (path / manifest_mod.MANIFEST_NAME).is_file():
        return [path]
    found = sorted(p for p in path.iterdir() if (p / manifest_mod.MANIFEST_NAME).is_file()) if path.is_dir() else []
    if not found:
        raise BundleError(f"{path}: not a bundle (no {manifest_mod.MANIFEST_NAME}) and holds no bundles")
    return found


def archive_name(bundle: Path, manifest: dict[str, Any]) -> str:
    target = str(manifest.get("target", {}).get("name", "unknown"))
    name = bundle.name if bundle.name.endswith(target) else f"{bundle.name}-{target}"
    return f"{name}.tar.gz"


def readme_text(bundle_name: str, manifest: dict[str, Any]) -> str:
    target = manifest.get("target", {})
    runtime = manifest.get("runtime", {})
    source = manifest.get("source", {})
    precision = manifest.get("precision", {})
    package = target.get("onnxruntime_package", "onnxruntime")
    version = target.get("min_onnxruntime_version")
    requirement = f"{package}>={version}" if version else package
    provider = target.get("provider", "CPUExecutionProvider")
    fallback = target.get("fallback", "none")
    tool = manifest.get("tool", {})
    lines = [
        f"# {bundle_name}: {source.get('architecture', '?')} {precision.get('name', '?')} for target "
        f"'{target.get('name', '?')}'",
        "",
        f"Built by qwen-edge {tool.get('version', '?')} from `{source.get('path_name', '?')}`.",
        "",
        "## Runtime",
        "",
        f"- onnxruntime package: `{requirement}` (plus `numpy`, `tokenizers`, `jinja2` and `qwen-edge`'s runtime)",
        f"- execution provider: `{provider}`; fallback: `{fallback}`",
        f"- session and provider options (applied by the runtime unless the app overrides them): "
        f"`{json.dumps(runtime, sort_keys=True)}`",
        f"- context length: {manifest.get('io', {}).get('context_length', '?')} tokens",
        "",
        "## Use",
        "",
        "```bash",
        f"pip install \"{requirement}\" numpy tokenizers jinja2",
        "qwen-edge unpack THIS_ARCHIVE -o DEST      # safe extraction + integrity check",
        "qwen-edge verify DEST/bundle --integrity",
        "```",
        "",
        "```python",
        "from qwen_edge.runtime import load",
        f"gen = load(\"DEST/bundle\", providers=(\"{provider}\",))",
        "print(gen.generate(\"Hello\", max_new_tokens=32).text)",
        "```",
        "",
        f"`bundle/{manifest_mod.MANIFEST_NAME}` lists the sha256 of every file.",
        "",
    ]
    return "\n".join(lines)


def _info(name: str, size: int, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.mtime = 0
    info.mode = 0o755 if directory else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info


def package_bundle(bundle: Path, out_dir: Path) -> Path:
    """Write one reproducible archive of `bundle` into `out_dir`; the bundle must pass its integrity check."""
    bundle = Path(bundle)
    manifest = manifest_mod.load_intact(bundle, "package")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / archive_name(bundle, manifest)
    tmp = out_dir / f".{target.name}.partial-{os.getpid()}"
    signed = (bundle / manifest_mod.SIGNATURE_NAME).is_file()
    files = sorted([*manifest["files"], manifest_mod.MANIFEST_NAME] + ([manifest_mod.SIGNATURE_NAME] if signed else []))
    dirs = sorted({posixpath.dirname(f) for f in files} - {""})
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                   compresslevel=9) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            readme = readme_text(bundle.name, manifest).encode("utf-8")
            tar.addfile(_info(README, len(readme)), io.BytesIO(readme))
            tar.addfile(_info(BUNDLE_DIR, 0, directory=True))
            entries = [(d, None) for d in dirs] + [(f, bundle / f) for f in files]
            for name, path in sorted(entries, key=lambda e: e[0]):
                if path is None:
                    tar.addfile(_info(f"{BUNDLE_DIR}/{name}", 0, directory=True))
                    continue
                with open(path, "rb") as fh:
                    tar.addfile(_info(f"{BUNDLE_DIR}/{name}", os.fstat(fh.fileno()).st_size), fh)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def package(path: Path, out_dir: Path) -> list[Path]:
    """One archive per bundle found at `path` (a bundle, or a directory of bundles, one per target)."""
    return [package_bundle(b, out_dir) for b in find_bundles(path)]


# ------------------------------------------------------------------------------------------ extraction
def _member_name(archive: str, member: tarfile.TarInfo) -> str:
    name = member.name
    shown = repr(name)
    if not name or "\x00" in name or "\\" in name:
        raise BundleError(f"{archive}: member {shown} has an invalid name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise BundleError(f"{archive}: member {shown} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BundleError(f"{archive}: member {shown} has a '..' component")
    if not parts:
        raise BundleError(f"{archive}: member {shown} has an empty name")
    if member.issym() or member.islnk():
        raise BundleError(f"{archive}: member {shown} is a link (to {member.linkname!r}); links are refused")
    if not (member.isreg() or member.isdir()):
        raise BundleError(f"{archive}: member {shown} is not a regular file or directory (device, FIFO or other)")
    return "/".join(parts)


def _copy_bounded(src: BinaryIO, dest: Path, size: int, archive: str, name: str) -> int:
    written = 0
    with open(dest, "xb") as out:
        while chunk := src.read(min(_CHUNK, size - written + 1)):
            written += len(chunk)
            if written > size:
                raise BundleError(f"{archive}: member '{name}' holds more bytes than its header says")
            out.write(chunk)
    if written != size:
        raise BundleError(f"{archive}: member '{name}' is truncated ({written} of {size} bytes)")
    return written


def unpack(archive: Path, dest: Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
           max_members: int = DEFAULT_MAX_MEMBERS) -> Path:
    """Extract a bundle archive into `dest` (replaced atomically) and return the bundle directory."""
    archive = Path(archive)
    label = archive.name
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{label}: not a readable archive ({exc})") from None
    with tar, staged_output(dest) as stage:
        seen: set[str] = set()
        total = 0
        try:
            for count, member in enumerate(tar, start=1):
                if count > max_members:
                    raise BundleError(f"{label}: more than {max_members} members")
                name = _member_name(label, member)
                if name in seen:
                    raise BundleError(f"{label}: member '{name}' appears twice")
                seen.add(name)
                path = stage.joinpath(*name.split("/"))
                if member.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                total += member.size
                if total > max_bytes:
                    raise BundleError(f"{label}: members add up to more than the {max_bytes}-byte limit "
                                      f"(at '{name}')")
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.parent.is_symlink() or not path.parent.resolve().is_relative_to(stage.resolve()):
                    raise BundleError(f"{label}: member '{name}' would be written outside the destination")
                source = tar.extractfile(member)
                if source is None:
                    raise BundleError(f"{label}: member '{name}' cannot be read")
                _copy_bounded(source, path, member.size, label, name)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise BundleError(f"{label}: corrupt archive ({exc})") from None
        bundle = stage / BUNDLE_DIR
        if not (bundle / manifest_mod.MANIFEST_NAME).is_file():
            raise BundleError(f"{label}: no {BUNDLE_DIR}/{manifest_mod.MANIFEST_NAME} in the archive")
        problems = manifest_mod.check_integrity(bundle)
        if problems:
            raise BundleError(f"{label}: the bundle fails its integrity check: {problems[0]}")
    return Path(dest).absolute() / BUNDLE_DIR
