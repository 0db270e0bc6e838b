"""The two ways onnxruntime's CPU provider runs a Gated DeltaNet layer's core, on one layer of the
Qwen3.5-0.8B shape: the one-node `GatedDeltaNet` (packed q|k|v, fused gates and L2 norm) against
`LpNormalization` + `LinearAttentionGate` + `LinearAttention`, the form graph/hybrid_decoder.py
writes. Checks that both compute the same output and state, then times decode (1 token) and
prefill (128 tokens).

    python benchmarks/linear_attention_ops.py [--threads 2] [--heads 16] [--head-dim 128]

Writes benchmarks/results/linear_attention_ops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

RESULTS = Path(__file__).resolve().parent / "results"
MS = "com.microsoft"


def session(nodes, inputs, initializers, threads: int) -> ort.InferenceSession:
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("o", "state_out")]
    graph = helper.make_graph(nodes, "core", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def sessions(h: int, d: int, threads: int):
    f = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    i64 = lambda name, values: helper.make_tensor(name, TensorProto.INT64, [len(values)], values)  # noqa: E731
    common = [f("qkv", [1, "T", 3 * h * d]), f("a", [1, "T", h]), f("b", [1, "T", h]), f("dt_bias", [h])]
    gdn = session([helper.make_node("GatedDeltaNet", ["qkv", "", "", "", "a", "b", "state", "A_log", "dt_bias"],
                                    ["o", "state_out"], domain=MS, beta_activation="sigmoid",
                                    gate_activation="softplus", qk_l2_norm=1)],
                  common + [f("state", [1, h, d, d]), f("A_log", [h])], [], threads)
    la = session([
        helper.make_node("Split", ["qkv", "qk_v"], ["qk", "v"], axis=-1),
        helper.make_node("Reshape", ["qk", "heads"], ["qk4"]),
        helper.make_node("LpNormalization", ["qk4"], ["qkn"], axis=-1, p=2),
        helper.make_node("Split", ["qkn", "halves"], ["q4", "k4"], axis=2),
        helper.make_node("Reshape", ["q4", "flat"], ["q"]),
        helper.make_node("Reshape", ["k4", "flat"], ["k"]),
        helper.make_node("LinearAttentionGate", ["a", "dt_bias", "neg_exp_A", "b"], ["decay", "beta"], domain=MS),
        helper.make_node("LinearAttention", ["q", "k", "v", "state", "decay", "beta"], ["o", "state_out"], domain=MS,
                         q_num_heads=h, kv_num_heads=h, update_rule="gated_delta", scale=d ** -0.5)],
        common + [f("state", [1, h, d, d]), f("neg_exp_A", [h])],
        [i64("qk_v", [2 * h * d, h * d]), i64("heads", [0, 0, 2 * h, d]), i64("halves", [h, h]),
         i64("flat", [0, 0, h * d])], threads)
    return gdn, la


def timed(sess, feeds, repeats: int) -> float:
    for _ in range(3):
        sess.run(None, feeds)
    start = time.perf_counter()
    for _ in range(repeats):
        sess.run(None, feeds)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=128)
    args = ap.parse_args()
    h, d = args.heads, args.head_dim
    gdn, la = sessions(h, d, args.threads)
    rng = np.random.default_rng(0)
    rows = {}
    for tokens, repeats in ((1, 300), (128, 10)):
        qkv = rng.standard_normal((1, tokens, 3 * h * d), np.float32)
        a, b = rng.standard_normal((1, tokens, h), np.float32), rng.standard_normal((1, tokens, h), np.float32)
        a_log, dt_bias = rng.uniform(0, 2, h).astype(np.float32), rng.standard_normal(h).astype(np.float32)
        state = (0.1 * rng.standard_normal((1, h, d, d))).astype(np.float32)  # K-major [.., dk, dv]
        gdn_feeds = dict(qkv=qkv, a=a, b=b, state=np.ascontiguousarray(state.transpose(0, 1, 3, 2)), A_log=a_log,
                         dt_bias=dt_bias)
        la_feeds = dict(qkv=qkv, a=a, b=b, state=state, neg_exp_A=-np.exp(a_log), dt_bias=dt_bias)
        (o1, s1), (o2, s2) = gdn.run(None, gdn_feeds), la.run(None, la_feeds)
        rows[tokens] = {
            "max_abs_output_diff": float(np.abs(o1.reshape(o2.shape) - o2).max()),
            "max_abs_state_diff": float(np.abs(s1.transpose(0, 1, 3, 2) - s2).max()),
            "GatedDeltaNet_ms": round(timed(gdn, gdn_feeds, repeats), 3),
            "LinearAttention_ms": round(timed(la, la_feeds, repeats), 3),
        }
        print(tokens, rows[tokens])
    RESULTS.mkdir(exist_ok=True)
    record = {"shape": {"heads": h, "head_dim": d}, "threads": args.threads, "onnxruntime": ort.__version__,
              "load_average": list(os.getloadavg()), "tokens": rows}
    (RESULTS / "linear_attention_ops.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
