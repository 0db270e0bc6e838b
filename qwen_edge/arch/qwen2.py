"""Qwen2 and Qwen2.5: q/k/v projections carry a bias; no q/k norm."""

from .base import ArchAdapter, ArchSpec, register


@register("Qwen2ForCausalLM")
class Qwen2Adapter(ArchAdapter):
    def spec(self, config: dict, architecture: str) -> ArchSpec:
        return self._dense_spec(config, architecture, attention_bias=True, qk_norm=False)
