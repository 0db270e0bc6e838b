"""The facts about onnxruntime's contrib operators that the hybrid (Qwen3.5) graph relies on, each
checked on tiny tensors against transformers' own reference implementation:

* CausalConvWithState with activation="silu" is transformers' causal_conv1d_fn (+ SiLU) on
  [batch, channels, seq] (channels first, the graph's layout; channels_last=1 on [batch, seq,
  channels] too), and carries the last kernel-1 inputs as its state [batch, channels, kernel-1]
  ([batch, kernel-1, channels] channels last), so a decode step continues the prefill;
* LinearAttentionGate(a, dt_bias, -exp(A_log), b) gives transformers' decay g = -exp(A_log)
  softplus(a + dt_bias) and beta = sigmoid(b); LpNormalization over a head's last axis is its
  l2norm; LinearAttention with update_rule="gated_delta" is transformers' recurrence when given q at
  the key heads (q_num_heads = Hk), k repeated head by head to the value heads (kv_num_heads = Hv:
  value head j reads key head j // r) and the explicit scale 1/sqrt(dk), and keeps the float32
  K-major state [batch, Hv, dk, dv] that transformers keeps;
* both states may be bound as input and output of the same buffer (the runtime updates them in place);
* GatedRMSNorm is transformers' Qwen3_5RMSNormGated per value head on a packed [.., Hv*dv] tensor;
* GroupQueryAttention's fused rotary handles a partial rotary dimension when half of it is a multiple
  of 8, and refuses other widths (the graph writes the rotation out for those).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

torch = pytest.importorskip("torch")
qwen35 = pytest.importorskip("transformers.models.qwen3_5.modeling_qwen3_5")

MS = "com.microsoft"
rng = np.random.default_rng(0)


def session(nodes, inputs, outputs):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    model.ir_version = 10
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def value(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


C, K, HK, HV, DK, DV = 56, 4, 2, 4, 8, 6  # C = 2*HK*DK + HV*DV


def conv_session(channels_last: bool):
    node = helper.make_node("CausalConvWithState", ["x", "w", "", "past"], ["y", "present"], domain=MS, ndim=1,
                            activation="silu", channels_last=int(channels_last))
    x, state = ([1, "S", C], [1, K - 1, C]) if channels_last else ([1, C, "S"], [1, C, K - 1])
    return session([node], [value("x", x), value("w", [C, 1, K]), value("past", state)],
                   [value("y", x), value("present", state)])


def conv_reference(x, w):
    out = qwen35.causal_conv1d_fn(torch.from_numpy(x).transpose(1, 2), torch.from_numpy(w[:, 0]), None,
                                  activation="silu")
    return out.transpose(1, 2).numpy()


@pytest.mark.parametrize("channels_last", [False, True])
def test_causal_conv_with_state_is_transformers_conv_and_carries_its_state(channels_last):
    """x is [batch, seq, channels] here; the channels-first session sees it transposed."""
    s = conv_session(channels_last)
    layout = (lambda a: a) if channels_last else (lambda a: np.ascontiguousarray(a.transpose(0, 2, 1)))
    w = rng.normal(size=(C, 1, K)).astype(np.float32)
    x = rng.normal(size=(1, 9, C)).astype(np.float32)
    y, state = s.run(None, {"x": layout(x[:, :7]), "w": w, "past": layout(np.zeros((1, K - 1, C), np.float32))})
    np.testing.assert_allclose(layout(y), conv_reference(x[:, :7], w), atol=1e-5)
    np.testing.assert_array_equal(layout(state), x[:, 4:7])
    rows = []
    for t in (7, 8):
        step, state = s.run(None, {"x": layout(x[:, t:t + 1]), "w": w, "past": state})
        rows.append(layout(step))
    np.testing.assert_allclose(np.concatenate(rows, 1), conv_reference(x, w)[:, 7:], atol=1e-5)


def la_session():
    """The linear-attention core as the graph writes it (graph/hybrid_decoder.py)."""
    i64 = lambda name, values: helper.make_tensor(name, TensorProto.INT64, [len(values)], values)  # noqa: E731
    r = HV // HK
    nodes = [
        helper.make_node("Split", ["qkv", "qk_v"], ["qk", "v"], axis=-1),
        helper.make_node("Reshape", ["qk", "qk_heads"], ["qk4"]),
        helper.make_node("LpNormalization", ["qk4"], ["qkn"], axis=-1, p=2),
        helper.make_node("Split", ["qkn", "q_k"], ["q4", "k4"], axis=2),
        helper.make_node("Reshape", ["q4", "q_flat"], ["q"]),
        helper.make_node("Unsqueeze", ["k4", "axis3"], ["k5"]),
        helper.make_node("Tile", ["k5", "repeats"], ["kt"]),
        helper.make_node("Reshape", ["kt", "k_flat"], ["k"]),
        helper.make_node("LinearAttentionGate", ["a", "dt_bias", "neg_exp_A", "b"], ["decay", "beta"], domain=MS),
        helper.make_node("LinearAttention", ["q", "k", "v", "past", "decay", "beta"], ["o", "present"], domain=MS,
                         q_num_heads=HK, kv_num_heads=HV, update_rule="gated_delta", scale=DK ** -0.5),
    ]
    inits = [i64("qk_v", [2 * HK * DK, HV * DV]), i64("qk_heads", [0, 0, 2 * HK, DK]), i64("q_k", [HK, HK]),
             i64("q_flat", [0, 0, HK * DK]), i64("axis3", [3]), i64("repeats", [1, 1, 1, r, 1]),
             i64("k_flat", [0, 0, HV * DK])]
    graph = helper.make_graph(nodes, "g", [value("qkv", [1, "S", C]), value("a", [1, "S", HV]),
                                           value("b", [1, "S", HV]), value("past", [1, HV, DK, DV]),
                                           value("neg_exp_A", [HV]), value("dt_bias", [HV])],
                              [value("o", None), value("present", [1, HV, DK, DV])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    model.ir_version = 10
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def gdn_reference(qkv, a, b, a_log, dt_bias, state):
    import torch.nn.functional as F

    q, k, v = np.split(qkv, [HK * DK, 2 * HK * DK], -1)
    n = qkv.shape[1]
    g = -torch.from_numpy(a_log).exp() * F.softplus(torch.from_numpy(a) + torch.from_numpy(dt_bias))
    q, k = (torch.from_numpy(x).reshape(1, n, HK, DK).repeat_interleave(HV // HK, dim=2) for x in (q, k))
    out, final = qwen35.torch_recurrent_gated_delta_rule(
        q, k, torch.from_numpy(v).reshape(1, n, HV, DV), g, torch.from_numpy(b).sigmoid(),
        initial_state=None if state is None else torch.from_numpy(state), output_final_state=True,
        use_qk_l2norm_in_kernel=True)
    return out.numpy().reshape(1, n, HV * DV), final.numpy()


def test_linear_attention_is_transformers_recurrence_with_its_k_major_state():
    s = la_session()
    a_log, dt_bias = rng.normal(size=HV).astype(np.float32), rng.normal(size=HV).astype(np.float32)
    qkv = rng.normal(size=(1, 8, C)).astype(np.float32)
    a, b = rng.normal(size=(1, 8, HV)).astype(np.float32), rng.normal(size=(1, 8, HV)).astype(np.float32)
    feeds = {"neg_exp_A": -np.exp(a_log), "dt_bias": dt_bias}
    out, state = s.run(None, feeds | {"qkv": qkv[:, :6], "a": a[:, :6], "b": b[:, :6],
                                      "past": np.zeros((1, HV, DK, DV), np.float32)})
    ref_out, ref_state = gdn_reference(qkv[:, :6], a[:, :6], b[:, :6], a_log, dt_bias, None)
    assert out.shape == (1, 6, HV * DV)
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    np.testing.assert_allclose(state, ref_state, atol=1e-5)
    for t in (6, 7):  # one token at a time, continuing from the state
        out, state = s.run(None, feeds | {"qkv": qkv[:, t:t + 1], "a": a[:, t:t + 1], "b": b[:, t:t + 1],
                                          "past": state})
        ref_out, ref_state = gdn_reference(qkv[:, t:t + 1], a[:, t:t + 1], b[:, t:t + 1], a_log, dt_bias, ref_state)
        np.testing.assert_allclose(out, ref_out, atol=1e-5)
    np.testing.assert_allclose(state, ref_state, atol=1e-5)


def test_states_may_alias_their_outputs():
    conv, gdn = conv_session(channels_last=False), la_session()
    w = rng.normal(size=(C, 1, K)).astype(np.float32)
    feeds = {"neg_exp_A": -np.exp(rng.normal(size=HV)).astype(np.float32),
             "dt_bias": rng.normal(size=HV).astype(np.float32)}
    x = rng.normal(size=(1, 5, C)).astype(np.float32)
    a, b = rng.normal(size=(1, 5, HV)).astype(np.float32), rng.normal(size=(1, 5, HV)).astype(np.float32)
    separate = {"conv": np.zeros((1, C, K - 1), np.float32), "gdn": np.zeros((1, HV, DK, DV), np.float32)}
    x = np.ascontiguousarray(x.transpose(0, 2, 1))  # channels first, as the graph feeds the conv
    shared = {k: ort.OrtValue.ortvalue_from_numpy(v.copy()) for k, v in separate.items()}
    for lo, hi in ((0, 3), (3, 4), (4, 5)):
        y, separate["conv"] = conv.run(None, {"x": x[:, :, lo:hi], "w": w, "past": separate["conv"]})
        y = np.ascontiguousarray(y.transpose(0, 2, 1))
        o, separate["gdn"] = gdn.run(None, feeds | {"qkv": y, "a": a[:, lo:hi], "b": b[:, lo:hi],
                                                    "past": separate["gdn"]})
        for sess, key, extra in ((conv, "conv", {"x": x[:, :, lo:hi], "w": w}),
                                 (gdn, "gdn", feeds | {"qkv": y, "a": a[:, lo:hi], "b": b[:, lo:hi]})):
            binding = sess.io_binding()
            binding.bind_output(sess.get_outputs()[0].name, "cpu")
            for name, array in extra.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
            binding.bind_ortvalue_input("past", shared[key])
            binding.bind_ortvalue_output("present", shared[key])
            sess.run_with_iobinding(binding)
            np.testing.assert_array_equal(shared[key].numpy(), separate[key])


def test_gated_rms_norm_is_transformers_gated_norm_per_value_head():
    x, z = rng.normal(size=(1, 5, HV * DV)).astype(np.float32), rng.normal(size=(1, 5, HV * DV)).astype(np.float32)
    w = rng.normal(size=DV).astype(np.float32)
    s = session([helper.make_node("GatedRMSNorm", ["x", "w", "z"], ["y"], domain=MS, epsilon=1e-6)],
                [value("x", [1, "S", HV * DV]), value("w", [DV]), value("z", [1, "S", HV * DV])],
                [value("y", [1, "S", HV * DV])])
    norm = qwen35.Qwen3_5RMSNormGated(DV, eps=1e-6)
    norm.weight.data = torch.from_numpy(w)
    ref = norm(torch.from_numpy(x).reshape(-1, DV), torch.from_numpy(z).reshape(-1, DV)).detach().numpy()
    np.testing.assert_allclose(s.run(None, {"x": x, "w": w, "z": z})[0], ref.reshape(x.shape), atol=1e-5)


def gqa_session(heads, kv_heads, rotary_half):
    node = helper.make_node("GroupQueryAttention", ["q", "k", "v", "pk", "pv", "seqlens", "total", "cos", "sin"],
                            ["o", "present_k", "present_v"], domain=MS, num_heads=heads, kv_num_heads=kv_heads,
                            do_rotary=1, rotary_interleaved=0)
    return session([node], [value("q", [1, "S", None]), value("k", [1, "S", None]), value("v", [1, "S", None]),
                            value("pk", [1, kv_heads, "P", None]), value("pv", [1, kv_heads, "P", None]),
                            value("seqlens", [1], TensorProto.INT32), value("total", [], TensorProto.INT32),
                            value("cos", [64, rotary_half]), value("sin", [64, rotary_half])],
                   [value("o", None), value("present_k", None), value("present_v", None)])


@pytest.mark.parametrize("head_dim,rotary", [(64, 16), (32, 8)])
def test_group_query_attention_rotates_a_partial_dimension_when_its_half_is_a_multiple_of_8(head_dim, rotary):
    heads, kv_heads, n = 4, 2, 6
    inv = 1.0 / (10000 ** (np.arange(0, rotary, 2) / rotary))
    angles = np.arange(64)[:, None] * inv[None]
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    q = rng.normal(size=(1, n, heads * head_dim)).astype(np.float32)
    k = rng.normal(size=(1, n, kv_heads * head_dim)).astype(np.float32)
    v = rng.normal(size=(1, n, kv_heads * head_dim)).astype(np.float32)
    empty = np.zeros((1, kv_heads, 0, head_dim), np.float32)
    feeds = {"q": q, "k": k, "v": v, "pk": empty, "pv": empty, "seqlens": np.array([n - 1], np.int32),
             "total": np.array(n, np.int32), "cos": cos, "sin": sin}
    s = gqa_session(heads, kv_heads, rotary // 2)
    if (rotary // 2) % 8:
        with pytest.raises(Exception, match="multiple of 8"):
            s.run(None, feeds)
        return
    out, present_k, _ = s.run(None, feeds)
    qt = torch.from_numpy(q).reshape(1, n, heads, head_dim).transpose(1, 2)
    kt = torch.from_numpy(k).reshape(1, n, kv_heads, head_dim).transpose(1, 2)
    vt = torch.from_numpy(v).reshape(1, n, kv_heads, head_dim).transpose(1, 2)
    c = torch.from_numpy(np.concatenate([cos[:n], cos[:n]], -1))[None]
    s_ = torch.from_numpy(np.concatenate([sin[:n], sin[:n]], -1))[None]
    qr, kr = qwen35.apply_rotary_pos_emb(qt, kt, c, s_)
    ref = torch.nn.functional.scaled_dot_product_attention(qr, kr.repeat_interleave(2, 1), vt.repeat_interleave(2, 1),
                                                           is_causal=True)
    np.testing.assert_allclose(out, ref.transpose(1, 2).reshape(1, n, -1).numpy(), atol=1e-5)
    np.testing.assert_allclose(present_k, kr.numpy(), atol=1e-5)  # the cache holds rotated keys
