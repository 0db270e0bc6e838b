"""The numpy float64 reference for sparse mixture-of-experts layers (see arch/moe.py for the rules)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..arch.moe import MoeSpec, MoeTensors


def _silu_mlp(x: np.ndarray, gate: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    g = x @ gate.T
    return (g / (1 + np.exp(-g)) * (x @ up.T)) @ down.T


def moe_mlp(x: np.ndarray, i: int, moe: MoeSpec, names: MoeTensors, read: Callable[[str], np.ndarray],
            has: Callable[[str], bool]) -> np.ndarray:
    """Layer i's sparse block on x [n, hidden]; `read(name)` returns a float64 checkpoint tensor."""
    logits = x @ read(names.router(i)).T
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :moe.top_k]
    weights = np.take_along_axis(probs, top, axis=-1)
    if moe.norm_topk_prob:
        weights /= weights.sum(-1, keepdims=True)
    stacked = names.stacked("gate_up_proj", i)
    m = moe.intermediate_size

    def expert(e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if has(stacked):
            gate_up, down = read(stacked)[e], read(names.stacked("down_proj", i))[e]
            return gate_up[:m], gate_up[m:], down
        return tuple(read(names.per_expert(role, i, e)) for role in MoeTensors.EXPERT_ROLES)

    out = np.zeros_like(x)
    for e in np.unique(top):
        rows, slot = np.nonzero(top == e)
        out[rows] += weights[rows, slot][:, None] * _silu_mlp(x[rows], *expert(int(e)))
    if moe.shared_expert_intermediate_size:
        shared = {role: read(names.shared(role, i)) for role in MoeTensors.EXPERT_ROLES}
        mix = 1 / (1 + np.exp(-(x @ read(names.shared_gate(i)).T)))
        out += mix * _silu_mlp(x, shared["gate_proj"], shared["up_proj"], shared["down_proj"])
    return out
