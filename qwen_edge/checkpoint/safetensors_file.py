"""One safetensors shard, parsed by hand and validated on open; tensors are read lazily.

The file is untrusted input. `SafetensorsFile.open` reads only the 8-byte length prefix and
the JSON header, and checks every entry (dtype, shape, byte range, overlaps) before anything
is allocated from a shape. Tensor bytes are read on demand through a read-only memory map and
copied out, so reading one tensor never touches another's bytes. Every failure is a
`CheckpointError` with a one-line message naming the file and, where there is one, the tensor.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError
from ..worker_threads import run_split

# safetensors dtype -> (bytes per element, little-endian numpy dtype of the stored bits)
DTYPES: dict[str, tuple[int, str]] = {
    "F64": (8, "<f8"), "F32": (4, "<f4"), "F16": (2, "<f2"), "BF16": (2, "<u2"),
    "I64": (8, "<i8"), "I32": (4, "<i4"), "I16": (2, "<i2"), "I8": (1, "i1"),
    "U64": (8, "<u8"), "U32": (4, "<u4"), "U16": (2, "<u2"), "U8": (1, "u1"), "BOOL": (1, "?"),
    "F8_E4M3": (1, "u1"), "F8_E5M2": (1, "u1"),
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
UNREADABLE_DTYPES = frozenset({"F8_E4M3", "F8_E5M2"})  # recognised, but there is no exact numpy equivalent
DEFAULT_MAX_HEADER_BYTES = 100_000_000
MAX_RANK = 32  # numpy 1.x's limit; no real checkpoint comes close
_PARALLEL_READ_BYTES = 32 << 20


@dataclass(frozen=True)
class TensorInfo:
    """One header entry. `start`/`end` are absolute byte offsets in the file (end exclusive)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def loads_strict(text: str) -> Any:
    """`json.loads` that rejects duplicate object keys (raises `_DuplicateKey`, ValueError, RecursionError)."""
    return json.loads(text, object_pairs_hook=_no_duplicates)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _clean(text: str) -> str:
    """A file name or path fit for a one-line message (control characters escaped)."""
    return text if text.isprintable() else repr(text)[1:-1]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[:limit] + "..."


class SafetensorsFile:
    """A validated safetensors file. Use `SafetensorsFile.open(path)`; close it (or use `with`)."""

    path: Path
    metadata: dict[str, str]

    def __init__(self, path: Path, size: int, data_start: int, infos: dict[str, TensorInfo],
                 metadata: dict[str, str]):
        self.path = path
        self.metadata = metadata
        self._size = size
        self._data_start = data_start
        self._infos = infos
        self._names = sorted(infos)
        self._mm: np.ndarray | None = None
        self._mmap: mmap.mmap | None = None
        self._map_lock = threading.Lock()  # the builder reads ahead on a second thread
        self._closed = False

    # ----------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | os.PathLike, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> "SafetensorsFile":
        path = Path(path)
        fname = _clean(path.name)
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                size = st.st_size
                prefix = fh.read(8)
                if len(prefix) < 8:
                    raise CheckpointError(
                        f"{fname}: file is {size} bytes, too short for a safetensors header (needs at least 8)")
                (hlen,) = struct.unpack("<Q", prefix)
                if hlen == 0:
                    raise CheckpointError(f"{fname}: safetensors header length is 0")
                if hlen > max_header_bytes:
                    raise CheckpointError(
                        f"{fname}: safetensors header length {hlen} exceeds the limit of {max_header_bytes} bytes")
                if 8 + hlen > size:
                    raise CheckpointError(
                        f"{fname}: safetensors header length {hlen} runs past the end of the file (size {size})")
                raw = fh.read(hlen)
        except FileNotFoundError:
            raise CheckpointError(f"{fname}: file not found") from None
        except IsADirectoryError:
            raise CheckpointError(f"{fname}: is a directory, not a safetensors file") from None
        except OSError as exc:
            raise CheckpointError(f"{fname}: cannot read ({exc.strerror or type(exc).__name__})") from None
        if len(raw) != hlen:
            raise CheckpointError(f"{fname}: file shrank while its header was being read")
        return cls._from_header(path, raw, size)

    @classmethod
    def _from_header(cls, path: Path, raw: bytes, size: int) -> "SafetensorsFile":
        fname = _clean(path.name)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{fname}: safetensors header is not valid UTF-8 (byte {exc.start})") from None
        try:
            header = loads_strict(text)
        except _DuplicateKey as exc:
            raise CheckpointError(f"{fname}: safetensors header has duplicate key {_short(exc.args[0])}") from None
        except RecursionError:
            raise CheckpointError(f"{fname}: safetensors header JSON is nested too deeply") from None
        except ValueError as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc).splitlines()[0]
            where = f" at byte {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
            raise CheckpointError(f"{fname}: safetensors header is not valid JSON ({msg}{where})") from None
        if not isinstance(header, dict):
            raise CheckpointError(
                f"{fname}: safetensors header must be a JSON object, got {type(header).__name__}")

        metadata = header.pop("__metadata__", None)
        if metadata is None:
            metadata = {}
        elif not isinstance(metadata, dict):
            raise CheckpointError(f"{fname}: '__metadata__' must be an object of strings")
        else:
            for k, v in metadata.items():
                if not isinstance(v, str):
                    raise CheckpointError(
                        f"{fname}: '__metadata__' value for key {_short(k)} must be a string, got {type(v).__name__}")

        data_start = 8 + len(raw)
        data_size = size - data_start
        infos: dict[str, TensorInfo] = {}
        for name, entry in header.items():
            infos[name] = cls._check_entry(fname, name, entry, data_start, data_size, size)

        ranges = sorted((i.start, i.end, i.name) for i in infos.values() if i.end > i.start)
        for (a0, a1, an), (b0, b1, bn) in zip(ranges, ranges[1:]):
            if b0 < a1:
                raise CheckpointError(
                    f"{fname}: tensor {_short(bn)} byte range [{b0 - data_start}, {b1 - data_start}) overlaps "
                    f"tensor {_short(an)} byte range [{a0 - data_start}, {a1 - data_start})")
        return cls(path, size, data_start, infos, dict(metadata))

    @staticmethod
    def _check_entry(fname: str, name: str, entry: Any, data_start: int, data_size: int, size: int) -> TensorInfo:
        t = f"{fname}: tensor {_short(name)}"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{t}: header entry must be an object, got {type(entry).__name__}")
        for key in ("dtype", "shape", "data_offsets"):
            if key not in entry:
                raise CheckpointError(f"{t}: header entry has no '{key}'")
        dtype = entry["dtype"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise CheckpointError(f"{t}: unknown dtype {_short(dtype)} (known: {', '.join(DTYPES)})")
        shape = entry["shape"]
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise CheckpointError(f"{t}: shape must be a list of non-negative integers, got {_short(shape)}")
        if len(shape) > MAX_RANK:
            raise CheckpointError(f"{t}: shape has {len(shape)} dimensions, more than {MAX_RANK}")
        offsets = entry["data_offsets"]
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise CheckpointError(f"{t}: data_offsets must be a list of two integers, got {_short(offsets)}")
        begin, end = offsets
        if begin < 0 or end < begin:
            raise CheckpointError(f"{t}: data_offsets [{begin}, {end}] are not an ordered non-negative range")
        if end > data_size:
            raise CheckpointError(
                f"{t}: byte range [{begin}, {end}) lies past the end of the data area "
                f"({data_size} bytes; file size {size})")
        itemsize = DTYPES[dtype][0]
        # Product with an early exit: an absurd shape must cost neither time nor memory.
        needed = 0 if 0 in shape else itemsize
        for d in shape:
            needed *= d
            if needed > data_size:
                break
        if needed != end - begin:
            need = f"more than {data_size}" if needed > data_size else str(needed)
            raise CheckpointError(
                f"{t}: {dtype} shape {_short(shape)} needs {need} bytes but data_offsets "
                f"[{begin}, {end}] span {end - begin}")
        return TensorInfo(name, dtype, tuple(shape), data_start + begin, data_start + end)

    # ----------------------------------------------------------------------------- queries
    def names(self) -> list[str]:
        return list(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise CheckpointError(f"{_clean(self.path.name)}: no tensor named {_short(name)}") from None

    def infos(self) -> list[TensorInfo]:
        return [self._infos[n] for n in self._names]

    # ----------------------------------------------------------------------------- reading
    def _map(self) -> np.ndarray:
        if self._closed:
            raise CheckpointError(f"{_clean(self.path.name)}: file is closed")
        try:
            now = os.stat(self.path).st_size
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise CheckpointError(f"{_clean(self.path.name)}: cannot read ({reason})") from None
        if now != self._size:
            raise CheckpointError(f"{_clean(self.path.name)}: file changed size on disk since it was opened "
                                  f"({self._size} -> {now} bytes)")
        with self._map_lock:
            if self._mm is None:
                try:
                    with open(self.path, "rb") as f:
                        self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                    self._mm = np.frombuffer(self._mmap, dtype=np.uint8)
                except (OSError, ValueError) as exc:
                    raise CheckpointError(f"{_clean(self.path.name)}: cannot memory-map ({exc})") from None
            return self._mm

    def read(self, name: str, *, dtype: Any = np.float32) -> np.ndarray:
        """Copy one tensor out of the file.

        Float tensors (F64/F32/F16/BF16) are converted to `dtype`, which must be a float type;
        BF16 widens to float32 by a 16-bit shift first. Integer and BOOL tensors are converted to
        `dtype` as numpy would. `dtype=None` keeps the stored type (BF16 comes back as float32).
        A float tensor holding NaN or Inf raises CheckpointError naming it.
        """
        return self._read_info(self.info(name), dtype)

    def read_index(self, name: str, index: int, *, dtype: Any = np.float32) -> np.ndarray:
        """Copy `tensor[index]` (one slice along the first axis) out of the file, converted as `read`
        does: a stacked [experts, ...] tensor can be streamed one expert at a time."""
        info = self.info(name)
        if not info.shape or not 0 <= index < info.shape[0]:
            raise CheckpointError(f"{_clean(self.path.name)}: tensor {_short(name)} has no index {index} "
                                  f"along its first axis (shape {list(info.shape)})")
        step = info.nbytes // info.shape[0]
        start = info.start + index * step
        sub = TensorInfo(f"{name}[{index}]", info.dtype, info.shape[1:], start, start + step)
        return self._read_info(sub, dtype)

    def _read_info(self, info: TensorInfo, dtype: Any) -> np.ndarray:
        t = f"{_clean(self.path.name)}: tensor {_short(info.name)}"
        if info.dtype in UNREADABLE_DTYPES:
            raise CheckpointError(f"{t}: dtype {info.dtype} (float8) cannot be read; dequantize the checkpoint first")
        stored = np.dtype(DTYPES[info.dtype][1])
        if dtype is None:
            target = np.dtype(np.float32) if info.dtype == "BF16" else stored.newbyteorder("=")
        else:
            target = np.dtype(dtype)
            if info.dtype in FLOAT_DTYPES and target.kind != "f":
                raise ValueError(f"{t}: a {info.dtype} tensor can only be read as a float dtype, not {target}")
        if info.nbytes == 0:
            return np.zeros(info.shape, dtype=target)
        raw = self._map()[info.start:info.end].view(stored).reshape(info.shape)
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # narrowing overflow is reported below
                if info.dtype == "BF16":
                    out = _convert(raw, np.dtype(np.uint32), bf16_bits=True)
                    out = out.view(np.float32)
                    if target != np.float32:
                        out = out.astype(target)
                else:
                    out = _convert(raw, target)  # always a copy out of the map
        except MemoryError:
            raise CheckpointError(f"{t}: {info.nbytes} bytes do not fit in memory") from None
        finally:
            self._release(info.start, info.end)
        if info.dtype in FLOAT_DTYPES and out.size and not _all_finite(out):
            finite = np.isfinite(out)
            if not finite.all():
                bad = int(finite.size - np.count_nonzero(finite))
                if info.dtype == "BF16":
                    source_bad = bool(((raw & 0x7F80) == 0x7F80).any())  # exponent all ones: Inf or NaN
                else:
                    source_bad = not bool(np.isfinite(raw).all())
                if source_bad:
                    raise CheckpointError(f"{t}: contains {bad} NaN or Inf value(s)")
                raise CheckpointError(f"{t}: {bad} value(s) overflow when converted from {info.dtype} to {target}")
        return out

    def _release(self, start: int, end: int) -> None:
        """Drop the mapped pages of a tensor once it is copied out, so that streaming a large
        checkpoint does not leave the whole file resident (and counted) in this process."""
        if self._mmap is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        lo = start - start % mmap.PAGESIZE
        hi = min(end, self._size)
        if hi > lo:
            try:
                self._mmap.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError):
                pass  # advice only: reading stays correct without it

    # ----------------------------------------------------------------------------- lifetime
    def close(self) -> None:
        self._mm = None  # read() never hands out views of the map
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # an exported view is still alive somewhere; the GC unmaps it later
                pass
            self._mmap = None
        self._closed = True

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SafetensorsFile({str(self.path)!r}, tensors={len(self._infos)})"


def _convert(raw: np.ndarray, target: np.dtype, bf16_bits: bool = False) -> np.ndarray:
    """raw as `target`; with `bf16_bits`, raw's 16-bit patterns shifted into the high half of
    uint32s (a float32's bits). A large tensor converts on every core: its page faults on the map
    are most of a serial stretch at the start of a build (Qwen2.5-0.5B's embedding table, 272 MB
    of bfloat16, read in 0.64-0.77 s on one core of the 2-core dev machine, 0.36-0.50 s on two)."""
    out = np.empty(raw.shape, target)
    src, dst = raw.reshape(-1), out.reshape(-1)

    def work(a: int, b: int) -> None:
        np.copyto(dst[a:b], src[a:b], casting="unsafe")
        if bf16_bits:
            dst[a:b] <<= 16

    run_split(src.size, work, None if raw.nbytes >= _PARALLEL_READ_BYTES else 1, "qwen-edge-read")
    return out


def _all_finite(values: np.ndarray) -> bool:
    """True when no element is NaN or Inf, without a full-size boolean temporary: the extremes are
    NaN or infinite exactly when some element is."""
    return bool(np.isfinite(values.max()) and np.isfinite(values.min()))
