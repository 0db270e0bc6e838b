"""Architecture adapters, registered by Hugging Face class name when imported."""

from . import qwen2, qwen3  # noqa: F401  (registration side effect)
from .base import ArchAdapter, ArchSpec, adapter_for, register, supported_architectures
from .rope import RopeSpec, rope_inv_freq, rope_tables

__all__ = ["ArchAdapter", "ArchSpec", "RopeSpec", "adapter_for", "register", "rope_inv_freq", "rope_tables",
           "supported_architectures"]
