"""Writes the float static prefill/decode pair with one shared external-data file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..arch import ArchSpec
from ..errors import CheckpointError
from ..graph.builder import GraphBuilder
from ..graph.writer import ExternalDataWriter, save_model
from .graph import StaticDecoderPair, StaticShape, finish_model

PREFILL_FILE = "prefill.onnx"
DECODE_FILE = "decode.onnx"
WEIGHTS_FILE = "weights.onnx.data"


@dataclass(frozen=True)
class FloatPair:
    prefill: Path
    decode: Path
    spec: ArchSpec
    parameters: int
    op_counts: dict[str, dict[str, int]]


def write_float_pair(ckpt, adapter, spec: ArchSpec, directory: Path, *, context: int, chunk: int,
                     norm_style: str, progress=None) -> FloatPair:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    writer = ExternalDataWriter(directory / WEIGHTS_FILE)
    builders = {"prefill": GraphBuilder(writer, name=f"qwen_edge_{spec.architecture}_prefill"),
                "decode": GraphBuilder(writer, name=f"qwen_edge_{spec.architecture}_decode")}
    shapes = {"prefill": StaticShape(chunk, context), "decode": StaticShape(1, context)}
    try:
        pair = StaticDecoderPair(ckpt, adapter, spec, {k: (builders[k], shapes[k]) for k in builders},
                                 norm_style=norm_style, progress=progress)
        pair.build()
    finally:
        writer.close()
    leftover = ckpt.unconsumed()
    if leftover:
        raise CheckpointError(f"{Path(ckpt.path).name}: {len(leftover)} tensor(s) not used by the "
                              f"{spec.architecture} adapter, first '{leftover[0]}'")
    paths = {"prefill": directory / PREFILL_FILE, "decode": directory / DECODE_FILE}
    for key, g in builders.items():
        save_model(finish_model(g, f"{spec.architecture} static {key} graph ({shapes[key].tokens} tokens, "
                                   f"{context} cache slots)", norm_style), paths[key])
    return FloatPair(paths["prefill"], paths["decode"], spec, pair.parameters,
                     {k: dict(sorted(g.op_counts.items())) for k, g in builders.items()})
