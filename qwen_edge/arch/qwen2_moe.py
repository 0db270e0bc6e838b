"""Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): Qwen2 attention (q/k/v bias) with routed experts plus
a sigmoid-gated shared expert."""

from dataclasses import replace

from .base import ArchAdapter, ArchSpec, register
from .moe import MoeAdapterMixin, moe_from_config


@register("Qwen2MoeForCausalLM")
class Qwen2MoeAdapter(MoeAdapterMixin, ArchAdapter):
    def spec(self, config: dict, architecture: str) -> ArchSpec:
        bias = bool(config.get("qkv_bias", True))
        dense = self._dense_spec(config, architecture, attention_bias=bias, qk_norm=False)
        return replace(dense, moe=moe_from_config(config, dense.num_layers, shared_expert=True))
