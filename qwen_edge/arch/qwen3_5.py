"""Qwen3.5 (dense and MoE): hybrid Gated DeltaNet / gated full attention (see hybrid.py).

Two layouts of the same language model: `Qwen3_5ForCausalLM` (tensors under `model.`, the config's
keys at its top) and the published `Qwen3_5ForConditionalGeneration` (tensors under
`model.language_model.`, the config's text part in `text_config`, plus a vision tower and an MTP head
that a text-only build leaves out and reports).
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from ..errors import CheckpointError
from .base import ArchAdapter, ArchSpec, _get, register, rope_from_config
from .hybrid import FULL, hybrid_from_config
from .moe import MoeAdapterMixin, moe_from_config


def text_config(config: dict) -> dict:
    """The language model's config: `text_config` of a multimodal config, else the config itself.
    Top-level keys the text part does not set (tie_word_embeddings) are inherited."""
    inner = config.get("text_config")
    if inner is None:
        return config
    if not isinstance(inner, dict):
        raise CheckpointError("config.json: 'text_config' must be an object")
    return {k: v for k, v in config.items() if k == "tie_word_embeddings"} | inner


class Qwen35Adapter(ArchAdapter):
    """The ForCausalLM layout; subclasses change MODEL_PREFIX for the multimodal one."""

    # Symmetric int4/int8 by default: on qwen35-code-11m GPTQ reaches +0.77% perplexity against fp32
    # with it (+0.98% with zero points, too close to its 1% gate), the default recipe +1.68% (+1.34%),
    # and the 0.8B shape builds faster without the zero-point search; decode speed is the same either
    # way. README "Qwen3.5" has the table and the commands.
    SYMMETRIC_INT: ClassVar[bool] = True

    LINEAR_TENSORS: ClassVar[dict[str, str]] = {
        "in_proj_qkv": "linear_attn.in_proj_qkv.weight",
        "in_proj_z": "linear_attn.in_proj_z.weight",
        "in_proj_b": "linear_attn.in_proj_b.weight",
        "in_proj_a": "linear_attn.in_proj_a.weight",
        "conv": "linear_attn.conv1d.weight",
        "dt_bias": "linear_attn.dt_bias",
        "A_log": "linear_attn.A_log",
        "linear_norm": "linear_attn.norm.weight",
        "out_proj": "linear_attn.out_proj.weight",
    }
    FULL_TENSORS: ClassVar[dict[str, str]] = {
        "q_proj": "self_attn.q_proj.weight", "k_proj": "self_attn.k_proj.weight",
        "v_proj": "self_attn.v_proj.weight", "o_proj": "self_attn.o_proj.weight",
        "q_norm": "self_attn.q_norm.weight", "k_norm": "self_attn.k_norm.weight",
    }
    COMMON_TENSORS: ClassVar[dict[str, str]] = {
        "input_norm": "input_layernorm.weight", "post_attention_norm": "post_attention_layernorm.weight",
        "gate_proj": "mlp.gate_proj.weight", "up_proj": "mlp.up_proj.weight", "down_proj": "mlp.down_proj.weight",
    }

    def __init__(self) -> None:
        p = self.MODEL_PREFIX
        self.GLOBAL_TENSORS = {"embed": f"{p}embed_tokens.weight", "final_norm": f"{p}norm.weight",
                               "lm_head": "lm_head.weight"}

    def spec(self, config: dict, architecture: str) -> ArchSpec:
        text = text_config(config)
        heads = _get(text, "num_attention_heads", int)
        head_dim = _get(text, "head_dim", int, _get(text, "hidden_size", int) // heads, required=False)
        rope = text.get("rope_parameters") or {}
        partial = rope.get("partial_rotary_factor", text.get("partial_rotary_factor", 0.25))
        if not isinstance(partial, (int, float)) or isinstance(partial, bool) or not 0 < partial <= 1:
            raise CheckpointError(f"config.json: 'partial_rotary_factor' must be in (0, 1], got {partial!r}")
        bias = bool(text.get("attention_bias", False))
        dense = self._dense_spec(text, architecture, attention_bias=bias, qk_norm=True)
        hybrid = hybrid_from_config(text, dense.num_layers)
        return replace(dense, rope=rope_from_config(text, int(head_dim * partial)), hybrid=hybrid,
                       sliding_windows=(0,) * dense.num_layers)

    def layer_tensor_names(self, spec: ArchSpec, i: int) -> dict[str, str]:
        kind = self.LINEAR_TENSORS if spec.hybrid.is_linear(i) else self.FULL_TENSORS
        table = dict(self.COMMON_TENSORS) | kind
        if spec.attention_bias and not spec.hybrid.is_linear(i):
            table |= {f"{r}_bias": f"self_attn.{r}_proj.bias" for r in "qkv"}
        return {role: f"{self.MODEL_PREFIX}layers.{i}.{name}" for role, name in table.items()}

    def expected_shapes(self, spec: ArchSpec, i: int) -> dict[str, tuple[int, ...]]:
        h, m, d, lin = spec.hidden_size, spec.intermediate_size, spec.head_dim, spec.hybrid.linear
        gated = 2 if spec.hybrid.attention_output_gate else 1
        shapes = {
            "input_norm": (h,), "post_attention_norm": (h,),
            "gate_proj": (m, h), "up_proj": (m, h), "down_proj": (h, m),
            "q_proj": (gated * spec.q_size, h), "k_proj": (spec.kv_size, h), "v_proj": (spec.kv_size, h),
            "o_proj": (h, spec.q_size), "q_norm": (d,), "k_norm": (d,),
            "q_bias": (gated * spec.q_size,), "k_bias": (spec.kv_size,), "v_bias": (spec.kv_size,),
            "in_proj_qkv": (lin.conv_dim, h), "in_proj_z": (lin.value_dim, h),
            "in_proj_b": (lin.num_value_heads, h), "in_proj_a": (lin.num_value_heads, h),
            "conv": (lin.conv_dim, 1, lin.conv_kernel), "dt_bias": (lin.num_value_heads,),
            "A_log": (lin.num_value_heads,), "linear_norm": (lin.value_head_dim,), "out_proj": (h, lin.value_dim),
        }
        return {role: shapes[role] for role in self.layer_tensor_names(spec, i)}


class Qwen35MoeAdapter(MoeAdapterMixin, Qwen35Adapter):
    """Every layer sparse: softmax router, top-k renormalised, plus a sigmoid-gated shared expert."""

    def spec(self, config: dict, architecture: str) -> ArchSpec:
        dense = super().spec(config, architecture)
        text = text_config(config)
        moe = moe_from_config(text | {"norm_topk_prob": True}, dense.num_layers, shared_expert=True)
        return replace(dense, moe=moe)


_LEFT_OUT = ("model.visual.", "mtp.")


@register("Qwen3_5ForCausalLM")
class Qwen35CausalLMAdapter(Qwen35Adapter):
    LEFT_OUT_PREFIXES = ("mtp.",)  # transformers ignores an MTP head here too


@register("Qwen3_5ForConditionalGeneration")
class Qwen35ConditionalAdapter(Qwen35Adapter):
    MODEL_PREFIX = "model.language_model."
    LEFT_OUT_PREFIXES = _LEFT_OUT


@register("Qwen3_5MoeForCausalLM")
class Qwen35MoeCausalLMAdapter(Qwen35MoeAdapter):
    LEFT_OUT_PREFIXES = ("mtp.",)


@register("Qwen3_5MoeForConditionalGeneration")
class Qwen35MoeConditionalAdapter(Qwen35MoeAdapter):
    MODEL_PREFIX = "model.language_model."
    LEFT_OUT_PREFIXES = _LEFT_OUT


__all__ = ["FULL", "Qwen35Adapter", "Qwen35MoeAdapter", "text_config"]
