"""Hybrid decoders (Qwen3.5, Qwen3-Next): most layers are linear attention (Gated DeltaNet) with a
fixed-size state instead of a KV cache; every `full_attention_interval`-th layer is full attention
with a gated output.

Facts from transformers 5.24 (`models/qwen3_5`), which the graph, the references and the tests
rely on:

* layer i is `full_attention` when (i + 1) % full_attention_interval == 0, else `linear_attention`,
  unless the config lists `layer_types`;
* every RMSNorm but the linear-attention output norm is zero-centred: norm(x) * (1 + w);
* Gated DeltaNet: `in_proj_qkv` rows [q | k | v] -> depthwise causal conv1d (kernel K, no bias) and
  SiLU over the packed qkv; q and k L2-normalised, q scaled by 1/sqrt(key_head_dim);
  beta = sigmoid(in_proj_b x); g = -exp(A_log) * softplus(in_proj_a x + dt_bias), in float32;
  key head h serves value heads h*r .. h*r + r - 1 (r = value heads / key heads);
  S = exp(g) S; S += k (beta (v - S^T k))^T; o = S^T q; then a per-value-head RMSNorm with the plain
  weight times silu(in_proj_z x), and `out_proj`;
* full attention: `q_proj` gives, per head, head_dim query rows then head_dim gate rows; q/k norm;
  partial rotary; the attention output times sigmoid(gate) before `o_proj`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import CheckpointError

FULL, LINEAR = "full_attention", "linear_attention"


@dataclass(frozen=True)
class LinearAttentionSpec:
    num_key_heads: int
    num_value_heads: int
    key_head_dim: int
    value_head_dim: int
    conv_kernel: int

    def __post_init__(self) -> None:
        for key in ("num_key_heads", "num_value_heads", "key_head_dim", "value_head_dim", "conv_kernel"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise CheckpointError(f"config.json: linear attention '{key}' must be a positive integer, got {value!r}")
        if self.num_value_heads % self.num_key_heads:
            raise CheckpointError(
                f"config.json: linear_num_value_heads ({self.num_value_heads}) is not a multiple of "
                f"linear_num_key_heads ({self.num_key_heads})")
        if self.conv_kernel < 2:
            raise CheckpointError(f"config.json: linear_conv_kernel_dim must be at least 2, got {self.conv_kernel}")

    @property
    def key_dim(self) -> int:
        return self.num_key_heads * self.key_head_dim

    @property
    def value_dim(self) -> int:
        return self.num_value_heads * self.value_head_dim

    @property
    def conv_dim(self) -> int:
        """Channels of the causal convolution: the packed q | k | v."""
        return 2 * self.key_dim + self.value_dim


@dataclass(frozen=True)
class HybridSpec:
    layer_types: tuple[str, ...]
    linear: LinearAttentionSpec
    norm_offset: float = 1.0           # RMSNorm weights are stored zero-centred: the scale is offset + w
    attention_output_gate: bool = True  # q_proj also yields a sigmoid gate on the attention output

    def __post_init__(self) -> None:
        unknown = sorted(set(self.layer_types) - {FULL, LINEAR})
        if unknown:
            raise CheckpointError(f"config.json: 'layer_types' has an unknown kind '{unknown[0]}' "
                                  f"(known: {FULL}, {LINEAR})")

    @property
    def full_layers(self) -> tuple[int, ...]:
        return tuple(i for i, kind in enumerate(self.layer_types) if kind == FULL)

    @property
    def linear_layers(self) -> tuple[int, ...]:
        return tuple(i for i, kind in enumerate(self.layer_types) if kind == LINEAR)

    def is_linear(self, layer: int) -> bool:
        return self.layer_types[layer] == LINEAR


def hybrid_from_config(config: dict[str, Any], num_layers: int) -> HybridSpec:
    """Read the hybrid keys of a Qwen3.5 / Qwen3-Next text config."""
    def integer(key: str, default: int | None = None) -> int:
        value = config.get(key, default)
        if value is None:
            raise CheckpointError(f"config.json: required key '{key}' is missing")
        if not isinstance(value, int) or isinstance(value, bool):
            raise CheckpointError(f"config.json: '{key}' must be an integer, got {value!r}")
        return value

    layer_types = config.get("layer_types")
    if layer_types is None:
        interval = integer("full_attention_interval", 4)
        if interval <= 0:
            raise CheckpointError(f"config.json: 'full_attention_interval' must be positive, got {interval}")
        layer_types = [FULL if (i + 1) % interval == 0 else LINEAR for i in range(num_layers)]
    if not isinstance(layer_types, list) or not all(isinstance(k, str) for k in layer_types):
        raise CheckpointError(f"config.json: 'layer_types' must be a list of strings, got {layer_types!r}")
    if len(layer_types) != num_layers:
        raise CheckpointError(f"config.json: 'layer_types' lists {len(layer_types)} layers, "
                              f"num_hidden_layers is {num_layers}")
    linear = LinearAttentionSpec(
        num_key_heads=integer("linear_num_key_heads"), num_value_heads=integer("linear_num_value_heads"),
        key_head_dim=integer("linear_key_head_dim"), value_head_dim=integer("linear_value_head_dim"),
        conv_kernel=integer("linear_conv_kernel_dim", 4))
    return HybridSpec(layer_types=tuple(layer_types), linear=linear)


def split_gated_query(q_proj, heads: int, head_dim: int):
    """A gated attention's q_proj rows (or bias), per head [query | gate], as (query rows, gate rows)."""
    w = q_proj.reshape(heads, 2, head_dim, *q_proj.shape[1:])
    rest = q_proj.shape[1:]
    return w[:, 0].reshape(heads * head_dim, *rest), w[:, 1].reshape(heads * head_dim, *rest)
