"""Streams initializers into one external-data file while the graph is being built.

Each tensor is written once, as soon as it is made, and the ONNX TensorProto keeps only a
reference (offset, length). Identical byte strings are stored once (tied embeddings, repeated
constants), and offsets are aligned so that onnxruntime can memory-map large tensors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import GraphError

_ALIGN_LARGE = 4096
_ALIGN_SMALL = 64
_LARGE = 64 * 1024
# Tensors at or below this size stay inside model.onnx (shape constants and the like).
INLINE_MAX_BYTES = 256


class ExternalDataWriter:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "wb")
        self._offset = 0
        self._by_digest: dict[bytes, tuple[int, int]] = {}
        self.bytes_written = 0

    @property
    def location(self) -> str:
        return self.path.name

    def tensor(self, name: str, array: np.ndarray) -> TensorProto:
        array = np.ascontiguousarray(array)
        if array.dtype == np.float64:
            raise GraphError(f"tensor '{name}': float64 initializers are not allowed")
        if array.nbytes <= INLINE_MAX_BYTES:
            return numpy_helper.from_array(array, name)
        data = array.tobytes()
        digest = hashlib.sha256(data).digest()
        located = self._by_digest.get(digest)
        if located is None:
            align = _ALIGN_LARGE if len(data) >= _LARGE else _ALIGN_SMALL
            pad = (-self._offset) % align
            if pad:
                self._file.write(b"\0" * pad)
                self._offset += pad
            located = (self._offset, len(data))
            self._file.write(data)
            self._offset += len(data)
            self.bytes_written += len(data)
            self._by_digest[digest] = located
        return self._external_proto(name, array.dtype, array.shape, located)

    def stream(self, name: str, dtype, shape: tuple[int, ...], chunks) -> TensorProto:
        """Write one large tensor from an iterable of consecutive pieces (C order), so that only one
        piece is in memory at a time. Streamed tensors are not de-duplicated."""
        dtype = np.dtype(dtype)
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        pad = (-self._offset) % _ALIGN_LARGE
        if pad:
            self._file.write(b"\0" * pad)
            self._offset += pad
        start = self._offset
        for piece in chunks:
            piece = np.ascontiguousarray(piece)
            if piece.dtype != dtype:
                raise GraphError(f"tensor '{name}': streamed piece has dtype {piece.dtype}, expected {dtype}")
            data = piece.tobytes()
            if self._offset - start + len(data) > expected:
                raise GraphError(f"tensor '{name}': streamed pieces exceed shape {list(shape)}")
            self._file.write(data)
            self._offset += len(data)
        length = self._offset - start
        if length != expected:
            raise GraphError(f"tensor '{name}': streamed {length} bytes, shape {list(shape)} needs {expected}")
        self.bytes_written += length
        return self._external_proto(name, dtype, shape, (start, length))

    def _external_proto(self, name: str, dtype, shape, located: tuple[int, int]) -> TensorProto:
        proto = TensorProto()
        proto.name = name
        proto.data_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        proto.dims.extend(shape)
        proto.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(located[0])), ("length", str(located[1]))):
            entry = proto.external_data.add()
            entry.key, entry.value = key, value
        return proto

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Serialize a model whose large initializers are already external."""
    data = model.SerializeToString(deterministic=True)
    if len(data) >= 2**31:
        raise GraphError(f"{path}: graph protobuf exceeds 2 GiB; large tensors must be external")
    Path(path).write_bytes(data)
