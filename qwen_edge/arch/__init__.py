"""Architecture adapters, registered by Hugging Face class name when imported."""

from . import qwen2, qwen2_moe, qwen3, qwen3_moe  # noqa: F401  (registration side effect)
from .moe import MoeSpec
from .base import ArchAdapter, ArchSpec, adapter_for, register, supported_architectures
from .rope import RopeSpec, rope_inv_freq, rope_tables

__all__ = ["ArchAdapter", "ArchSpec", "MoeSpec", "RopeSpec", "adapter_for", "register", "rope_inv_freq", "rope_tables",
           "supported_architectures"]
