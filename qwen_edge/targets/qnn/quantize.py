"""Static QDQ quantization for the HTP: 16-bit activations, 8- or 4-bit per-channel weights.

Uses onnxruntime's QNN-aware configuration (`get_qnn_qdq_config`, which sets the operator
rules the HTP needs, e.g. matching scales on data-movement ops) and `quantize`, with per-tensor
overrides written here: projection weights symmetric per output channel, the output head kept
at 8 bits in w4a16, the rotary tables and the embedding at 16 bits (they are gathered, not
multiplied, so their error reaches every layer unscaled).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from ...errors import QuantizationError

_ALIGN = 64


@dataclass(frozen=True)
class QdqRecipe:
    weight_bits: int
    activation_bits: int = 16
    calibrate_method: str = "MinMax"
    head_bits: int = 8
    embedding_bits: int = 16

    def to_dict(self) -> dict[str, Any]:
        return {"weights": f"int{self.weight_bits} symmetric per-channel (MatMul axis 1)",
                "activations": f"uint{self.activation_bits} asymmetric per-tensor",
                "lm_head": f"int{self.head_bits} symmetric per-channel",
                "embedding": f"uint{self.embedding_bits} per-tensor",
                "rotary_tables": "uint16 per-tensor", "norm_weights_and_biases": "uint16 per-tensor",
                "calibrate_method": self.calibrate_method}


def _qtype(bits: int, signed: bool):
    from onnxruntime.quantization import QuantType

    table = {(4, True): QuantType.QInt4, (8, True): QuantType.QInt8, (16, True): QuantType.QInt16,
             (8, False): QuantType.QUInt8, (16, False): QuantType.QUInt16}
    return table[(bits, signed)]


def overrides_for(model: onnx.ModelProto, recipe: QdqRecipe) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    inits = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            bits = recipe.head_bits if node.input[1] == "/lm_head/weight" else recipe.weight_bits
            out[node.input[1]] = [{"quant_type": _qtype(bits, True), "axis": 1, "symmetric": True}]
        elif node.op_type == "Gather" and node.input[0] in inits:
            bits = recipe.embedding_bits if node.input[0] == "/model/embed_tokens/weight" else 16
            out[node.input[0]] = [{"quant_type": _qtype(bits, bits != 16)}]
    return out


def qdq_quantize(float_model: Path, output: Path, reader, recipe: QdqRecipe) -> dict[str, Any]:
    """Quantize one float static graph; returns the parameters used (for the manifest)."""
    from onnxruntime.quantization import CalibrationMethod, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    header = onnx.load(str(float_model), load_external_data=False)
    overrides = overrides_for(header, recipe)
    try:
        config = get_qnn_qdq_config(
            str(float_model), reader,
            calibrate_method=CalibrationMethod[recipe.calibrate_method],
            activation_type=_qtype(recipe.activation_bits, False),
            weight_type=_qtype(recipe.weight_bits, True),
            per_channel=False, init_overrides=overrides,
        )
        config.use_external_data_format = True
        quantize(str(float_model), str(output), config)
    except Exception as exc:  # the quantization tool raises untyped errors
        raise QuantizationError(f"{Path(float_model).name}: QDQ quantization failed: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    if not Path(output).is_file():
        raise QuantizationError(f"{Path(float_model).name}: QDQ quantization produced no model")
    return {"activation_type": f"uint{recipe.activation_bits}", "weight_type": f"int{recipe.weight_bits}",
            "calibrate_method": recipe.calibrate_method, "per_channel_overrides": len(overrides),
            "calibration_samples": len(reader)}


class SharedDataWriter:
    """Writes the initializers of several models into one external-data file, identical bytes once."""

    def __init__(self, path: Path, inline_max_bytes: int = 256):
        self.path = Path(path)
        self._fh = open(self.path, "wb")
        self._offset = 0
        self._seen: dict[bytes, tuple[int, int]] = {}
        self.inline_max = inline_max_bytes
        self.bytes_referenced = 0

    def externalize(self, model: onnx.ModelProto) -> onnx.ModelProto:
        for tensor in model.graph.initializer:
            if not tensor.HasField("raw_data"):
                continue
            data = tensor.raw_data
            if len(data) <= self.inline_max:
                continue
            self.bytes_referenced += len(data)
            digest = hashlib.sha256(data).digest()
            where = self._seen.get(digest)
            if where is None:
                pad = (-self._offset) % _ALIGN
                self._fh.write(b"\0" * pad)
                self._offset += pad
                where = (self._offset, len(data))
                self._fh.write(data)
                self._offset += len(data)
                self._seen[digest] = where
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            del tensor.external_data[:]
            for key, value in (("location", self.path.name), ("offset", str(where[0])), ("length", str(where[1]))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
        return model

    @property
    def bytes_written(self) -> int:
        return self._offset

    def close(self) -> None:
        self._fh.close()


def repack(models: dict[str, Path], directory: Path, data_name: str) -> dict[str, int]:
    """Load each model (with its external data) and save it into `directory` sharing one data file."""
    from ...graph.writer import save_model

    writer = SharedDataWriter(Path(directory) / data_name)
    try:
        for out_name, src in models.items():
            model = onnx.load(str(src), load_external_data=True)
            for t in model.graph.initializer:  # small tensors may come back as typed fields
                if not t.HasField("raw_data") and t.data_location != onnx.TensorProto.EXTERNAL:
                    arr = onnx.numpy_helper.to_array(t)
                    if arr.nbytes > writer.inline_max and t.data_type not in (onnx.TensorProto.INT4,
                                                                              onnx.TensorProto.UINT4):
                        t.CopyFrom(onnx.numpy_helper.from_array(arr, t.name))
            save_model(writer.externalize(model), Path(directory) / out_name)
    finally:
        writer.close()
    return {"bytes_referenced": writer.bytes_referenced, "bytes_stored": writer.bytes_written}
