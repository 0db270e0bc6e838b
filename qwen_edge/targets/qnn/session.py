"""onnxruntime sessions on Qualcomm's HTP backend (onnxruntime-qnn plugin EP) or on CPU.

The QNN execution provider ships as a plugin library: it is registered once per process, then
picked by device. With CPU fallback disabled a node the HTP cannot take fails session creation;
`placement` then names the nodes by asking a second, diagnostic session where they went.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError, GraphError

QNN_EP = "QNNExecutionProvider"
_lock = threading.Lock()
_registered = False


def _register_qnn():
    global _registered
    import onnxruntime as ort

    try:
        import onnxruntime_qnn
    except ImportError as exc:
        raise ConfigError("npu-qnn needs the onnxruntime-qnn package: pip install 'qwen-edge[qnn]'") from exc
    with _lock:
        if not _registered:
            if not any(d.ep_name == QNN_EP for d in ort.get_ep_devices()):
                ort.register_execution_provider_library(QNN_EP, onnxruntime_qnn.get_library_path())
            _registered = True
    devices = [d for d in ort.get_ep_devices() if d.ep_name == QNN_EP]
    if not devices:
        raise ConfigError("onnxruntime-qnn is installed but offers no QNN device")
    return ort, onnxruntime_qnn, devices


def qnn_versions() -> dict[str, str | None]:
    import importlib.metadata

    out = {}
    for name in ("onnxruntime", "onnxruntime-qnn"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _options(*, fallback: bool, record: bool, extra: dict[str, str] | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not fallback:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if record:
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    for key, value in (extra or {}).items():
        so.add_session_config_entry(key, value)
    return so


def htp_session(model: Path, *, fallback: bool = False, record: bool = True, extra: dict[str, str] | None = None,
                provider_options: dict[str, str] | None = None):
    """A session on the HTP backend. Raises GraphError naming the nodes the HTP rejects."""
    ort, qnn, devices = _register_qnn()
    so = _options(fallback=fallback, record=record, extra=extra)
    so.add_provider_for_devices(devices, {"backend_path": qnn.get_qnn_htp_path(), **(provider_options or {})})
    try:
        return ort.InferenceSession(str(model), so)
    except Exception as exc:  # onnxruntime raises untyped errors
        if fallback:
            raise GraphError(f"{Path(model).name}: the QNN HTP backend could not load the graph: "
                             f"{str(exc).splitlines()[0]}") from exc
        rejected = rejected_nodes(model)
        if rejected:
            shown = ", ".join(f"{name} ({op})" for name, op in rejected[:5])
            raise GraphError(f"{Path(model).name}: {len(rejected)} node(s) cannot run on the QNN HTP and CPU "
                             f"fallback is disabled: {shown}") from exc
        raise GraphError(f"{Path(model).name}: the QNN HTP backend could not load the graph: "
                         f"{str(exc).splitlines()[0]}") from exc


def cpu_session(model: Path, threads: int | None = None):
    import onnxruntime as ort

    so = _options(fallback=True, record=False)
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Placement:
    """Which execution provider took which node (onnxruntime's own assignment record)."""

    by_provider: dict[str, list[tuple[str, str]]]

    def off_npu(self) -> list[tuple[str, str]]:
        return [n for ep, nodes in self.by_provider.items() if ep != QNN_EP for n in nodes]

    def to_dict(self) -> dict:
        total = sum(len(v) for v in self.by_provider.values())
        on = len(self.by_provider.get(QNN_EP, []))
        return {
            "nodes": total,
            "on_npu": on,
            "by_provider": {ep: len(nodes) for ep, nodes in sorted(self.by_provider.items())},
            "op_types_on_npu": _counts(op for _, op in self.by_provider.get(QNN_EP, [])),
            "off_npu": [{"node": name, "op": op} for name, op in self.off_npu()],
        }


def _counts(ops) -> dict[str, int]:
    out: dict[str, int] = {}
    for op in ops:
        out[op] = out.get(op, 0) + 1
    return dict(sorted(out.items()))


def placement(session) -> Placement:
    by: dict[str, list[tuple[str, str]]] = {}
    for sub in session.get_provider_graph_assignment_info():
        by.setdefault(sub.ep_name, []).extend((n.name, n.op_type) for n in sub.get_nodes())
    return Placement(by)


def rejected_nodes(model: Path) -> list[tuple[str, str]]:
    """Nodes the HTP does not take, found with a diagnostic session that may fall back to CPU.

    Float Quantize/Dequantize nodes at the graph's edges (the float I/O) are not counted.
    """
    try:
        session = htp_session(model, fallback=True, record=True)
    except GraphError:
        return []
    edges = edge_conversions(model)
    return [(name, op) for name, op in placement(session).off_npu() if name not in edges]


def edge_conversions(model: Path) -> set[str]:
    """Names of the Quantize nodes fed by graph inputs and the Dequantize nodes that make graph outputs."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    inputs = {v.name for v in graph.input}
    outputs = {v.name for v in graph.output}
    return {n.name for n in graph.node
            if (n.op_type == "QuantizeLinear" and n.input[0] in inputs)
            or (n.op_type == "DequantizeLinear" and n.output[0] in outputs)}
