"""The Qualcomm QNN (HTP) NPU backend: static standard-op graph pairs (qwen_edge.graph.static_pair),
QDQ w8a16/w4a16 through olive-ai or onnxruntime's quantizer, builds checked on the HTP backend that
onnxruntime-qnn ships (emulated on x86-64 Linux).

    build       the "qnn-static" bundle builder (registered with qwen_edge.targets.builders)
    executor    loading a built bundle on the HTP: verification's executor and `run`'s generator
    options     QnnOptions, the builder's typed, closed options (a build request's builder_options)
    calibration, quantize, olive_quantize, parity, runner, session: the steps they use

May import: qwen_edge.graph, qwen_edge.verify, qwen_edge.runtime, qwen_edge.bundle, qwen_edge.arch,
qwen_edge.checkpoint, the root modules and qwen_edge.targets' registries. onnxruntime-qnn and
olive-ai are imported only when a build or session needs them.
"""

from .executor import QnnBundle, load_qnn_bundle
from .options import QnnOptions

__all__ = ["QnnOptions", "QnnBundle", "load_qnn_bundle"]
