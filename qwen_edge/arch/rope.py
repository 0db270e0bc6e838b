"""Rotary position embedding tables, computed in numpy from a normalized RopeSpec.

The graph stores cos/sin caches of shape [max_positions, rotary_dim / 2] that onnxruntime's
GroupQueryAttention (do_rotary=1) indexes by position. Every scaling type Qwen documents is
folded into those two tables, so the graph itself never changes with the scaling type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError

ROPE_TYPES = ("default", "linear", "dynamic", "yarn")


@dataclass(frozen=True)
class RopeSpec:
    theta: float
    rotary_dim: int
    rope_type: str = "default"
    factor: float = 1.0
    original_max_positions: int | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True

    def __post_init__(self) -> None:
        if self.rope_type not in ROPE_TYPES:
            raise CheckpointError(
                f"config.json: rope type '{self.rope_type}' is not supported (supported: {', '.join(ROPE_TYPES)})"
            )
        if not (self.theta > 0 and math.isfinite(self.theta)):
            raise CheckpointError(f"config.json: rope_theta must be a positive number, got {self.theta}")
        if self.rotary_dim <= 0 or self.rotary_dim % 2:
            raise CheckpointError(f"config.json: rotary dimension must be positive and even, got {self.rotary_dim}")
        if self.rope_type != "default" and not (self.factor > 0 and math.isfinite(self.factor)):
            raise CheckpointError(f"config.json: rope scaling 'factor' must be positive, got {self.factor}")


@dataclass(frozen=True)
class MropeSpec:
    """M-RoPE: each rotary frequency reads the t, h or w row of 3-D position ids.

    `section` splits the rotary_dim // 2 frequencies into t/h/w runs (Qwen2.5-VL); `interleaved`
    assigns them round-robin t, h, w, ... within those counts instead (Qwen3-VL)."""

    section: tuple[int, ...]
    interleaved: bool = False
    # Qwen3-VL's DeepStack: the decoder adds `deepstack_embeds[i]` to the output of layers 0..deepstack-1.
    deepstack: int = 0

    def __post_init__(self) -> None:
        if len(self.section) != 3 or any(not isinstance(n, int) or n < 0 for n in self.section):
            raise CheckpointError(f"config.json: 'mrope_section' must be three non-negative integers, got {list(self.section)}")

    def rows(self, half_dim: int) -> np.ndarray:
        """The position row (0 = t, 1 = h, 2 = w) each of the half_dim frequencies reads."""
        if sum(self.section) != half_dim:
            raise CheckpointError(f"config.json: 'mrope_section' {list(self.section)} sums to {sum(self.section)}, "
                                  f"the rotary dimension implies {half_dim}")
        if not self.interleaved:
            return np.concatenate([np.full(n, k % 3, np.int64) for k, n in enumerate(self.section)])
        rows = np.zeros(half_dim, np.int64)
        for row in (1, 2):
            rows[row:self.section[row] * 3:3] = row
        return rows


def _mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _base_inv_freq(theta: float, dim: int) -> np.ndarray:
    return 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))


def _yarn_inv_freq(spec: RopeSpec, max_positions: int) -> tuple[np.ndarray, float]:
    dim = spec.rotary_dim
    original = spec.original_max_positions or max_positions
    factor = spec.factor
    if spec.attention_factor is not None:
        attention_factor = spec.attention_factor
    elif spec.mscale and spec.mscale_all_dim:
        attention_factor = _mscale(factor, spec.mscale) / _mscale(factor, spec.mscale_all_dim)
    else:
        attention_factor = _mscale(factor)

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(spec.theta))

    low, high = correction_dim(spec.beta_fast), correction_dim(spec.beta_slow)
    if spec.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    extrapolation_weight = 1.0 - ramp
    extrapolation = _base_inv_freq(spec.theta, dim)
    interpolation = extrapolation / factor
    inv_freq = interpolation * (1 - extrapolation_weight) + extrapolation * extrapolation_weight
    return inv_freq, attention_factor


def rope_inv_freq(spec: RopeSpec, model_max_positions: int) -> tuple[np.ndarray, float]:
    """Position-independent inverse frequencies [rotary_dim // 2] and the cos/sin scale.

    Every type but "dynamic" is a fixed frequency vector, so the graph can compute its tables
    at load time instead of storing them. "dynamic" has no such form (see rope_tables).
    """
    dim = spec.rotary_dim
    if spec.rope_type == "default":
        return _base_inv_freq(spec.theta, dim), 1.0
    if spec.rope_type == "linear":
        return _base_inv_freq(spec.theta, dim) / spec.factor, 1.0
    if spec.rope_type == "yarn":
        return _yarn_inv_freq(spec, model_max_positions)
    raise ValueError(f"rope type '{spec.rope_type}' has position-dependent frequencies")


def rope_tables(spec: RopeSpec, max_positions: int, model_max_positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin tables [max_positions, rotary_dim // 2] in float32.

    `model_max_positions` is the checkpoint's max_position_embeddings, which the dynamic and
    YaRN formulas refer to. For "dynamic" (NTK) scaling each position p uses the base that
    transformers picks when the sequence is p + 1 tokens long, which is what token-by-token
    decoding sees; a single prefill longer than the original context is the one case where
    transformers rotates earlier positions with the longer length's base instead.
    """
    positions = np.arange(max_positions, dtype=np.float64)
    dim = spec.rotary_dim
    if spec.rope_type == "dynamic":
        seq_len = np.maximum(positions + 1, model_max_positions)
        base = spec.theta * ((spec.factor * seq_len / model_max_positions) - (spec.factor - 1)) ** (dim / (dim - 2))
        exponents = np.arange(0, dim, 2, dtype=np.float64) / dim
        angles = positions[:, None] / (base[:, None] ** exponents[None, :])
        scale = 1.0
    else:
        inv_freq, scale = rope_inv_freq(spec, model_max_positions)
        angles = np.outer(positions, inv_freq)
    cos = (np.cos(angles) * scale).astype(np.float32)
    sin = (np.sin(angles) * scale).astype(np.float32)
    return cos, sin
