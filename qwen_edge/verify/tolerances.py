"""What "matches the reference" means per precision family when a target file gives no
`[parity.<family>]` table: minimum top-1 agreement and maximum mean KL(reference || bundle)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

DEFAULTS = {
    "fp32": {"min_top1": 0.99, "max_kl": 1e-4},
    "fp16": {"min_top1": 0.97, "max_kl": 5e-3},
    "int8": {"min_top1": 0.90, "max_kl": 5e-2},
    "int4": {"min_top1": 0.75, "max_kl": 0.25},
    # QDQ with 16-bit activations: the weights' family decides
    "w8a16": {"min_top1": 0.90, "max_kl": 5e-2},
    "w4a16": {"min_top1": 0.75, "max_kl": 0.25},
}


@dataclass(frozen=True)
class Tolerance:
    min_top1: float
    max_kl: float
    max_ppl_increase_percent: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_top1 <= 1.0:
            raise ConfigError(f"tolerance: 'min_top1' {self.min_top1} is outside [0, 1]")
        if self.max_kl < 0 or (self.max_ppl_increase_percent is not None and self.max_ppl_increase_percent < 0):
            raise ConfigError("tolerance: 'max_kl' and 'max_ppl_increase_percent' must not be negative")

    @classmethod
    def default(cls, family: str) -> "Tolerance":
        if family not in DEFAULTS:
            raise ConfigError(f"tolerance: no default for precision family '{family}' "
                              f"(known: {', '.join(DEFAULTS)})")
        return cls(**DEFAULTS[family])

    def to_dict(self) -> dict[str, Any]:
        return {"min_top1": self.min_top1, "max_kl": self.max_kl,
                "max_ppl_increase_percent": self.max_ppl_increase_percent}


def manifest_family(manifest: dict[str, Any]) -> str:
    """A built bundle's precision family: its weights' format, or its float type when unquantized."""
    precision = manifest["precision"]
    return precision["weights"] if precision.get("weights", "float") != "float" else precision["dtype"]
