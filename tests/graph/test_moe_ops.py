"""onnxruntime's com.microsoft MoE / QMoE on the CPU provider, against a numpy reference of Qwen's
routing (the facts graph/moe.py relies on; they are re-checked on every onnxruntime upgrade)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qwen_edge.quant import QuantSpec, quantize_blockwise

E, H, I, K, T = 8, 64, 32, 2, 5


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(T, H)).astype(np.float32),
            "logits": (2 * rng.normal(size=(T, E))).astype(np.float32),
            "gate": (rng.normal(size=(E, I, H)) / 8).astype(np.float32),
            "up": (rng.normal(size=(E, I, H)) / 8).astype(np.float32),
            "down": (rng.normal(size=(E, H, I)) / 6).astype(np.float32)}


def qwen_moe(c, norm_topk_prob, gate, up, down):
    logits = c["logits"].astype(np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    top = np.argsort(-p, -1)[:, :K]
    w = np.take_along_axis(p, top, -1)
    if norm_topk_prob:
        w /= w.sum(-1, keepdims=True)
    out = np.zeros((T, H))
    for t in range(T):
        for j, e in enumerate(top[t]):
            g = gate[e] @ c["x"][t]
            out[t] += w[t, j] * (down[e] @ (g / (1 + np.exp(-g)) * (up[e] @ c["x"][t])))
    return out


def interleave(gate, up):
    out = np.empty((gate.shape[0], 2 * gate.shape[1]) + gate.shape[2:], gate.dtype)
    out[:, 0::2], out[:, 1::2] = gate, up
    return out


def run(op, inputs, inits, feeds, **attrs):
    node = helper.make_node(op, inputs, ["y"], domain="com.microsoft", k=K, activation_type="swiglu",
                            swiglu_fusion=1, activation_alpha=1.0, activation_beta=0.0, **attrs)
    graph = helper.make_graph(
        [node], "moe", [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(v.shape)) for n, v in feeds.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("norm", [False, True])
def test_float_moe_routes_like_qwen_from_logits(case, norm):
    inits = {"fc1": interleave(case["gate"], case["up"]), "fc2": case["down"]}
    y = run("MoE", ["x", "r", "fc1", "", "fc2"], inits, {"x": case["x"], "r": case["logits"]},
            normalize_routing_weights=int(norm))
    assert np.abs(y - qwen_moe(case, norm, case["gate"], case["up"], case["down"])).max() < 1e-5
    assert np.abs(y - qwen_moe(case, not norm, case["gate"], case["up"], case["down"])).max() > 1e-2


def _quantized(weights, bits, symmetric):
    spec = QuantSpec(bits=bits, block_size=32, symmetric=symmetric, method="rtn")
    bqs = [quantize_blockwise(w, spec) for w in weights]
    zps = None if symmetric else np.stack([b.zero_points for b in bqs])
    return (np.stack([b.packed.reshape(b.n, -1) for b in bqs]), np.stack([b.scales for b in bqs]), zps,
            np.stack([b.dequantize() for b in bqs]))


@pytest.mark.parametrize("bits,symmetric,tol", [(4, True, 1e-5), (4, False, 1e-5), (8, False, 5e-2)])
@pytest.mark.parametrize("norm", [False, True])
def test_qmoe_with_router_weights_routes_like_qwen(case, norm, bits, symmetric, tol):
    gp, gs, gz, gd = _quantized(case["gate"], bits, symmetric)
    upk, us, uz, ud = _quantized(case["up"], bits, symmetric)
    dp, ds, dz, dd = _quantized(case["down"], bits, symmetric)
    inits = {"fc1": interleave(gp, upk), "s1": interleave(gs, us), "fc2": dp, "s2": ds}
    if not symmetric:
        inits |= {"z1": interleave(gz, uz), "z2": dz}
    probs = np.exp(case["logits"] - case["logits"].max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    inputs = ["x", "r", "fc1", "s1", "", "fc2", "s2", "", "", "", "",
              "" if symmetric else "z1", "" if symmetric else "z2", "", "w"]
    y = run("QMoE", inputs, inits, {"x": case["x"], "r": case["logits"], "w": probs.astype(np.float32)},
            normalize_routing_weights=int(norm), expert_weight_bits=bits, block_size=32, accuracy_level=0,
            weights_prepacked=0)
    expected = qwen_moe(case, norm, gd, ud, dd)
    # 8-bit experts always quantize activations to int8 on CPU: about 1% relative error.
    assert np.abs(y - expected).max() < tol * np.abs(expected).max() + tol
    assert np.abs(y - qwen_moe(case, not norm, gd, ud, dd)).max() > 0.1


def test_qmoe_without_router_weights_always_renormalises(case):
    """Why the graph feeds router_weights: without them QMoE ignores normalize_routing_weights=0."""
    gp, gs, _, gd = _quantized(case["gate"], 4, True)
    upk, us, _, ud = _quantized(case["up"], 4, True)
    dp, ds, _, dd = _quantized(case["down"], 4, True)
    inits = {"fc1": interleave(gp, upk), "s1": interleave(gs, us), "fc2": dp, "s2": ds}
    y = run("QMoE", ["x", "r", "fc1", "s1", "", "fc2", "s2"], inits, {"x": case["x"], "r": case["logits"]},
            normalize_routing_weights=0, expert_weight_bits=4, block_size=32, accuracy_level=0, weights_prepacked=0)
    assert np.abs(y - qwen_moe(case, True, gd, ud, dd)).max() < 1e-5
