"""Mixture-of-experts hyper-parameters and the adapter logic shared by Qwen2-MoE and Qwen3-MoE.

Routing (both families, transformers' Qwen*MoeTopKRouter): router logits = x @ W_gate.T, softmax
over all experts in float, top-k, and the k weights renormalised to sum 1 only if
`norm_topk_prob`. Layer i is sparse iff i is not in `mlp_only_layers` and
(i + 1) % `decoder_sparse_step` == 0; other layers have a dense MLP of `intermediate_size`.
Qwen2-MoE adds a shared expert to every sparse layer: out += sigmoid(x @ w_shared_gate) * shared(x).

Checkpoints store experts either per expert (`experts.{e}.gate_proj.weight`, the layout published
on the hub and written by transformers' save_pretrained) or stacked
(`experts.gate_up_proj` [E, 2I, H] with gate rows first, `experts.down_proj` [E, H, I], the
in-memory layout of transformers 5); the builder reads either one expert at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import CheckpointError


@dataclass(frozen=True)
class MoeSpec:
    num_experts: int
    top_k: int
    intermediate_size: int  # per expert
    norm_topk_prob: bool
    sparse_layers: tuple[int, ...]
    shared_expert_intermediate_size: int = 0  # 0: no shared expert

    def __post_init__(self) -> None:
        for key in ("num_experts", "top_k", "intermediate_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise CheckpointError(f"config.json: MoE '{key}' must be a positive integer, got {value!r}")
        if self.top_k > self.num_experts:
            raise CheckpointError(
                f"config.json: num_experts_per_tok ({self.top_k}) exceeds the number of experts ({self.num_experts})")
        if self.shared_expert_intermediate_size < 0:
            raise CheckpointError("config.json: 'shared_expert_intermediate_size' must not be negative")

    def is_sparse(self, layer: int) -> bool:
        return layer in self.sparse_layers


def _int(config: dict, key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if value is None:
        raise CheckpointError(f"config.json: required key '{key}' is missing")
    if not isinstance(value, int) or isinstance(value, bool):
        raise CheckpointError(f"config.json: '{key}' must be an integer, got {value!r}")
    return value


def moe_from_config(config: dict, num_layers: int, *, shared_expert: bool) -> MoeSpec:
    """Read the MoE keys of a Qwen2-MoE / Qwen3-MoE config.json (hub and transformers 5 spellings)."""
    if "num_experts" in config:
        experts = _int(config, "num_experts")
    else:
        experts = _int(config, "num_local_experts")  # transformers 5 writes this for qwen3_moe
    step = _int(config, "decoder_sparse_step", 1)
    if step <= 0:
        raise CheckpointError(f"config.json: 'decoder_sparse_step' must be positive, got {step}")
    dense_only = config.get("mlp_only_layers") or []
    if not isinstance(dense_only, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in dense_only):
        raise CheckpointError(f"config.json: 'mlp_only_layers' must be a list of layer indices, got {dense_only!r}")
    norm = config.get("norm_topk_prob", False)
    if not isinstance(norm, bool):
        raise CheckpointError(f"config.json: 'norm_topk_prob' must be a boolean, got {norm!r}")
    sparse = tuple(i for i in range(num_layers) if i not in dense_only and (i + 1) % step == 0)
    return MoeSpec(
        num_experts=experts,
        top_k=_int(config, "num_experts_per_tok"),
        intermediate_size=_int(config, "moe_intermediate_size"),
        norm_topk_prob=norm,
        sparse_layers=sparse,
        shared_expert_intermediate_size=_int(config, "shared_expert_intermediate_size") if shared_expert else 0,
    )


class MoeTensors:
    """Checkpoint names of one sparse layer's tensors, in either expert layout, under the model's
    tensor prefix ("model." for the CausalLM layouts, "model.language_model." inside a multimodal
    checkpoint)."""

    DENSE_MLP_ROLES: ClassVar[tuple[str, ...]] = ("gate_proj", "up_proj", "down_proj")
    EXPERT_ROLES: ClassVar[tuple[str, ...]] = ("gate_proj", "up_proj", "down_proj")

    def __init__(self, prefix: str = "model."):
        self.prefix = prefix

    def _mlp(self, i: int, tail: str) -> str:
        return f"{self.prefix}layers.{i}.mlp.{tail}"

    def router(self, i: int) -> str:
        return self._mlp(i, "gate.weight")

    def per_expert(self, role: str, i: int, e: int) -> str:
        return self._mlp(i, f"experts.{e}.{role}.weight")

    def stacked(self, role: str, i: int) -> str:
        """`gate_up_proj` [E, 2I, H] (gate rows first) or `down_proj` [E, H, I]."""
        return self._mlp(i, f"experts.{role}")

    def shared(self, role: str, i: int) -> str:
        return self._mlp(i, f"shared_expert.{role}.weight")

    def shared_gate(self, i: int) -> str:
        return self._mlp(i, "shared_expert_gate.weight")


class MoeAdapterMixin:
    """Adapter behaviour for sparse layers: no dense MLP tensors there (the graph builders read the
    experts through MoeTensors)."""

    def layer_tensor_names(self, spec, i: int) -> dict[str, str]:
        names = super().layer_tensor_names(spec, i)
        if spec.moe is not None and spec.moe.is_sparse(i):
            for role in MoeTensors.DENSE_MLP_ROLES:
                names.pop(role, None)
        return names

    def expected_tensors(self, spec, has) -> dict[str, tuple[int, ...]]:
        out = super().expected_tensors(spec, has)
        moe, t, h = spec.moe, self.moe_tensors, spec.hidden_size
        if moe is None:
            return out
        n, m, shared = moe.num_experts, moe.intermediate_size, moe.shared_expert_intermediate_size
        for i in moe.sparse_layers:
            out[t.router(i)] = (n, h)
            if has(t.stacked("gate_up_proj", i)):
                out[t.stacked("gate_up_proj", i)] = (n, 2 * m, h)
                out[t.stacked("down_proj", i)] = (n, h, m)
            else:
                for e in range(n):
                    out |= {t.per_expert("gate_proj", i, e): (m, h), t.per_expert("up_proj", i, e): (m, h),
                            t.per_expert("down_proj", i, e): (h, m)}
            if shared:
                out |= {t.shared("gate_proj", i): (shared, h), t.shared("up_proj", i): (shared, h),
                        t.shared("down_proj", i): (h, shared), t.shared_gate(i): (1, h)}
        return out
