"""Qwen3-Next (`Qwen3NextForCausalLM`): Qwen3.5-MoE's layers with two of the linear-attention
projections fused, and a config that may keep some layers dense.

Facts from transformers 5.24 (`models/qwen3_next`, `Qwen3NextGatedDeltaNet.fix_query_key_value_ordering`):

* `in_proj_qkvz` holds, for each key head g in turn, [q_g (dk) | k_g (dk) | v (r*dv) | z (r*dv)]:
  the value and gate rows of the r value heads that key head g serves (r = value heads / key heads);
* `in_proj_ba` holds, for each key head g, [b (r) | a (r)];
* everything else is Qwen3.5-MoE's: zero-centred RMSNorms, the gated output norm, the gated full
  attention with partial rotary (no M-RoPE), the softmax router with a sigmoid-gated shared
  expert; layer i has a dense MLP when it is in `mlp_only_layers` or (i + 1) % `decoder_sparse_step`.

The fused tensors are read through row views (`Checkpoint.add_row_views`) as the `in_proj_qkv`,
`in_proj_z`, `in_proj_b` and `in_proj_a` of Qwen3.5, so the graphs, the references and the
data-aware quantizer see one layout.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .base import ArchSpec, register
from .hybrid import LinearAttentionSpec
from .moe import moe_from_config
from .qwen3_5 import Qwen35Adapter, Qwen35MoeAdapter

FUSED = {"qkvz": "linear_attn.in_proj_qkvz.weight", "ba": "linear_attn.in_proj_ba.weight"}


def fused_row_order(lin: LinearAttentionSpec) -> dict[str, tuple[str, np.ndarray]]:
    """For each separate projection, (fused tensor, its rows in the fused tensor)."""
    dk, dv, kh = lin.key_head_dim, lin.value_head_dim, lin.num_key_heads
    r = lin.num_value_heads // kh
    group = 2 * dk + 2 * r * dv

    def rows(offset: int, width: int, stride: int = group) -> np.ndarray:
        return (np.arange(kh)[:, None] * stride + offset + np.arange(width)[None, :]).reshape(-1)

    qkv = np.concatenate([rows(0, dk), rows(dk, dk), rows(2 * dk, r * dv)])
    return {"in_proj_qkv": ("qkvz", qkv), "in_proj_z": ("qkvz", rows(2 * dk + r * dv, r * dv)),
            "in_proj_b": ("ba", rows(0, r, 2 * r)), "in_proj_a": ("ba", rows(r, r, 2 * r))}


@register("Qwen3NextForCausalLM")
class Qwen3NextAdapter(Qwen35MoeAdapter):
    # SYMMETRIC_INT as Qwen3.5's: no trained Qwen3-Next small enough to measure the recipes on is at hand.
    LEFT_OUT_PREFIXES = ("mtp.",)  # the published checkpoints' MTP layers; transformers ignores them too

    def spec(self, config: dict, architecture: str) -> ArchSpec:
        dense = Qwen35Adapter.spec(self, config, architecture)
        moe = moe_from_config({"norm_topk_prob": True} | config, dense.num_layers, shared_expert=True)
        return replace(dense, moe=moe)

    def _fused_name(self, i: int, kind: str) -> str:
        return f"{self.MODEL_PREFIX}layers.{i}.{FUSED[kind]}"

    def prepare_checkpoint(self, checkpoint, spec: ArchSpec) -> None:
        order = fused_row_order(spec.hybrid.linear)
        views = {}
        for i in spec.hybrid.linear_layers:
            names = self.layer_tensor_names(spec, i)
            for role, (kind, rows) in order.items():
                views[names[role]] = (self._fused_name(i, kind), rows)
        self.check_fused(checkpoint, spec)
        checkpoint.add_row_views(views)

    def check_fused(self, checkpoint, spec: ArchSpec) -> None:
        """The fused tensors' own shapes, named as the checkpoint names them."""
        lin, h = spec.hybrid.linear, spec.hidden_size
        shapes = {"qkvz": (lin.conv_dim + lin.value_dim, h), "ba": (2 * lin.num_value_heads, h)}
        self.check_shapes(checkpoint, {self._fused_name(i, kind): shape for i in spec.hybrid.linear_layers
                                       for kind, shape in shapes.items()})
