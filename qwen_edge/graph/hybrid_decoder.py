"""The hybrid decoder graph (Qwen3.5): Gated DeltaNet layers and gated full-attention layers.

Same IO contract as onnxruntime-genai's `qwen3_5_text` decoder, so bundles run there unmodified:
key/value caches only for the full-attention layers, named by absolute layer index; for each
linear-attention layer a convolution state `past.{i}.conv` [batch, conv_dim, kernel - 1] (channels
first, genai's layout) and a recurrent state `past.{i}.recurrent`
[batch, value_heads, key_head_dim, value_head_dim] in float32 whatever the graph's type, each
returned as `present.{i}.*`. Positions come from the attention mask, as in the dense decoder.

Operators (facts checked in tests/graph/test_hybrid_ops.py): com.microsoft CausalConvWithState
(channels first, fused SiLU); LinearAttentionGate (softplus decay and sigmoid beta in float32) and
LinearAttention (gated delta rule, inverse GQA with keys repeated to the value heads), which on
onnxruntime's CPU provider decode about 2.5x and prefill about 5x faster than the one-node
GatedDeltaNet at the 0.8B shape (benchmarks/linear_attention_ops.py); GatedRMSNorm; and GroupQueryAttention, whose fused rotary
takes a partial rotary dimension when half of it is a multiple of 8 (otherwise the rotation is
written out). Zero-centred norm weights get their +1 here, at build time.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..arch.hybrid import split_gated_query
from .builder import MS_DOMAIN
from .decoder import DecoderBuilder
from .decoder_io import state_shapes

_INT64_MAX = np.iinfo(np.int64).max


def fused_rotary(spec) -> bool:
    """Whether GroupQueryAttention can rotate (its cos/sin caches' width must be a multiple of 8)."""
    return (spec.rope.rotary_dim // 2) % 8 == 0


# The operators of a linear-attention layer, which a target's provider must run.
LINEAR_ATTENTION_OPS = ((MS_DOMAIN, "CausalConvWithState"), (MS_DOMAIN, "LinearAttention"),
                        (MS_DOMAIN, "LinearAttentionGate"), (MS_DOMAIN, "GatedRMSNorm"))


class HybridDecoderBuilder(DecoderBuilder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rows: tuple[str, str] | None = None  # rotary rows at this call's positions, made once

    # IO ------------------------------------------------------------------------------------------
    def _state_shapes(self) -> dict[str, tuple[list, int]]:
        elem = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16}
        return {kind: (["batch_size", *state["shape"]], elem[state["dtype"]])
                for kind, state in state_shapes(self.spec, self.precision.dtype).items()}

    def _declare_state_inputs(self) -> None:
        for i in self.spec.hybrid.linear_layers:
            for kind, (shape, elem) in self._state_shapes().items():
                self.g.add_input(f"past.{i}.{kind}", elem, shape)

    def _declare_state_outputs(self) -> None:
        for i in self.spec.hybrid.linear_layers:
            for kind, (shape, elem) in self._state_shapes().items():
                self.g.add_output(f"present.{i}.{kind}", elem, shape)

    # Pieces ----------------------------------------------------------------------------------------
    def _norm_weight(self, scope: str, w: np.ndarray) -> str:
        return self.g.weight(f"{scope}/weight", (w + self.spec.hybrid.norm_offset).astype(self.np_dtype))

    def _float_weight(self, name: str, array: np.ndarray, dtype=None) -> str:
        array = array.astype(dtype or self.np_dtype)
        self.stats.add("float", array.size, array.nbytes)
        return self.g.weight(name, array)

    def _token_mixer(self, i, x, t, seqlens, total_len, cos, sin) -> str:
        if self.spec.hybrid.is_linear(i):
            return self._gated_delta_net(i, x, t)
        return self._gated_attention(i, x, t, seqlens, total_len, cos, sin)

    def _gated_delta_net(self, i: int, x: str, t: dict[str, np.ndarray]) -> str:
        g, lin, fmt = self.g, self.spec.hybrid.linear, self.precision.weights
        scope = f"/model/layers.{i}/linear_attn"
        qkv, z = self.lin.linear_parts(x, np.concatenate([t["in_proj_qkv"], t["in_proj_z"]]), f"{scope}/qkvz_proj", fmt,
                                       [(f"{scope}/qkv_proj", lin.conv_dim), (f"{scope}/z_proj", lin.value_dim)])
        # The decay and update-rate projections stay in float: exp(decay) amplifies their error.
        b, a = self.lin.linear_parts(x, np.concatenate([t["in_proj_b"], t["in_proj_a"]]), f"{scope}/ba_proj", "float",
                                     [(f"{scope}/b_proj", lin.num_value_heads), (f"{scope}/a_proj", lin.num_value_heads)])
        # Channels first, as onnxruntime-genai's graph does: at the 0.8B shape the CPU kernel took 289 ms
        # of a 128-token prefill channels last, 74 ms channels first (+ 26 ms for the two Transposes).
        qkv = g.one("Transpose", [qkv], f"{scope}/conv/input/Transpose", perm=[0, 2, 1])
        conv, _ = g.node("CausalConvWithState", [qkv, self._float_weight(f"{scope}/conv/weight", t["conv"]), "",
                                                 f"past.{i}.conv"],
                         f"{scope}/conv/CausalConvWithState", outputs=[f"{scope}/conv/output_0", f"present.{i}.conv"],
                         domain=MS_DOMAIN, ndim=1, activation="silu")
        conv = g.one("Transpose", [conv], f"{scope}/conv/output/Transpose", perm=[0, 2, 1])
        q, k, v = self._normed_qk_and_v(conv, scope)
        decay, beta = g.node("LinearAttentionGate",
                             [a, self._float_weight(f"{scope}/dt_bias", t["dt_bias"], np.float32),
                              self._float_weight(f"{scope}/neg_exp_A", -np.exp(t["A_log"].astype(np.float64)),
                                                 np.float32), b],
                             f"{scope}/LinearAttentionGate", outputs=2, domain=MS_DOMAIN)
        core, _ = g.node("LinearAttention", [q, k, v, f"past.{i}.recurrent", decay, beta], f"{scope}/LinearAttention",
                         outputs=[f"{scope}/LinearAttention/output_0", f"present.{i}.recurrent"], domain=MS_DOMAIN,
                         q_num_heads=lin.num_key_heads, kv_num_heads=lin.num_value_heads, update_rule="gated_delta",
                         scale=float(lin.key_head_dim) ** -0.5)
        core = g.one("Reshape", [core, g.const([0, 0, lin.value_dim], np.int64)], f"{scope}/core/Reshape")
        normed = g.one("GatedRMSNorm", [core, self._float_weight(f"{scope}/norm/weight", t["linear_norm"]), z],
                       f"{scope}/norm/GatedRMSNorm", domain=MS_DOMAIN, epsilon=self.spec.rms_norm_eps)
        return self.lin.linear(normed, t["out_proj"], f"{scope}/out_proj", fmt)

    def _normed_qk_and_v(self, conv: str, scope: str) -> tuple[str, str, str]:
        """The conv's q | k | v with q and k L2-normalised per head, and k repeated to the value heads
        (LinearAttention takes keys at its kv head count; key head h serves value heads h*r..h*r+r-1)."""
        g, lin = self.g, self.spec.hybrid.linear
        q, k, v = g.node("Split", [conv, g.const([lin.key_dim, lin.key_dim, lin.value_dim], np.int64)],
                         f"{scope}/qkv_split/Split", outputs=3, axis=-1)
        q, k = (g.one("LpNormalization", [g.one("Reshape", [y, g.const([0, 0, lin.num_key_heads, lin.key_head_dim],
                                                                       np.int64)], f"{scope}/{n}_heads/Reshape")],
                      f"{scope}/{n}_l2norm/LpNormalization", axis=-1, p=2) for y, n in ((q, "q"), (k, "k")))
        q = g.one("Reshape", [q, g.const([0, 0, lin.key_dim], np.int64)], f"{scope}/q/Reshape")
        repeat = lin.num_value_heads // lin.num_key_heads
        if repeat > 1:
            k = g.one("Unsqueeze", [k, g.const([3], np.int64)], f"{scope}/k_repeat/Unsqueeze")
            k = g.one("Tile", [k, g.const([1, 1, 1, repeat, 1], np.int64)], f"{scope}/k_repeat/Tile")
        k = g.one("Reshape", [k, g.const([0, 0, lin.num_value_heads * lin.key_head_dim], np.int64)],
                  f"{scope}/k/Reshape")
        return q, k, v

    def _gate_and_up(self, x: str, t: dict[str, np.ndarray], scope: str) -> tuple[str, str]:
        """Gate and up as two projections of the one quantized [gate; up] matrix (no Split)."""
        m = self.spec.intermediate_size
        gate, up = self.lin.linear_parts(x, np.concatenate([t["gate_proj"], t["up_proj"]], axis=0),
                                         f"{scope}/gate_up_proj", self.precision.weights,
                                         [(f"{scope}/gate_proj", m), (f"{scope}/up_proj", m)])
        return gate, up

    def _gated_attention(self, i, x, t, seqlens, total_len, cos, sin) -> str:
        g, s, fmt = self.g, self.spec, self.precision.weights
        scope = f"/model/layers.{i}/attn"
        q_w, gate_w = split_gated_query(t["q_proj"], s.num_heads, s.head_dim)
        bias = None
        if s.attention_bias:
            q_b, gate_b = split_gated_query(t["q_bias"], s.num_heads, s.head_dim)
            bias = np.concatenate([q_b, t["k_bias"], t["v_bias"], gate_b])
        weight = np.concatenate([q_w, t["k_proj"], t["v_proj"], gate_w])
        y = self.lin.linear(x, weight, f"{scope}/qkv_proj", fmt, bias=bias)
        q, k, v, gate = g.node("Split", [y, g.const([s.q_size, s.kv_size, s.kv_size, s.q_size], np.int64)],
                               f"{scope}/qkv_split/Split", outputs=4, axis=-1)
        q = self._head_norm(q, t["q_norm"], s.num_heads, f"{scope}/q_norm")
        k = self._head_norm(k, t["k_norm"], s.num_kv_heads, f"{scope}/k_norm")
        rotate_inside = fused_rotary(s)
        if not rotate_inside:
            rows = self._rotary_rows(cos, sin)
            q = self._rotate(q, s.num_heads, *rows, f"{scope}/q_rotary")
            k = self._rotate(k, s.num_kv_heads, *rows, f"{scope}/k_rotary")
        out = self._group_query_attention(i, scope, q, k, v, seqlens, total_len, (cos, sin) if rotate_inside else (),
                                          local_window_size=-1)
        gated = g.one("Mul", [out, g.one("Sigmoid", [gate], f"{scope}/gate/Sigmoid")], f"{scope}/gate/Mul")
        return self.lin.linear(gated, t["o_proj"], f"{scope}/o_proj", fmt)

    # Rotary written out, for rotary widths GroupQueryAttention does not take ---------------------
    def _rotary_rows(self, cos: str, sin: str) -> tuple[str, str]:
        """cos / sin rows [sequence_length, 1, rotary_dim / 2] at this call's positions."""
        if self._rows is None:
            g, scope = self.g, "/model/rotary/query_positions"
            one = g.const(1, np.int64)
            total = g.one("Gather", [g.one("Shape", ["attention_mask"], f"{scope}/total/Shape"), one],
                          f"{scope}/total/Gather", axis=0)
            new = g.one("Gather", [g.one("Shape", ["input_ids"], f"{scope}/new/Shape"), one], f"{scope}/new/Gather",
                        axis=0)
            pos = g.one("Range", [g.one("Sub", [total, new], f"{scope}/start/Sub"), total, one], f"{scope}/Range")
            self._rows = tuple(
                g.one("Unsqueeze", [g.one("Gather", [table, pos], f"/model/rotary/{name}_rows/Gather", axis=0),
                                    g.const([1], np.int64)], f"/model/rotary/{name}_rows/Unsqueeze")
                for name, table in (("cos", cos), ("sin", sin)))
        return self._rows

    def _rotate(self, x: str, heads: int, cos: str, sin: str, scope: str) -> str:
        """Rotate-half RoPE on the first rotary_dim of every head of x [batch, seq, heads * head_dim]."""
        g, d, half = self.g, self.spec.head_dim, self.spec.rope.rotary_dim // 2
        x4 = g.one("Reshape", [x, g.const([0, 0, heads, d], np.int64)], f"{scope}/Reshape_in")
        x1, x2, rest = g.node("Split", [x4, g.const([half, half, d - 2 * half], np.int64)], f"{scope}/Split",
                              outputs=3, axis=-1)
        a = g.one("Sub", [g.one("Mul", [x1, cos], f"{scope}/x1cos/Mul"), g.one("Mul", [x2, sin], f"{scope}/x2sin/Mul")],
                  f"{scope}/Sub")
        b = g.one("Add", [g.one("Mul", [x2, cos], f"{scope}/x2cos/Mul"), g.one("Mul", [x1, sin], f"{scope}/x1sin/Mul")],
                  f"{scope}/Add")
        y4 = g.one("Concat", [a, b, rest], f"{scope}/Concat", axis=-1)
        return g.one("Reshape", [y4, g.const([0, 0, heads * d], np.int64)], f"{scope}/Reshape_out")
