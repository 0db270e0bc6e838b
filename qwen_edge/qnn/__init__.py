"""The Qualcomm QNN (HTP) NPU target: static standard-op graphs, QDQ w8a16/w4a16, HTP-checked builds.

Entry points: `build_qnn` (registered as the "qnn-static" builder), `QnnOptions`, and
`load_qnn_bundle` for running or verifying a built bundle on the HTP backend.
"""

from pathlib import Path

from ..graph.registry import register_bundle_builder
from .build import build_qnn
from .bundle_runner import QnnBundle, load_qnn_bundle
from .options import QnnOptions


@register_bundle_builder("qnn-static", provides=("onnx", "onnx-standard"), static_shapes=True)
def build_qnn_bundle(checkpoint: Path, output: Path, precision: str, max_positions: int | None, progress=None) -> dict:
    """The registry's entry: the target's defaults, with the requested precision and context."""
    options = QnnOptions(precision=precision, **({"context": max_positions} if max_positions else {}))
    return build_qnn(Path(checkpoint), Path(output), options=options, progress=progress)


__all__ = ["build_qnn", "QnnOptions", "QnnBundle", "load_qnn_bundle"]
