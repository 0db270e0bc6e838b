"""A float32 numpy forward pass of the Qwen decoder (dense or hybrid), layer by layer over a batch of
windows, with a hook at every quantized linear projection.

It serves data-aware quantization: the hook sees each projection's input activations (for
Hessians and activation statistics) and may return the weight to continue with (a quantized
one, so later layers calibrate on what the bundle will really compute). The projections are
named by the graph scopes the bundle uses (`/model/layers.3/mlp/down_proj`, `/lm_head`) and
fused as in the graph (q|k|v, gate|up; a hybrid model's q|k|v|gate and linear attention's
qkv|z). Whole windows are processed one layer at a time, so memory holds one layer's weights
plus the activations, never the whole model's.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from ..arch import rope_tables
from ..arch.hybrid import split_gated_query
from ..verify.reference_hybrid import linear_attention_layer
from ..verify.reference_moe import moe_mlp

# hook(scope, inputs [tokens, k] float32, weight [n, k] float32) -> weight to use, or None (keep)
LinearHook = Callable[[str, np.ndarray, np.ndarray], "np.ndarray | None"]


def layer_scopes(i: int, spec) -> dict[str, str]:
    """Layer i's projections that the plan quantizes, by role. The first one reads the input norm's
    output and the `gate_up` one the post-attention norm's, so their input scales can fold into
    those norms (AWQ). A sparse layer's experts are quantized by the graph builder, not planned."""
    base = f"/model/layers.{i}"
    if spec.hybrid is not None and spec.hybrid.is_linear(i):
        scopes = {"qkvz": f"{base}/linear_attn/qkvz_proj", "out": f"{base}/linear_attn/out_proj"}
    else:
        scopes = {"qkv": f"{base}/attn/qkv_proj", "o": f"{base}/attn/o_proj"}
    if spec.moe is None or not spec.moe.is_sparse(i):
        scopes |= {"gate_up": f"{base}/mlp/gate_up_proj", "down": f"{base}/mlp/down_proj"}
    return scopes


# (role, the norm whose output it reads, float tensors that read the same output). An input scale
# folded into the norm must be multiplied back into those other readers: linear attention's b|a
# projection stays float and reads the input norm beside q|k|v|z.
FOLDABLE_ROLES = (("qkv", "input_norm", ()), ("qkvz", "input_norm", ("in_proj_b", "in_proj_a")),
                  ("gate_up", "post_attention_norm", ()))
HEAD_SCOPE = "/lm_head"
EMBED_SCOPE = "/model/embed_tokens"


def all_linear_scopes(spec) -> list[str]:
    return [s for i in range(spec.num_layers) for s in layer_scopes(i, spec).values()] + [HEAD_SCOPE]


class LayerwiseForward:
    """Reads the checkpoint's tensors as float32 (the same values the graph builder stores)."""

    def __init__(self, checkpoint, adapter, spec, overrides: dict[str, np.ndarray] | None = None):
        self.ckpt = checkpoint
        self.adapter = adapter
        self.spec = spec
        # checkpoint tensor name -> replacement (AWQ folds scales into norms); fused scopes -> weight
        self.overrides = overrides if overrides is not None else {}
        self._cache: dict[str, np.ndarray] = {}

    def tensor(self, name: str) -> np.ndarray:
        if name in self.overrides:
            return self.overrides[name]
        if name not in self._cache:
            self._cache[name] = self.ckpt.read(name, dtype=np.float32)
        return self._cache[name]

    def layer(self, i: int) -> dict[str, np.ndarray]:
        return {role: self.tensor(name) for role, name in self.adapter.layer_tensor_names(self.spec, i).items()}

    @property
    def norm_offset(self) -> float:
        """What the norms add to their stored weights (zero-centred norms: 1)."""
        return self.spec.hybrid.norm_offset if self.spec.hybrid is not None else 0.0

    def fused_weights(self, i: int) -> dict[str, np.ndarray]:
        """Layer i's quantized projections as the graph stores them, keyed by scope."""
        s, t, sc = self.spec, self.layer(i), layer_scopes(i, self.spec)
        if "qkvz" in sc:
            mixer = {sc["qkvz"]: np.concatenate([t["in_proj_qkv"], t["in_proj_z"]], axis=0), sc["out"]: t["out_proj"]}
        elif s.hybrid is not None and s.hybrid.attention_output_gate:
            q, gate = split_gated_query(t["q_proj"], s.num_heads, s.head_dim)
            mixer = {sc["qkv"]: np.concatenate([q, t["k_proj"], t["v_proj"], gate], axis=0), sc["o"]: t["o_proj"]}
        else:
            mixer = {sc["qkv"]: np.concatenate([t["q_proj"], t["k_proj"], t["v_proj"]], axis=0), sc["o"]: t["o_proj"]}
        if "gate_up" in sc:
            mixer |= {sc["gate_up"]: np.concatenate([t["gate_proj"], t["up_proj"]], axis=0), sc["down"]: t["down_proj"]}
        return mixer

    def head_weight(self) -> np.ndarray:
        g = self.adapter.GLOBAL_TENSORS
        return self.tensor(g["embed"] if self.spec.tie_word_embeddings else g["lm_head"])

    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        var = np.mean(x * x, axis=-1, keepdims=True)
        return (x / np.sqrt(var + self.spec.rms_norm_eps)) * (w + np.float32(self.norm_offset))

    def embed(self, ids: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
        table = self.tensor(self.adapter.GLOBAL_TENSORS["embed"]) if table is None else table
        return table[np.asarray(ids, dtype=np.int64)].astype(np.float32)

    def run_layer(self, i: int, h: np.ndarray, hook: LinearHook | None = None,
                  weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """h [windows, length, hidden] -> the layer's output. `weights` replaces projections by scope."""
        t = self.layer(i)
        sc = layer_scopes(i, self.spec)
        fused = self.fused_weights(i)
        if weights:
            fused.update({k: v for k, v in weights.items() if k in fused})
        nw, n, _ = h.shape

        def project(scope: str, x: np.ndarray) -> np.ndarray:
            flat = x.reshape(-1, x.shape[-1])
            w = fused[scope]
            if hook is not None:
                replaced = hook(scope, flat, w)
                if replaced is not None:
                    w = replaced
            return (flat @ w.T.astype(np.float32)).reshape(nw, n, -1)

        x = self._rms(h, t["input_norm"])
        if "qkvz" in sc:
            def role_projection(role: str, xx: np.ndarray, w: np.ndarray) -> np.ndarray:
                return project(sc[role], xx) if role in sc else xx @ w.T.astype(np.float32)

            h = h + linear_attention_layer(x, t, self.spec.hybrid.linear, self.spec.rms_norm_eps, role_projection)
        else:
            h = h + project(sc["o"], self._attention(i, t, project(sc["qkv"], x)))
        x = self._rms(h, t["post_attention_norm"])
        if "gate_up" not in sc:  # a sparse layer: float experts, as the reference computes them
            moe = moe_mlp(x.reshape(-1, x.shape[-1]), i, self.spec.moe, self.adapter.moe_tensors, self.tensor,
                          self.ckpt.has)
            return h + moe.reshape(h.shape)
        gate_up = project(sc["gate_up"], x)
        m = self.spec.intermediate_size
        gate, up = gate_up[..., :m], gate_up[..., m:]
        act = gate / (1 + np.exp(-gate)) * up
        return h + project(sc["down"], act)

    def _attention(self, i: int, t: dict[str, np.ndarray], qkv: np.ndarray) -> np.ndarray:
        """Self-attention from the fused q|k|v(|gate) projection [windows, length, ...]."""
        s = self.spec
        nw, n, _ = qkv.shape
        gated = s.hybrid is not None and s.hybrid.attention_output_gate
        if s.attention_bias:
            q_b = t["q_bias"]
            if gated:
                q_b, g_b = split_gated_query(q_b, s.num_heads, s.head_dim)
                qkv = qkv + np.concatenate([q_b, t["k_bias"], t["v_bias"], g_b])
            else:
                qkv = qkv + np.concatenate([q_b, t["k_bias"], t["v_bias"]])
        q = qkv[..., :s.q_size].reshape(nw, n, s.num_heads, s.head_dim).transpose(0, 2, 1, 3)
        k = qkv[..., s.q_size:s.q_size + s.kv_size].reshape(nw, n, s.num_kv_heads, s.head_dim).transpose(0, 2, 1, 3)
        v = qkv[..., s.q_size + s.kv_size:s.q_size + 2 * s.kv_size].reshape(
            nw, n, s.num_kv_heads, s.head_dim).transpose(0, 2, 1, 3)
        if s.qk_norm:
            q, k = self._rms(q, t["q_norm"]), self._rms(k, t["k_norm"])
        cos, sin = rope_tables(s.rope, n, s.max_positions)
        half = s.rope.rotary_dim // 2

        def rotate(z: np.ndarray) -> np.ndarray:
            z1, z2 = z[..., :half], z[..., half:2 * half]
            out = z.copy()
            out[..., :half] = z1 * cos - z2 * sin
            out[..., half:2 * half] = z2 * cos + z1 * sin
            return out

        q, k = rotate(q), rotate(k)
        group = s.num_heads // s.num_kv_heads
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        mask = np.triu(np.full((n, n), -np.inf, np.float32), 1)
        if s.sliding_windows[i]:
            idx = np.arange(n)
            mask = np.where(idx[None, :] <= idx[:, None] - s.sliding_windows[i], -np.inf, mask).astype(np.float32)
        attn = np.empty_like(q)
        for w_ in range(nw):  # one window at a time keeps the score matrices small
            scores = q[w_] @ k[w_].transpose(0, 2, 1) * np.float32(s.head_dim ** -0.5) + mask
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attn[w_] = (scores / scores.sum(-1, keepdims=True)) @ v[w_]
        attn = attn.transpose(0, 2, 1, 3).reshape(nw, n, s.q_size)
        if gated:
            attn = attn / (1 + np.exp(-qkv[..., s.q_size + 2 * s.kv_size:]))
        return attn

    def final_hidden(self, h: np.ndarray) -> np.ndarray:
        return self._rms(h, self.tensor(self.adapter.GLOBAL_TENSORS["final_norm"]))

    def hidden_states(self, ids: np.ndarray, hook: LinearHook | None = None,
                      weights: dict[str, np.ndarray] | None = None,
                      embed_table: np.ndarray | None = None) -> np.ndarray:
        """Final-normed hidden states [windows, length, hidden] for ids [windows, length]."""
        h = self.embed(ids, embed_table)
        for i in range(self.spec.num_layers):
            h = self.run_layer(i, h, hook, weights)
        return self.final_hidden(h)

    def logits(self, ids: np.ndarray, weights: dict[str, np.ndarray] | None = None,
               embed_table: np.ndarray | None = None) -> Iterable[np.ndarray]:
        """Logits per window, [length, vocab] each (yielded, to bound memory)."""
        x = self.hidden_states(ids, None, weights, embed_table)
        head = (weights or {}).get(HEAD_SCOPE, self.head_weight()).astype(np.float32)
        for row in x:
            yield row @ head.T
