"""A small, deterministic ONNX graph builder on top of onnx.helper.

Node and value names are hierarchical (`/model/layers.3/attn/qkv_proj/MatMul`) and derived
only from the build's inputs, and constants are de-duplicated by content, so two builds of the
same checkpoint with the same options produce byte-identical files.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import GraphError
from .writer import ExternalDataWriter

OPSET = 21
MS_DOMAIN = "com.microsoft"
IR_VERSION = 10

NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.uint8): TensorProto.UINT8,
}


class GraphBuilder:
    def __init__(self, writer: ExternalDataWriter, name: str = "qwen_edge"):
        self.writer = writer
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._node_names: set[str] = set()
        self._initializer_names: set[str] = set()
        self._constants: dict[bytes, str] = {}
        self.op_counts: dict[str, int] = {}

    # Values -----------------------------------------------------------------------------
    def add_input(self, name: str, elem_type: int, shape: Sequence[int | str]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def add_output(self, name: str, elem_type: int, shape: Sequence[int | str]) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    def weight(self, name: str, array: np.ndarray) -> str:
        """A named initializer (a weight), streamed to external data."""
        if name in self._initializer_names:
            raise GraphError(f"initializer '{name}' defined twice")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise GraphError(f"initializer '{name}' contains NaN or Inf")
        self._initializer_names.add(name)
        self.initializers.append(self.writer.tensor(name, array))
        return name

    def weight_stream(self, name: str, dtype, shape: tuple[int, ...], pieces) -> str:
        """A large initializer written piece by piece (see ExternalDataWriter.stream)."""
        if name in self._initializer_names:
            raise GraphError(f"initializer '{name}' defined twice")

        def checked():
            for piece in pieces:
                if piece.dtype.kind == "f" and not np.isfinite(piece).all():
                    raise GraphError(f"initializer '{name}' contains NaN or Inf")
                yield piece

        self._initializer_names.add(name)
        self.initializers.append(self.writer.stream(name, dtype, tuple(shape), checked()))
        return name

    def const(self, array: Any, dtype: Any = None) -> str:
        """A small constant, named by its content so equal constants are shared."""
        arr = np.asarray(array, dtype=dtype)
        key = arr.dtype.str.encode() + str(arr.shape).encode() + arr.tobytes()
        name = self._constants.get(key)
        if name is None:
            digest = hashlib.sha256(key).hexdigest()[:12]
            name = f"/const/{arr.dtype.name}/{digest}"
            self._constants[key] = name
            self._initializer_names.add(name)
            self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    # Nodes ------------------------------------------------------------------------------
    def node(
        self,
        op: str,
        inputs: Sequence[str],
        name: str,
        *,
        outputs: int | Sequence[str] = 1,
        domain: str = "",
        **attrs: Any,
    ) -> list[str]:
        """Add a node named `name` and return its output value names.

        `outputs` is either a count (outputs become `{name}/output_{k}`) or explicit names;
        an empty string marks an optional output that is not produced.
        """
        if name in self._node_names:
            raise GraphError(f"node '{name}' defined twice")
        self._node_names.add(name)
        out_names = [f"{name}/output_{k}" for k in range(outputs)] if isinstance(outputs, int) else list(outputs)
        self.nodes.append(
            helper.make_node(op, list(inputs), out_names, name=name, domain=domain or None, **attrs)
        )
        key = f"{domain + '.' if domain else ''}{op}"
        self.op_counts[key] = self.op_counts.get(key, 0) + 1
        return out_names

    def one(self, op: str, inputs: Sequence[str], name: str, **kwargs: Any) -> str:
        return self.node(op, inputs, name, **kwargs)[0]

    # Model ------------------------------------------------------------------------------
    def model(self, doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
            producer_name="qwen-edge",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        return model
