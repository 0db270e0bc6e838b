"""SafetensorsFile: our own header parser and lazy, memory-mapped tensor reads."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file as save_torch

from qwen_edge import worker_threads
from qwen_edge.checkpoint import DTYPES, SafetensorsFile, TensorInfo, safetensors_file
from qwen_edge.errors import CheckpointError


def raw_safetensors(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.fixture
def torch_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 7, generator=g) * 3
    return {
        "w.f32": base.clone(),
        "w.f16": base.to(torch.float16),
        "w.bf16": base.to(torch.bfloat16),
        "w.f64": base.to(torch.float64),
        "ids.i64": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "mask.bool": torch.tensor([True, False, True]),
        "bytes.u8": torch.arange(4, dtype=torch.uint8),
    }


@pytest.mark.parametrize("parallel", [False, True], ids=["one-thread", "split-across-threads"])
def test_reads_match_torch_conversion(tmp_path, torch_tensors, monkeypatch, parallel):
    if parallel:  # every tensor counts as large: each conversion is split over several threads
        monkeypatch.setattr(safetensors_file, "_PARALLEL_READ_BYTES", 0)
        monkeypatch.setattr(worker_threads, "usable_cpus", lambda limit=8: 3)
    path = tmp_path / "model.safetensors"
    save_torch(torch_tensors, str(path), metadata={"format": "pt"})
    with SafetensorsFile.open(path) as f:
        assert f.names() == sorted(torch_tensors)
        assert f.metadata == {"format": "pt"}
        for name in ("w.f32", "w.f16", "w.bf16", "w.f64"):
            t = torch_tensors[name]
            got = f.read(name)
            assert got.dtype == np.float32 and got.shape == tuple(t.shape)
            np.testing.assert_array_equal(got, t.float().numpy())
            np.testing.assert_array_equal(f.read(name, dtype=np.float16), t.float().half().numpy())
            np.testing.assert_array_equal(f.read(name, dtype=np.float64), t.double().numpy())
        assert f.info("w.bf16").dtype == "BF16" and f.info("w.f16").dtype == "F16"
        ids = f.read("ids.i64", dtype=None)
        assert ids.dtype == np.int64
        np.testing.assert_array_equal(ids, torch_tensors["ids.i64"].numpy())
        np.testing.assert_array_equal(f.read("mask.bool", dtype=None), [True, False, True])
        np.testing.assert_array_equal(f.read("bytes.u8"), np.arange(4, dtype=np.float32))
        assert f.read("w.bf16", dtype=None).dtype == np.float32  # numpy has no bfloat16: widened


def test_bf16_special_bit_patterns(tmp_path):
    # Subnormals, signed zeros and the largest finite bf16 all survive the bit shift exactly.
    bits = np.array([0x0000, 0x8000, 0x0001, 0x807F, 0x7F7F, 0xFF7F, 0x3F80, 0xC2F7], dtype="<u2")
    path = raw_safetensors(tmp_path / "b.safetensors",
                           {"x": {"dtype": "BF16", "shape": [8], "data_offsets": [0, 16]}}, bits.tobytes())
    expected = torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16).float().numpy()
    with SafetensorsFile.open(path) as f:
        got = f.read("x")
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_info_offsets_are_absolute(tmp_path):
    arrays = {"a": np.arange(3, dtype=np.float32), "b": np.ones((2, 2), np.float16)}
    path = tmp_path / "x.safetensors"
    save_numpy(arrays, str(path))
    hlen = struct.unpack("<Q", path.read_bytes()[:8])[0]
    with SafetensorsFile.open(path) as f:
        infos = {n: f.info(n) for n in f.names()}
    assert infos["a"] == TensorInfo("a", "F32", (3,), infos["a"].start, infos["a"].start + 12)
    assert infos["b"].shape == (2, 2) and infos["b"].nbytes == 8 and infos["b"].numel == 4
    data = path.read_bytes()
    for name, arr in arrays.items():
        i = infos[name]
        assert i.start >= 8 + hlen and i.end <= len(data)
        assert data[i.start:i.end] == arr.tobytes()


def test_read_copies_out_of_the_map(tmp_path):
    path = tmp_path / "x.safetensors"
    save_numpy({"a": np.arange(4, dtype=np.float32)}, str(path))
    with SafetensorsFile.open(path) as f:
        a = f.read("a")
        assert type(a) is np.ndarray and a.flags.writeable and not np.shares_memory(a, f._map())
        a[:] = 7
        np.testing.assert_array_equal(f.read("a"), np.arange(4))
    # Closed: the map is gone but arrays already read stay valid.
    assert a.sum() == 28
    with pytest.raises(CheckpointError, match="closed"):
        f.read("a")


def test_lazy_read_ignores_other_tensors_garbage(tmp_path):
    good = np.arange(6, dtype=np.float32)
    header = {"good": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]},
              "junk": {"dtype": "F32", "shape": [4], "data_offsets": [24, 40]}}
    path = raw_safetensors(tmp_path / "x.safetensors", header, good.tobytes() + b"\xff" * 16)
    with SafetensorsFile.open(path) as f:
        np.testing.assert_array_equal(f.read("good"), good)
        with pytest.raises(CheckpointError) as err:
            f.read("junk")
    assert "'junk'" in str(err.value) and "x.safetensors" in str(err.value) and "NaN" in str(err.value)


def test_open_reads_only_the_header(tmp_path, monkeypatch):
    path = tmp_path / "x.safetensors"
    save_numpy({"a": np.zeros(1000, np.float32)}, str(path))

    def boom(*args, **kwargs):
        raise AssertionError("open() must not map tensor data")

    monkeypatch.setattr(np, "memmap", boom)
    with SafetensorsFile.open(path) as f:
        assert f.info("a").shape == (1000,)


def test_scalar_and_empty_tensors(tmp_path):
    header = {"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
              "e": {"dtype": "F32", "shape": [0, 5], "data_offsets": [4, 4]},
              "e2": {"dtype": "BF16", "shape": [3, 0], "data_offsets": [4, 4]}}
    path = raw_safetensors(tmp_path / "x.safetensors", header, np.float32(2.5).tobytes())
    with SafetensorsFile.open(path) as f:
        assert f.read("s").shape == () and float(f.read("s")) == 2.5
        assert f.read("e").shape == (0, 5) and f.read("e2").shape == (3, 0)


def test_empty_file_of_tensors(tmp_path):
    path = raw_safetensors(tmp_path / "x.safetensors", {"__metadata__": {"k": "v"}}, b"")
    with SafetensorsFile.open(path) as f:
        assert f.names() == [] and f.metadata == {"k": "v"}


def test_header_padding_and_unused_gaps_are_allowed(tmp_path):
    # Trailing spaces in the header (the spec's alignment padding) and gaps between tensors are fine.
    raw = json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}).encode() + b"    "
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4 + np.float32(1.5).tobytes() + b"\0" * 8)
    with SafetensorsFile.open(path) as f:
        assert float(f.read("a")[0]) == 1.5


def test_float8_recognised_but_not_readable(tmp_path):
    header = {"q": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]},
              "r": {"dtype": "F8_E5M2", "shape": [2], "data_offsets": [4, 6]}}
    path = raw_safetensors(tmp_path / "x.safetensors", header, bytes(6))
    with SafetensorsFile.open(path) as f:
        assert f.info("q").dtype == "F8_E4M3"
        for name in ("q", "r"):
            with pytest.raises(CheckpointError, match=f"'{name}'.*float8"):
                f.read(name)
    assert {"F8_E4M3", "F8_E5M2", "BF16", "BOOL"} <= set(DTYPES)


@pytest.mark.parametrize("src,value", [("F16", np.float16(np.inf)), ("F32", np.float32(np.nan)),
                                       ("BF16", None)])
def test_non_finite_values_raise_naming_tensor(tmp_path, src, value):
    if src == "BF16":
        data = np.array([0x3F80, 0x7FC0], dtype="<u2").tobytes()  # 1.0, NaN
    else:
        data = np.array([1, value], dtype=value.dtype).tobytes()
    size = len(data)
    path = raw_safetensors(tmp_path / "w.safetensors",
                           {"layer.weight": {"dtype": src, "shape": [2], "data_offsets": [0, size]}}, data)
    with SafetensorsFile.open(path) as f:
        with pytest.raises(CheckpointError) as err:
            f.read("layer.weight")
    msg = str(err.value)
    assert "'layer.weight'" in msg and "w.safetensors" in msg and "NaN or Inf" in msg and "\n" not in msg


def test_overflow_on_narrowing_is_reported_as_such(tmp_path):
    path = tmp_path / "x.safetensors"
    save_numpy({"big": np.array([1e10, 1.0], np.float32)}, str(path))
    with SafetensorsFile.open(path) as f:
        np.testing.assert_array_equal(f.read("big"), [1e10, 1.0])
        with pytest.raises(CheckpointError, match="'big'.*overflow.*float16"):
            f.read("big", dtype=np.float16)


def test_float_tensor_cannot_be_read_as_int(tmp_path):
    path = tmp_path / "x.safetensors"
    save_numpy({"a": np.ones(2, np.float32)}, str(path))
    with SafetensorsFile.open(path) as f, pytest.raises(ValueError, match="float dtype"):
        f.read("a", dtype=np.int32)


def test_unknown_name_and_file_changed_on_disk(tmp_path):
    path = tmp_path / "x.safetensors"
    save_numpy({"a": np.ones(2, np.float32)}, str(path))
    f = SafetensorsFile.open(path)
    with pytest.raises(CheckpointError, match="x.safetensors: no tensor named 'nope'"):
        f.info("nope")
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 4)
    with pytest.raises(CheckpointError, match="x.safetensors: file changed size"):
        f.read("a")
    f.close()


def test_max_header_bytes(tmp_path):
    path = tmp_path / "x.safetensors"
    save_numpy({"a": np.ones(2, np.float32)}, str(path))
    SafetensorsFile.open(path, max_header_bytes=10_000).close()
    with pytest.raises(CheckpointError, match="x.safetensors: .*exceeds the limit of 16 bytes"):
        SafetensorsFile.open(path, max_header_bytes=16)
