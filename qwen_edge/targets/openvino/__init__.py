"""The OpenVINO backend: Olive's OpenVINO passes (conversion to IR, NNCF weight compression, the NPU's
static-shape settings) and the runner that executes an IR bundle on CPU for verification.

May import: qwen_edge.verify, qwen_edge.bundle, the root modules and qwen_edge.targets.passes.
openvino and olive-ai are imported only when a pass or the runner needs them.
"""
