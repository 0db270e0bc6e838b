"""The build request: what to build, for which target, how the weights are stored and what is checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from ..graph.decoder import DecoderOptions
from ..precision import Precision


@dataclass(frozen=True)
class BuildRequest:
    """One bundle. `precision`, `options`, `calibration`, `budget` and `quality` are the recipe of the
    graph builders (ort-contrib, standard); a bundle builder (npu-qnn's qnn-static) takes its own
    typed options from `builder_options` instead (closed: an unknown key is an error naming it)."""

    checkpoint: Path
    output: Path
    precision: Precision = field(default_factory=Precision)
    target: str = "cpu"
    options: DecoderOptions = field(default_factory=DecoderOptions)
    smoke_test: bool = True
    parity: Any = None  # qwen_edge.verify.parity.ParityRequest: verify executed targets, gate the build
    calibration: Any = None  # qwen_edge.quant.data_aware.CalibrationConfig: data-aware quantization
    budget: Any = None  # qwen_edge.quant.mixed_precision.Budget: per-tensor precision under a size / quality budget
    quality: Any = None  # qwen_edge.quant.quality.QualityConfig: measure the graph against the float reference
    builder_options: Mapping[str, Any] = field(default_factory=dict)
    genai_speculative: str | None = None  # genai_config.json's `speculative` block (bundle.genai_config)


def request_for_target(target, builder, *, checkpoint: Path, output: Path, precision: str | None,
                       weight_options: Mapping[str, Any], builder_options: Mapping[str, Any],
                       **fields: Any) -> BuildRequest:
    """A request for one target from settings shared by several targets (the CLI's flags).

    `precision` names a preset (None: the target's default). A graph builder gets it as a Precision
    with `weight_options` applied (block size, symmetry...); a bundle builder that makes its own
    precisions gets the name in its builder options. Of `builder_options`, each builder gets the keys
    it takes. `fields` are the other BuildRequest fields.
    """
    name = precision or target.default_precision
    if name not in target.precisions:
        raise ConfigError(f"target '{target.name}' does not support precision '{name}' "
                          f"(supported: {', '.join(target.precisions)})")
    own = {k: v for k, v in builder_options.items() if k in builder.option_names}
    if builder.precisions:
        return BuildRequest(Path(checkpoint), Path(output), target=target.name,
                            builder_options=own | {"precision": name}, **fields)
    return BuildRequest(Path(checkpoint), Path(output), Precision.preset(name, **weight_options), target=target.name,
                        builder_options=own, **fields)
