"""The typed, closed description of how a bundle stores its weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .closed import from_closed_dict
from .errors import ConfigError

FLOAT_DTYPES = ("fp32", "fp16")
WEIGHT_FORMATS = ("float", "int8", "int4")
QUANT_METHODS = ("rtn", "search")
BLOCK_SIZES = (16, 32, 64, 128, 256)


@dataclass(frozen=True)
class Precision:
    """How weights and activations are stored.

    `dtype` is the activation / KV-cache / float-weight type. `weights` applies to the
    transformer layers' linear projections; `embeddings` and `lm_head` can be chosen apart
    because they dominate small models' size and are the most sensitive to quantization.
    """

    dtype: str = "fp32"
    weights: str = "float"
    embeddings: str = "float"
    lm_head: str = "float"
    block_size: int = 32
    symmetric: bool | None = None  # None: the architecture's choice (ArchAdapter.SYMMETRIC_INT), set by the build
    method: str = "search"
    accuracy_level: int = 4
    # How block scales of quantized weights are stored; None: in `dtype`. fp16 halves their bytes
    # (in fp32 they are a fifth of an int4 block-32 matrix); an fp32 graph casts them back, and
    # onnxruntime folds that Cast into the initializer when it loads the model. (MoE experts keep
    # theirs in `dtype`: see graph/moe.py.)
    scale_dtype: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in FLOAT_DTYPES:
            raise ConfigError(f"precision: dtype '{self.dtype}' is not one of {', '.join(FLOAT_DTYPES)}")
        for key in ("weights", "embeddings", "lm_head"):
            if getattr(self, key) not in WEIGHT_FORMATS:
                raise ConfigError(
                    f"precision: {key} '{getattr(self, key)}' is not one of {', '.join(WEIGHT_FORMATS)}"
                )
        if self.symmetric is not None and not isinstance(self.symmetric, bool):
            raise ConfigError(f"precision: symmetric {self.symmetric!r} is not a bool")
        if self.block_size not in BLOCK_SIZES:
            raise ConfigError(f"precision: block_size {self.block_size} is not one of {BLOCK_SIZES}")
        if self.method not in QUANT_METHODS:
            raise ConfigError(f"precision: method '{self.method}' is not one of {', '.join(QUANT_METHODS)}")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ConfigError(f"precision: accuracy_level {self.accuracy_level} is not in 0..4")
        if self.scale_dtype is not None and self.scale_dtype not in FLOAT_DTYPES:
            raise ConfigError(f"precision: scale_dtype '{self.scale_dtype}' is not one of {', '.join(FLOAT_DTYPES)}")
        if self.dtype == "fp16" and self.scale_dtype == "fp32":
            raise ConfigError("precision: scale_dtype 'fp32' needs dtype 'fp32' (fp16 graphs compute with fp16 scales)")

    def resolved(self, symmetric: bool) -> "Precision":
        """This precision with `symmetric` decided: its own value, else the architecture's `symmetric`."""
        return self if self.symmetric is not None else replace(self, symmetric=symmetric)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "Precision":
        """Named presets used by the CLI's --precision."""
        presets = {
            "fp32": dict(),
            "fp16": dict(dtype="fp16"),
            "int8": dict(weights="int8", embeddings="int8", lm_head="int8", scale_dtype="fp16"),
            "int4": dict(weights="int4", embeddings="int4", lm_head="int4", scale_dtype="fp16"),
        }
        if name not in presets:
            raise ConfigError(f"precision: unknown preset '{name}' (choose from {', '.join(presets)})")
        values = presets[name] | {k: v for k, v in overrides.items() if v is not None}
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Precision":
        return from_closed_dict(cls, values, "precision")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def numpy_dtype(self) -> type:
        """The numpy type of the graph's float tensors (activations, KV cache, float weights)."""
        return np.float16 if self.dtype == "fp16" else np.float32

    @property
    def scale_numpy_dtype(self) -> type:
        """The numpy type block scales are stored in."""
        return np.float16 if (self.scale_dtype or self.dtype) == "fp16" else np.float32

    @property
    def family(self) -> str:
        """The preset this precision belongs to, as targets list them (fp32, fp16, int8, int4)."""
        return self.weights if self.weights != "float" else self.dtype

    @property
    def name(self) -> str:
        if self.weights == "float" and self.embeddings == "float" and self.lm_head == "float":
            return self.dtype
        return f"{self.weights}-{self.dtype}"
