"""Streamed initializers: written piece by piece, checked for size, dtype and finiteness."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qwen_edge.errors import GraphError
from qwen_edge.graph.builder import GraphBuilder
from qwen_edge.graph.writer import ExternalDataWriter


def test_streamed_tensor_reads_back_whole(tmp_path):
    writer = ExternalDataWriter(tmp_path / "w.data")
    g = GraphBuilder(writer)
    small = g.weight("small", np.arange(300, dtype=np.float32))  # leaves the file unaligned
    pieces = [np.full((2, 64), k, np.float32) for k in range(3)]
    name = g.weight_stream("stacked", np.float32, (3, 2, 64), iter(pieces))
    writer.close()
    protos = {p.name: p for p in g.initializers}
    assert protos[name].data_location == onnx.TensorProto.EXTERNAL
    assert int(dict((e.key, e.value) for e in protos[name].external_data)["offset"]) % 4096 == 0
    from onnx.external_data_helper import load_external_data_for_tensor

    for p in protos.values():
        load_external_data_for_tensor(p, str(tmp_path))
    np.testing.assert_array_equal(numpy_helper.to_array(protos[name]), np.stack(pieces))
    np.testing.assert_array_equal(numpy_helper.to_array(protos[small]), np.arange(300, dtype=np.float32))


@pytest.mark.parametrize("pieces,message", [
    ([np.zeros((2, 64), np.float32)], r"^tensor 'stacked': streamed 512 bytes, shape \[3, 2, 64\] needs 1536$"),
    ([np.zeros((2, 64), np.float32)] * 4, r"^tensor 'stacked': streamed pieces exceed shape \[3, 2, 64\]$"),
    ([np.zeros((2, 64), np.float16)] * 3, r"^tensor 'stacked': streamed piece has dtype float16, expected float32$"),
    ([np.zeros((2, 64), np.float32), np.full((2, 64), np.nan, np.float32), np.zeros((2, 64), np.float32)],
     r"^initializer 'stacked' contains NaN or Inf$"),
])
def test_streamed_tensor_errors_name_the_tensor(tmp_path, pieces, message):
    g = GraphBuilder(ExternalDataWriter(tmp_path / "w.data"))
    with pytest.raises(GraphError, match=message):
        g.weight_stream("stacked", np.float32, (3, 2, 64), iter(pieces))
