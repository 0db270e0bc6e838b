"""ONNX graphs built straight from the checkpoint's weights (no tracing), deterministic to the byte.

    builder, writer     GraphBuilder (hierarchical names, shared constants) and the external-data writer
    linear              projections, embeddings and the output head, float or block-quantized
    decoder             the onnxruntime-genai decoder with fused contrib operators ("ort-contrib")
    standard_decoder    the same decoder in standard ONNX operators only ("standard")
    moe                 a sparse expert block as com.microsoft MoE / QMoE
    static_pair         static-shape prefill + decode graphs for NPUs (npu-qnn)

May import: qwen_edge.arch, quant, checkpoint and the root modules. Graph builders are registered
under the names target files use by qwen_edge.targets.catalog; nothing here imports targets.
"""
