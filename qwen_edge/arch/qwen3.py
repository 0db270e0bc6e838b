"""Qwen3 dense: Qwen2 minus the q/k/v bias (unless `attention_bias`), plus per-head q/k RMSNorm."""

from .base import ArchAdapter, ArchSpec, register


@register("Qwen3ForCausalLM")
class Qwen3Adapter(ArchAdapter):
    def spec(self, config: dict, architecture: str) -> ArchSpec:
        bias = bool(config.get("attention_bias", False))
        return self._dense_spec(config, architecture, attention_bias=bias, qk_norm=True)
