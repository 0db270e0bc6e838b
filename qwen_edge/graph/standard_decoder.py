"""The Qwen decoder in standard ONNX operators only (no com.microsoft contrib ops).

For runtimes whose ONNX readers lack onnxruntime's fused operators, or that must save the graph
in their own format (OpenVINO IR cannot hold GroupQueryAttention). Same IO contract as
DecoderBuilder, but the KV cache is explicit: `present = Concat(past, new)`, so the caller feeds
a past of exactly the cached length (not a fixed-capacity shared buffer). Shapes stay dynamic.

Attention is written out: RMS norms as Mul/ReduceMean/Sqrt, rotate-half rotary from a cos/sin
table gathered at positions past_length..past_length+n, grouped-query attention as a broadcast
MatMul over [batch, kv_heads, group, seq, head_dim], and a causal (optionally sliding-window)
mask combined with `attention_mask`.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..errors import GraphError
from .decoder import DecoderBuilder


def unsupported(spec) -> str | None:
    """Why this builder cannot build a spec (None when it can)."""
    if spec.mrope is not None:
        return (f"{spec.architecture} is a vision-language model (vision.onnx + embedding.onnx + an M-RoPE "
                "decoder), which only builder 'ort-contrib' makes; builder 'standard' does not")
    if spec.hybrid is not None:
        return (f"{spec.architecture}'s linear-attention layers need com.microsoft.LinearAttention and "
                "CausalConvWithState, which builder 'standard' (standard ONNX operators only) does not have")
    if spec.rope.rotary_dim != spec.head_dim:
        return f"partial rotary ({spec.rope.rotary_dim} of {spec.head_dim}) is not supported by builder 'standard'"
    return None


class StandardDecoderBuilder(DecoderBuilder):
    """DecoderBuilder with every fused operator replaced by standard-domain ones (float weights)."""

    def build(self) -> None:
        p, s = self.precision, self.spec
        if p.dtype != "fp32" or {p.weights, p.embeddings, p.lm_head} != {"float"}:
            raise GraphError(f"standard-op decoder: precision '{p.name}' needs quantized or fp16 kernels; "
                             "it builds fp32 float weights only (compress weights in a later pass)")
        reason = unsupported(s)
        if reason is not None:
            raise GraphError(f"standard-op decoder: {reason}")
        super().build()

    # Norms -------------------------------------------------------------------------------------
    def _rms_norm(self, x: str, weight: np.ndarray, scope: str) -> str:
        g = self.g
        sq = g.one("Mul", [x, x], f"{scope}/Pow/Mul")
        mean = g.one("ReduceMean", [sq, g.const([-1], np.int64)], f"{scope}/ReduceMean", keepdims=1)
        var = g.one("Add", [mean, g.const(np.float32(self.spec.rms_norm_eps))], f"{scope}/Add")
        inv = g.one("Reciprocal", [g.one("Sqrt", [var], f"{scope}/Sqrt")], f"{scope}/Reciprocal")
        normed = g.one("Mul", [x, inv], f"{scope}/Mul")
        return g.one("Mul", [normed, self._norm_weight(scope, weight)], f"{scope}/Mul_weight")

    def _skip_norm(self, x: str, residual: str, weight: np.ndarray, scope: str) -> tuple[str, str]:
        summed = self.g.one("Add", [x, residual], f"{scope}/residual/Add")
        return self._rms_norm(summed, weight, scope), summed

    def _head_norm(self, x: str, weight: np.ndarray, heads: int, scope: str) -> str:
        g, d = self.g, self.spec.head_dim
        x4 = g.one("Reshape", [x, g.const([0, 0, heads, d], np.int64)], f"{scope}/Reshape_in")
        y4 = self._rms_norm(x4, weight, scope)
        return g.one("Reshape", [y4, g.const([0, 0, heads * d], np.int64)], f"{scope}/Reshape_out")

    # Positions and mask --------------------------------------------------------------------------
    def _attention_mask_inputs(self) -> tuple[str, str]:
        """Returns (query positions [n], key positions [total]) and keeps the padding mask."""
        g = self.g
        scope = "/model/positions"
        one = g.const(1, np.int64)
        past = g.one("Gather", [g.one("Shape", ["past_key_values.0.key"], f"{scope}/past/Shape"),
                                g.const(2, np.int64)], f"{scope}/past/Gather", axis=0)
        n = g.one("Gather", [g.one("Shape", ["input_ids"], f"{scope}/new/Shape"), one], f"{scope}/new/Gather", axis=0)
        total = g.one("Add", [past, n], f"{scope}/total/Add")
        query_pos = g.one("Range", [past, total, one], f"{scope}/query/Range")
        key_pos = g.one("Range", [g.const(0, np.int64), total, one], f"{scope}/key/Range")
        self._query_pos = query_pos
        mask = g.one("Cast", ["attention_mask"], "/model/attn_mask/Cast", to=TensorProto.BOOL)
        # [batch, total] -> [batch, 1, 1, 1, total] to broadcast over kv_heads, group and queries.
        self._padding_mask = g.one("Unsqueeze", [mask, g.const([1, 2, 3], np.int64)], "/model/attn_mask/Unsqueeze")
        return query_pos, key_pos

    def _causal_mask(self, query_pos: str, key_pos: str, window: int, scope: str) -> str:
        g = self.g
        rows = g.one("Unsqueeze", [query_pos, g.const([1], np.int64)], f"{scope}/rows/Unsqueeze")
        allowed = g.one("LessOrEqual", [key_pos, rows], f"{scope}/causal/LessOrEqual")
        if window > 0:
            start = g.one("Sub", [rows, g.const(window, np.int64)], f"{scope}/window/Sub")
            inside = g.one("Greater", [key_pos, start], f"{scope}/window/Greater")
            allowed = g.one("And", [allowed, inside], f"{scope}/window/And")
        return g.one("And", [allowed, self._padding_mask], f"{scope}/padding/And")

    def _rotary_caches(self) -> tuple[str, str]:
        """cos/sin rows at the query positions: [n, head_dim / 2]."""
        cos_table, sin_table = super()._rotary_caches()
        g = self.g
        return (g.one("Gather", [cos_table, self._query_pos], "/model/rotary/cos/Gather", axis=0),
                g.one("Gather", [sin_table, self._query_pos], "/model/rotary/sin/Gather", axis=0))

    def _rotate(self, x: str, cos: str, sin: str, scope: str) -> str:
        g, half = self.g, self.spec.head_dim // 2
        x1, x2 = g.node("Split", [x, g.const([half, half], np.int64)], f"{scope}/Split", outputs=2, axis=-1)
        a = g.one("Sub", [g.one("Mul", [x1, cos], f"{scope}/x1cos/Mul"), g.one("Mul", [x2, sin], f"{scope}/x2sin/Mul")],
                  f"{scope}/Sub")
        b = g.one("Add", [g.one("Mul", [x2, cos], f"{scope}/x2cos/Mul"), g.one("Mul", [x1, sin], f"{scope}/x1sin/Mul")],
                  f"{scope}/Add")
        return g.one("Concat", [a, b], f"{scope}/Concat", axis=-1)

    # Attention ---------------------------------------------------------------------------------
    def _attention(self, i: int, x: str, t: dict[str, np.ndarray], query_pos: str, key_pos: str,
                   cos: str, sin: str) -> str:
        g, s = self.g, self.spec
        scope = f"/model/layers.{i}/attn"
        kv, group, d = s.num_kv_heads, s.num_heads // s.num_kv_heads, s.head_dim
        q, k, v = self._split_qkv(self._qkv(x, t, scope), t, scope)
        # q: [b, n, kv*group*d] -> [b, kv, group, n, d]; k, v: [b, n, kv*d] -> [b, kv, n, d]
        q = g.one("Reshape", [q, g.const([0, 0, kv, group, d], np.int64)], f"{scope}/q/Reshape")
        q = g.one("Transpose", [q], f"{scope}/q/Transpose", perm=[0, 2, 3, 1, 4])
        k = g.one("Reshape", [k, g.const([0, 0, kv, d], np.int64)], f"{scope}/k/Reshape")
        k = g.one("Transpose", [k], f"{scope}/k/Transpose", perm=[0, 2, 1, 3])
        v = g.one("Reshape", [v, g.const([0, 0, kv, d], np.int64)], f"{scope}/v/Reshape")
        v = g.one("Transpose", [v], f"{scope}/v/Transpose", perm=[0, 2, 1, 3])
        q = self._rotate(q, cos, sin, f"{scope}/q_rotary")
        k = self._rotate(k, cos, sin, f"{scope}/k_rotary")
        g.one("Concat", [f"past_key_values.{i}.key", k], f"{scope}/present_key/Concat", axis=2,
              outputs=[f"present.{i}.key"])
        g.one("Concat", [f"past_key_values.{i}.value", v], f"{scope}/present_value/Concat", axis=2,
              outputs=[f"present.{i}.value"])
        axis2 = g.const([2], np.int64)
        keys = g.one("Unsqueeze", [f"present.{i}.key", axis2], f"{scope}/k_all/Unsqueeze")
        values = g.one("Unsqueeze", [f"present.{i}.value", axis2], f"{scope}/v_all/Unsqueeze")
        q = g.one("Mul", [q, g.const(np.float32(d ** -0.5))], f"{scope}/scale/Mul")
        keys_t = g.one("Transpose", [keys], f"{scope}/k_all/Transpose", perm=[0, 1, 2, 4, 3])
        scores = g.one("MatMul", [q, keys_t], f"{scope}/scores/MatMul")
        allowed = self._causal_mask(query_pos, key_pos, s.sliding_windows[i], f"{scope}/mask")
        masked = g.one("Where", [allowed, scores, g.const(np.float32(np.finfo(np.float32).min))],
                       f"{scope}/mask/Where")
        probs = g.one("Softmax", [masked], f"{scope}/Softmax", axis=-1)
        ctx = g.one("MatMul", [probs, values], f"{scope}/context/MatMul")
        ctx = g.one("Transpose", [ctx], f"{scope}/context/Transpose", perm=[0, 3, 1, 2, 4])
        ctx = g.one("Reshape", [ctx, g.const([0, 0, s.q_size], np.int64)], f"{scope}/context/Reshape")
        return self.lin.linear(ctx, t["o_proj"], f"{scope}/o_proj", self.precision.weights)

    def _lm_head(self, x: str, embed_float_name: str | None) -> str:
        s = self.spec
        if s.tie_word_embeddings and embed_float_name is not None:
            name = self.adapter.GLOBAL_TENSORS["lm_head"]
            if self.ckpt.has(name):
                self.ckpt.read(name)  # stored redundantly by some exporters: consumed, not used
            table_t = self.g.one("Transpose", [embed_float_name], "/lm_head/weight/Transpose", perm=[1, 0])
            return self.g.one("MatMul", [x, table_t], "/lm_head/MatMul")
        return super()._lm_head(x, embed_float_name)
