"""Qwen3-MoE: Qwen3 attention (q/k norm, no bias) with routed experts and no shared expert."""

from dataclasses import replace

from .base import ArchAdapter, ArchSpec, register
from .moe import MoeAdapterMixin, moe_from_config


@register("Qwen3MoeForCausalLM")
class Qwen3MoeAdapter(MoeAdapterMixin, ArchAdapter):
    def spec(self, config: dict, architecture: str) -> ArchSpec:
        bias = bool(config.get("attention_bias", False))
        dense = self._dense_spec(config, architecture, attention_bias=bias, qk_norm=True)
        return replace(dense, moe=moe_from_config(config, dense.num_layers, shared_expert=False))
