"""Quantization: block-wise int4/int8 for onnxruntime's MatMulNBits and GatherBlockQuantized,
the data-aware methods and the choice of per-tensor formats.

    blockwise, scale_search   block quantization and packing, the error-minimising scale search
    gptq, data_aware, forward the data-aware methods and the layer-wise float forward they calibrate on
    calibration               calibration and evaluation texts (the built-in standard-library corpus)
    mixed_precision           per-tensor formats under a size or quality budget, by measured sensitivity
    quality                   the manifest's quality report: the built graph against the float forward

May import: qwen_edge.checkpoint, arch, bundle (file names), verify (metrics) and the root modules.
This file imports only blockwise, the part the graph builders use.
"""

from .blockwise import (
    BlockQuantized,
    QuantSpec,
    pack_codes,
    quantize_blockwise,
    unpack_codes,
)

__all__ = ["BlockQuantized", "QuantSpec", "pack_codes", "quantize_blockwise", "unpack_codes"]
