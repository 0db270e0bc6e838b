"""Checkpoints in the Hugging Face layout, read as untrusted input.

    loader            Checkpoint: config (4.x and 5.x dialects), tokenizer files, generation defaults,
                      lazy tensors; refuses pickles, remote code and links that leave the directory
    safetensors_file  one safetensors file: a strictly checked header, tensors read by range
    limits            what a config alone may make the build allocate (rope tables, KV cache)
    tiny              tiny random checkpoints made with numpy and tokenizers (the demo, the tests)

May import: the root modules (errors, worker_threads) and numpy; nothing else of qwen_edge.
"""

from .loader import TOKENIZER_FILES, Checkpoint, GenerationDefaults
from .safetensors_file import DTYPES, SafetensorsFile, TensorInfo

__all__ = ["Checkpoint", "DTYPES", "GenerationDefaults", "SafetensorsFile", "TOKENIZER_FILES", "TensorInfo"]
