"""Architecture adapters: config.json -> a frozen ArchSpec, and the table of checkpoint tensor
names for every role in the graph; one small module per architecture, registered by Hugging Face
class name at its declaration (`@register("Qwen3ForCausalLM")`).

    base      ArchSpec, ArchAdapter (the dense Qwen family), the registry, config parsing
    rope      RoPE settings and tables (default, linear, dynamic, yarn, ...)
    moe       MoeSpec and the expert tensor names shared by the MoE adapters
    hybrid    HybridSpec: linear-attention (Gated DeltaNet) layers beside full attention
    qwen2, qwen3, qwen2_moe, qwen3_moe, qwen3_5   the adapters
    qwen3_next  Qwen3-Next: Qwen3.5-MoE with fused linear-attention projections, read as row views
    qwen2_5_vl  Qwen2.5-VL / Qwen3-VL: VisionSpec, M-RoPE decoder, the two checkpoint layouts

May import: the root modules and numpy only; graph builders read the spec, never the reverse.
"""

from . import qwen2, qwen2_5_vl, qwen2_moe, qwen3, qwen3_5, qwen3_moe, qwen3_next  # noqa: F401  (registration side effect)
from .hybrid import HybridSpec, LinearAttentionSpec
from .moe import MoeSpec
from .base import ArchAdapter, ArchSpec, adapter_for, register, supported_architectures
from .rope import MropeSpec, RopeSpec, rope_inv_freq, rope_tables

__all__ = ["ArchAdapter", "ArchSpec", "HybridSpec", "LinearAttentionSpec", "MoeSpec", "MropeSpec", "RopeSpec", "adapter_for", "register", "rope_inv_freq", "rope_tables",
           "supported_architectures"]
