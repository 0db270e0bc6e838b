"""Checkpoint loading: a Hugging Face directory of safetensors shards, treated as untrusted input."""

from .loader import TOKENIZER_FILES, Checkpoint, GenerationDefaults
from .safetensors_file import DTYPES, SafetensorsFile, TensorInfo

__all__ = ["Checkpoint", "DTYPES", "GenerationDefaults", "SafetensorsFile", "TOKENIZER_FILES", "TensorInfo"]
