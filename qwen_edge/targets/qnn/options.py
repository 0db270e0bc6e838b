"""The typed, closed options of a QNN (HTP) build."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ...errors import ConfigError

PRECISIONS = ("w8a16", "w4a16")  # the HTP does not run float32 graphs (they fail to finalize)
NORM_STYLES = ("rms_op", "decomposed")
QUANTIZERS = ("olive", "onnxruntime")


@dataclass(frozen=True)
class QnnOptions:
    """How the static prefill/decode pair is shaped, quantized and checked.

    `context` is the KV-cache capacity (prompt plus generated tokens); `chunk` the prefill
    graph's fixed token count. `precision` w8a16/w4a16 are QDQ with 16-bit activations and
    8/4-bit per-channel symmetric weights. Parity against the float graphs is measured on the first
    `parity_prompts` of qwen_edge.verify.PROMPTS (at most `parity_tokens` tokens each, the last
    `parity_decode_tokens` through the decode graph) and gated by `min_top1` / `max_kl` unless
    `enforce_parity` is off. Whether nodes may fall back to the CPU is the target's `fallback`, not an
    option here.
    """

    precision: str = "w8a16"
    context: int = 1024
    chunk: int = 128
    norm_style: str = "rms_op"
    quantizer: str = "olive"  # olive-ai's OnnxStaticQuantization pass, or onnxruntime's quantizer directly
    calibration_text: Path | None = None
    calibration_tokens: int = 1024
    decode_calibration_steps: int = 16
    context_binary: bool = False
    enforce_parity: bool = True
    parity_tokens: int = 128
    parity_prompts: int = 3
    parity_decode_tokens: int = 4
    min_top1: float | None = None
    max_kl: float | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"qnn options: precision '{self.precision}' is not one of {', '.join(PRECISIONS)}")
        if self.quantizer not in QUANTIZERS:
            raise ConfigError(f"qnn options: quantizer '{self.quantizer}' is not one of {', '.join(QUANTIZERS)}")
        if self.norm_style not in NORM_STYLES:
            raise ConfigError(f"qnn options: norm_style '{self.norm_style}' is not one of {', '.join(NORM_STYLES)}")
        for key in ("context", "chunk", "calibration_tokens", "parity_tokens", "parity_prompts"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"qnn options: '{key}' must be a positive integer, got {value!r}")
        if self.parity_decode_tokens < 0:
            raise ConfigError("qnn options: 'parity_decode_tokens' must not be negative")
        if self.decode_calibration_steps < 0:
            raise ConfigError("qnn options: 'decode_calibration_steps' must not be negative")
        if self.chunk > self.context:
            raise ConfigError(f"qnn options: chunk {self.chunk} is larger than context {self.context}")
        if self.calibration_text is not None and not Path(self.calibration_text).is_file():
            raise ConfigError(f"{self.calibration_text}: calibration text file not found")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "qnn options") -> "QnnOptions":
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(f"{where}: unknown key '{key}'")
        values = dict(data)
        if values.get("calibration_text") is not None:
            values["calibration_text"] = Path(values["calibration_text"])
        return cls(**values)

    @property
    def weight_bits(self) -> int | None:
        return {"w8a16": 8, "w4a16": 4}.get(self.precision)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["calibration_text"] = Path(self.calibration_text).name if self.calibration_text else None
        return d
