"""The decoder of a vision-language model: `inputs_embeds` in (embedding.onnx made them) and 3-D
M-RoPE `position_ids` [3, batch, seq] (t, h, w rows).

A local delta on DecoderBuilder, as onnxruntime-genai's contract for qwen2_5_vl has it: the token
embedding moves out of the graph, and the rotary angles come from the position ids instead of the
cache length, so the rotation is applied with standard ops before GroupQueryAttention (do_rotary=0).
Each rotary frequency reads the row `MropeSpec.rows` names (a one-hot sum: exact in float32).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ..arch import rope_inv_freq
from ..errors import GraphError
from .decoder import DecoderBuilder

MROPE_INPUTS = ("inputs_embeds", "attention_mask", "position_ids")


class MropeDecoderBuilder(DecoderBuilder):

    def __init__(self, checkpoint, adapter, spec, *args, **kwargs):
        if spec.mrope is None:
            raise GraphError(f"{spec.architecture}: the M-RoPE decoder needs 3-D rotary settings (mrope_section)")
        if spec.rope.rotary_dim != spec.head_dim or spec.rope.rope_type == "dynamic":
            raise GraphError(f"{spec.architecture}: M-RoPE with partial or dynamic rotary is not supported yet")
        super().__init__(checkpoint, adapter, spec, *args, **kwargs)

    def _declare_io(self) -> None:
        super()._declare_io()
        g, s = self.g, self.spec
        if g.inputs[0].name != "input_ids":
            raise GraphError(f"decoder inputs start with '{g.inputs[0].name}', expected 'input_ids'")
        g.inputs[0] = helper.make_tensor_value_info("inputs_embeds", self.elem,
                                                    ["batch_size", "sequence_length", s.hidden_size])
        g.inputs.insert(2, helper.make_tensor_value_info("position_ids", TensorProto.INT64,
                                                         [3, "batch_size", "sequence_length"]))
        if s.mrope.deepstack:
            g.inputs.insert(3, helper.make_tensor_value_info(
                "deepstack_embeds", self.elem, [s.mrope.deepstack, "batch_size", "sequence_length", s.hidden_size]))

    def _embed_input(self) -> tuple[str, str | None]:
        return "inputs_embeds", None

    def _after_layer(self, i: int, out: str) -> str:
        """DeepStack: layer i < k adds deepstack_embeds[i] (zeros off the image tokens) to its output."""
        if i >= self.spec.mrope.deepstack:
            return out
        g = self.g
        extra = g.one("Gather", ["deepstack_embeds", g.const(np.int64(i))], f"/model/layers.{i}/deepstack/Gather", axis=0)
        return g.one("Add", [out, extra], f"/model/layers.{i}/deepstack/Add")

    def _rotary_caches(self) -> tuple[str, str]:
        """cos / sin [batch, seq, 1, head_dim] for these positions."""
        g, s = self.g, self.spec
        scope = "/model/mrope"
        inv_freq, scale = rope_inv_freq(s.rope, s.max_positions)
        half = len(inv_freq)
        onehot = np.zeros((3, 1, 1, half), np.float32)
        onehot[s.mrope.rows(half), 0, 0, np.arange(half)] = 1.0
        pos = g.one("Cast", ["position_ids"], f"{scope}/Cast", to=TensorProto.FLOAT)
        pos = g.one("Unsqueeze", [pos, g.const([-1], np.int64)], f"{scope}/Unsqueeze")
        angles = g.one("Mul", [pos, g.weight(f"{scope}/inv_freq", inv_freq.astype(np.float32).reshape(1, 1, 1, half))],
                       f"{scope}/Mul")
        angles = g.one("Mul", [angles, g.weight(f"{scope}/rows", onehot)], f"{scope}/Select")
        angles = g.one("ReduceSum", [angles, g.const([0], np.int64)], f"{scope}/ReduceSum", keepdims=0)
        angles = g.one("Concat", [angles, angles], f"{scope}/Concat", axis=-1)
        angles = g.one("Unsqueeze", [angles, g.const([2], np.int64)], f"{scope}/Unsqueeze_heads")
        return self._cos_sin(angles, scale, scope)

    def _rotate(self, x: str, heads: int, cos: str, sin: str, scope: str) -> str:
        g, d = self.g, self.spec.head_dim
        x4 = g.one("Reshape", [x, g.const([0, 0, heads, d], np.int64)], f"{scope}/Reshape_in")
        x1, x2 = g.node("Split", [x4, g.const([d // 2, d // 2], np.int64)], f"{scope}/Split", outputs=2, axis=-1)
        rotated = g.one("Concat", [g.one("Neg", [x2], f"{scope}/Neg"), x1], f"{scope}/Concat", axis=-1)
        y = g.one("Add", [g.one("Mul", [x4, cos], f"{scope}/Mul_cos"), g.one("Mul", [rotated, sin], f"{scope}/Mul_sin")],
                  f"{scope}/Add")
        return g.one("Reshape", [y, g.const([0, 0, heads * d], np.int64)], f"{scope}/Reshape_out")

    def _attention(self, i, x, t, seqlens, total_len, cos, sin):
        s = self.spec
        scope = f"/model/layers.{i}/attn"
        q, k, v = self._split_qkv(self._qkv(x, t, scope), t, scope)
        q = self._rotate(q, s.num_heads, cos, sin, f"{scope}/q_rotary")
        k = self._rotate(k, s.num_kv_heads, cos, sin, f"{scope}/k_rotary")
        out = self._group_query_attention(i, scope, q, k, v, seqlens, total_len,
                                          local_window_size=s.sliding_windows[i] or -1)
        return self.lin.linear(out, t["o_proj"], f"{scope}/o_proj", self.precision.weights)


__all__ = ["MROPE_INPUTS", "MropeDecoderBuilder"]
