"""The "ort-contrib" graph builder: onnxruntime's fused contrib operators, for a dense, MoE or hybrid
decoder as the spec says."""

from __future__ import annotations

from .decoder import DecoderBuilder
from .hybrid_decoder import LINEAR_ATTENTION_OPS, HybridDecoderBuilder


def ort_contrib_decoder(checkpoint, adapter, spec, *args, **kwargs) -> DecoderBuilder:
    builder = HybridDecoderBuilder if spec.hybrid is not None else DecoderBuilder
    return builder(checkpoint, adapter, spec, *args, **kwargs)


def required_ops(spec) -> tuple[tuple[str, str], ...]:
    """(domain, op) pairs beyond the dense decoder's that a graph for this spec contains."""
    return LINEAR_ATTENTION_OPS if spec.hybrid is not None else ()
