"""The three model files of a vision-language bundle, onnxruntime-genai's file names:
vision.onnx (fp32 always), embedding.onnx (fp32 table + image merge) and model.onnx, the M-RoPE
decoder in the requested precision."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..arch.qwen2_5_vl import VisionLanguageAdapter, VisionSpec
from ..precision import Precision
from .builder import GraphBuilder
from .decoder import DecoderOptions
from .mrope_decoder import MropeDecoderBuilder
from .vision import VisionGraphBuilder, build_embedding
from .vision_qwen3 import Qwen3VisionGraphBuilder

TOWERS = {VisionGraphBuilder.KIND: VisionGraphBuilder, Qwen3VisionGraphBuilder.KIND: Qwen3VisionGraphBuilder}
from .writer import ExternalDataWriter, save_model

VISION_FILE, EMBEDDING_FILE, DECODER_FILE = "vision.onnx", "embedding.onnx", "model.onnx"


@dataclass
class VisionLanguageModels:
    files: dict[str, str]  # role -> file name
    vision_parameters: int
    decoder_stats: Any  # graph.linear.WeightStats
    op_counts: dict[str, dict[str, int]]


def _write(out: Path, file: str, name: str, make) -> GraphBuilder:
    writer = ExternalDataWriter(out / f"{file}.data")
    try:
        g = GraphBuilder(writer, name=name)
        make(g)
    finally:
        writer.close()
    save_model(g.model(doc=name), out / file)
    return g


def write_vision_language(checkpoint, adapter: VisionLanguageAdapter, spec, vision: VisionSpec,
                          precision: Precision, out: Path, options: DecoderOptions = DecoderOptions(),
                          progress=None) -> VisionLanguageModels:
    adapter.use_layout(checkpoint.has)
    ops: dict[str, dict[str, int]] = {}
    tower: list[VisionGraphBuilder] = []

    def vision_graph(g):
        tower.append(TOWERS[vision.kind](checkpoint, adapter.VISUAL_PREFIX, vision, g))
        tower[0].build()

    ops["vision"] = _write(out, VISION_FILE, "qwen_edge_vision", vision_graph).op_counts
    ops["embedding"] = _write(out, EMBEDDING_FILE, "qwen_edge_embedding", lambda g: build_embedding(
        checkpoint, adapter.GLOBAL_TENSORS["embed"], spec.vocab_size, spec.hidden_size, vision.image_token_id,
        g, deepstack=spec.mrope.deepstack)).op_counts
    decoders: list[MropeDecoderBuilder] = []

    def decoder_graph(g):
        decoders.append(MropeDecoderBuilder(checkpoint, adapter, spec, precision, g, options, progress))
        decoders[0].build()

    ops["decoder"] = _write(out, DECODER_FILE, f"qwen_edge_{spec.architecture}", decoder_graph).op_counts
    return VisionLanguageModels({"vision": VISION_FILE, "embedding": EMBEDDING_FILE, "decoder": DECODER_FILE},
                                tower[0].parameters, decoders[0].stats, ops)


__all__ = ["DECODER_FILE", "EMBEDDING_FILE", "VISION_FILE", "VisionLanguageModels", "write_vision_language"]
