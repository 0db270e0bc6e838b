"""A float32 numpy forward pass of the dense Qwen decoder, layer by layer over a batch of windows,
with a hook at every linear projection.

It serves data-aware quantization: the hook sees each projection's input activations (for
Hessians and activation statistics) and may return the weight to continue with (a quantized
one, so later layers calibrate on what the bundle will really compute). The projections are
named by the graph scopes the bundle uses (`/model/layers.3/mlp/down_proj`, `/lm_head`) and
fused as in the graph (q|k|v, gate|up). Whole windows are processed one layer at a time, so
memory holds one layer's weights plus the activations, never the whole model's.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from ..arch import rope_tables

# hook(scope, inputs [tokens, k] float32, weight [n, k] float32) -> weight to use, or None (keep)
LinearHook = Callable[[str, np.ndarray, np.ndarray], "np.ndarray | None"]


def layer_scopes(i: int) -> dict[str, str]:
    base = f"/model/layers.{i}"
    return {"qkv": f"{base}/attn/qkv_proj", "o": f"{base}/attn/o_proj",
            "gate_up": f"{base}/mlp/gate_up_proj", "down": f"{base}/mlp/down_proj"}


HEAD_SCOPE = "/lm_head"
EMBED_SCOPE = "/model/embed_tokens"


def all_linear_scopes(num_layers: int) -> list[str]:
    return [s for i in range(num_layers) for s in layer_scopes(i).values()] + [HEAD_SCOPE]


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

    def fused_weights(self, i: int) -> dict[str, np.ndarray]:
        """Layer i's projections as the graph stores them, keyed by scope."""
        t, sc = self.layer(i), layer_scopes(i)
        return {sc["qkv"]: np.concatenate([t["q_proj"], t["k_proj"], t["v_proj"]], axis=0),
                sc["o"]: t["o_proj"],
                sc["gate_up"]: np.concatenate([t["gate_proj"], t["up_proj"]], axis=0),
                sc["down"]: t["down_proj"]}

    def head_weight(self) -> np.ndarray:
        g = self.adapter.GLOBAL_TENSORS
        return self.tensor(g["embed"] if self.spec.tie_word_embeddings else g["lm_head"])

    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        var = np.mean(x * x, axis=-1, keepdims=True)
        return (x / np.sqrt(var + self.spec.rms_norm_eps)) * w

    def embed(self, ids: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
        table = self.tensor(self.adapter.GLOBAL_TENSORS["embed"]) if table is None else table
        return table[np.asarray(ids, dtype=np.int64)].astype(np.float32)

    def run_layer(self, i: int, h: np.ndarray, hook: LinearHook | None = None,
                  weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """h [windows, length, hidden] -> the layer's output. `weights` replaces projections by scope."""
        s = self.spec
        t = self.layer(i)
        sc = layer_scopes(i)
        fused = self.fused_weights(i)
        if weights:
            fused.update({k: v for k, v in weights.items() if k in fused})
        nw, n, d = h.shape

        def project(scope: str, x: np.ndarray) -> np.ndarray:
            flat = x.reshape(-1, x.shape[-1])
            w = fused[scope]
            if hook is not None:
                replaced = hook(scope, flat, w)
                if replaced is not None:
                    w = replaced
            return (flat @ w.T.astype(np.float32)).reshape(nw, n, -1)

        x = self._rms(h, t["input_norm"])
        qkv = project(sc["qkv"], x)
        if s.attention_bias:
            qkv = qkv + np.concatenate([t["q_bias"], t["k_bias"], t["v_bias"]])
        q = qkv[..., :s.q_size].reshape(nw, n, s.num_heads, s.head_dim).transpose(0, 2, 1, 3)
        k = qkv[..., s.q_size:s.q_size + s.kv_size].reshape(nw, n, s.num_kv_heads, s.head_dim).transpose(0, 2, 1, 3)
        v = qkv[..., s.q_size + s.kv_size:].reshape(nw, n, s.num_kv_heads, s.head_dim).transpose(0, 2, 1, 3)
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
        h = h + project(sc["o"], attn)
        x = self._rms(h, t["post_attention_norm"])
        gate_up = project(sc["gate_up"], x)
        m = s.intermediate_size
        gate, up = gate_up[..., :m], gate_up[..., m:]
        act = gate / (1 + np.exp(-gate)) * up
        return h + project(sc["down"], act)

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
