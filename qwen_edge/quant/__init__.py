"""Block-wise weight quantization for onnxruntime's MatMulNBits and GatherBlockQuantized."""

from .blockwise import (
    BlockQuantized,
    QuantSpec,
    pack_codes,
    quantize_blockwise,
    unpack_codes,
)

__all__ = ["BlockQuantized", "QuantSpec", "pack_codes", "quantize_blockwise", "unpack_codes"]
