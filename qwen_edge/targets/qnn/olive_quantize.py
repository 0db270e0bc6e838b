"""The QDQ step through olive-ai's OnnxStaticQuantization pass (Python API, no CLI).

Olive's pass, targeted at the QNN execution provider, calls onnxruntime's `get_qnn_qdq_config`
and `quantize` with our per-tensor overrides (its `tensor_quant_overrides`, which it hands on as
QNN `init_overrides`). Calibration feeds reach it through Olive's data registry: a dataset
component registered once under DATASET_NAME serves feeds that this module holds in memory
under a key, with Olive's non-batching dataloader, so no file or hub dataset is involved.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

from ...errors import ConfigError, QuantizationError
from .quantize import QdqRecipe, overrides_for

DATASET_NAME = "qwen_edge_qnn_calibration_feeds"
_FEEDS: dict[str, list[dict]] = {}
_lock = threading.Lock()
_registered = False


def _register_dataset() -> None:
    global _registered
    from olive.data.registry import Registry

    with _lock:
        if _registered:
            return

        @Registry.register_dataset(DATASET_NAME)
        def calibration_feeds(key: str):
            return [(feeds, 0) for feeds in _FEEDS[key]]

        _registered = True


def olive_qdq_quantize(float_model: Path, output_dir: Path, reader, recipe: QdqRecipe) -> tuple[Path, dict[str, Any]]:
    """Run Olive's OnnxStaticQuantization for QNN on one float graph; returns (model path, parameters)."""
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    import onnx

    try:
        from olive.constants import Precision
        from olive.data.config import DataConfig
        from olive.hardware.accelerator import AcceleratorSpec
        from olive.model import ONNXModelHandler
        from olive.passes.olive_pass import create_pass_from_dict
        from olive.passes.onnx.quantization import OnnxStaticQuantization
    except ImportError as exc:
        raise ConfigError("olive-ai is not installed: pip install 'qwen-edge[olive]' or use quantizer 'onnxruntime'") from exc
    _register_dataset()
    key = uuid.uuid4().hex
    _FEEDS[key] = list(reader.feeds)
    overrides = overrides_for(onnx.load(str(float_model), load_external_data=False), recipe)
    params = {
        "precision": {8: Precision.INT8, 4: Precision.INT4}[recipe.weight_bits],
        "activation_type": Precision.UINT16,
        "calibrate_method": recipe.calibrate_method,
        "quant_format": "QDQ",
        "per_channel": False,
        "prepare_qdq_config": True,
        "tensor_quant_overrides": overrides,
    }
    data_config = DataConfig(name=f"calibration_{key[:8]}",
                             load_dataset_config={"type": DATASET_NAME, "params": {"key": key}},
                             dataloader_config={"type": "no_auto_batch_dataloader"})
    try:
        qpass = create_pass_from_dict(OnnxStaticQuantization, {**params, "data_config": data_config},
                                      disable_search=True,
                                      accelerator_spec=AcceleratorSpec("npu", "QNNExecutionProvider"))
        result = qpass.run(ONNXModelHandler(model_path=str(float_model)), str(output_dir))
    except Exception as exc:  # Olive and the quantizer raise untyped errors
        raise QuantizationError(f"{Path(float_model).name}: Olive OnnxStaticQuantization failed: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    finally:
        _FEEDS.pop(key, None)
    produced = Path(result.model_path) if result is not None and result.model_path else None
    if produced is None or not produced.is_file():
        raise QuantizationError(f"{Path(float_model).name}: Olive OnnxStaticQuantization produced no model")
    recorded = {k: (v.value if hasattr(v, "value") else v) for k, v in params.items() if k != "tensor_quant_overrides"}
    recorded["quant_preprocess"] = bool(getattr(qpass.config, "quant_preprocess", False))
    recorded.update({"per_channel_overrides": len(overrides), "calibration_samples": len(reader),
                     "accelerator": "npu / QNNExecutionProvider", "olive_pass": "OnnxStaticQuantization"})
    return produced, recorded
