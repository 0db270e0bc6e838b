"""The Qualcomm QNN (HTP) NPU target: static standard-op graphs, QDQ w8a16/w4a16, HTP-checked builds.

Entry points: `build_qnn` (registered as the "qnn-static" builder), `QnnOptions`, and
`load_qnn_bundle` for running or verifying a built bundle on the HTP backend.
"""

from .build import build_qnn
from .options import QnnOptions
from .bundle_runner import QnnBundle, load_qnn_bundle

__all__ = ["build_qnn", "QnnOptions", "QnnBundle", "load_qnn_bundle"]
