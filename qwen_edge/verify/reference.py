"""Reference forward passes to verify bundles against.

`TransformersReference` is the real reference (an optional extra: torch + transformers).
`NumpyReference` is an independent float64 implementation from the checkpoint's tensors (dense,
MoE and hybrid layers), so that `qwen-edge demo` and `verify` can check a bundle on a machine
without torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..arch import adapter_for, rope_tables
from ..arch.hybrid import split_gated_query
from ..checkpoint import Checkpoint
from ..errors import ConfigError
from .reference_hybrid import linear_attention_layer
from .reference_moe import moe_mlp


class NumpyReference:
    name = "numpy-float64"

    def __init__(self, checkpoint_dir: Path):
        self.ckpt = Checkpoint.open(checkpoint_dir)
        self.adapter = adapter_for(self.ckpt.architecture)
        if hasattr(self.adapter, "use_layout"):  # vision-language checkpoints name their tensors two ways
            self.adapter.use_layout(self.ckpt.has)
        self.spec = self.adapter.spec(self.ckpt.config, self.ckpt.architecture)
        self.adapter.prepare_checkpoint(self.ckpt, self.spec)
        self._w: dict[str, np.ndarray] = {}

    def _t(self, name: str) -> np.ndarray:
        if name not in self._w:
            self._w[name] = self.ckpt.read(name, dtype=np.float32).astype(np.float64)
        return self._w[name]

    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.spec.rms_norm_eps) * w

    def logits(self, ids) -> np.ndarray:
        s = self.spec
        ids = np.asarray(ids, dtype=np.int64)
        n = len(ids)
        cos, sin = rope_tables(s.rope, n, s.max_positions)
        cos, sin = cos.astype(np.float64), sin.astype(np.float64)
        half = s.rope.rotary_dim // 2

        def rotate(x: np.ndarray) -> np.ndarray:  # x [heads, n, d]
            x1, x2 = x[..., :half], x[..., half:2 * half]
            out = x.copy()
            out[..., :half] = x1 * cos - x2 * sin
            out[..., half:2 * half] = x2 * cos + x1 * sin
            return out

        g = self.adapter.GLOBAL_TENSORS
        h = self._t(g["embed"])[ids]
        causal = np.triu(np.full((n, n), -np.inf), 1)
        group = s.num_heads // s.num_kv_heads
        offset = s.hybrid.norm_offset if s.hybrid is not None else 0.0
        for i in range(s.num_layers):
            t = {role: self._t(name) for role, name in self.adapter.layer_tensor_names(s, i).items()}
            x = self._rms(h, t["input_norm"] + offset)
            if s.hybrid is not None and s.hybrid.is_linear(i):
                h = h + linear_attention_layer(x[None], t, s.hybrid.linear, s.rms_norm_eps,
                                               lambda role, xx, w: xx @ w.T)[0]
            else:
                q_w, q_b, gate = t["q_proj"], t.get("q_bias"), None
                if s.hybrid is not None and s.hybrid.attention_output_gate:
                    q_w, g_w = split_gated_query(q_w, s.num_heads, s.head_dim)
                    gate = x @ g_w.T
                    if q_b is not None:
                        q_b, g_b = split_gated_query(q_b, s.num_heads, s.head_dim)
                        gate = gate + g_b
                q, k, v = x @ q_w.T, x @ t["k_proj"].T, x @ t["v_proj"].T
                if s.attention_bias:
                    q, k, v = q + q_b, k + t["k_bias"], v + t["v_bias"]
                q = q.reshape(n, s.num_heads, s.head_dim).transpose(1, 0, 2)
                k = k.reshape(n, s.num_kv_heads, s.head_dim).transpose(1, 0, 2)
                v = v.reshape(n, s.num_kv_heads, s.head_dim).transpose(1, 0, 2)
                if s.qk_norm:
                    q, k = self._rms(q, t["q_norm"] + offset), self._rms(k, t["k_norm"] + offset)
                q, k = rotate(q), rotate(k)
                k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
                scores = q @ k.transpose(0, 2, 1) / np.sqrt(s.head_dim) + causal
                if s.sliding_windows[i]:
                    window = s.sliding_windows[i]
                    idx = np.arange(n)
                    scores = np.where(idx[None, :] <= idx[:, None] - window, -np.inf, scores)
                scores = np.exp(scores - scores.max(-1, keepdims=True))
                attn = ((scores / scores.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(n, s.q_size)
                if gate is not None:
                    attn = attn / (1 + np.exp(-gate))
                h = h + attn @ t["o_proj"].T
            x = self._rms(h, t["post_attention_norm"] + offset)
            if s.moe is not None and s.moe.is_sparse(i):
                h = h + moe_mlp(x, i, s.moe, self.adapter.moe_tensors, self._t, self.ckpt.has)
                continue
            gate_, up = x @ t["gate_proj"].T, x @ t["up_proj"].T
            h = h + (gate_ / (1 + np.exp(-gate_)) * up) @ t["down_proj"].T
        x = self._rms(h, self._t(g["final_norm"]) + offset)
        head = self._t(g["embed"]) if s.tie_word_embeddings else self._t(g["lm_head"])
        return (x @ head.T).astype(np.float32)

    def close(self) -> None:
        self.ckpt.close()


class TransformersReference:
    name = "transformers"

    def __init__(self, checkpoint_dir: Path):
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as exc:
            raise ConfigError(
                "the transformers reference needs torch and transformers: pip install 'qwen-edge[reference]'"
            ) from exc
        self._torch = torch
        torch.manual_seed(0)
        self.model = AutoModelForCausalLM.from_pretrained(
            str(checkpoint_dir), dtype=torch.float32, local_files_only=True, trust_remote_code=False,
            attn_implementation="sdpa",
        ).eval()

    def logits(self, ids) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(torch.as_tensor(np.asarray(ids, dtype=np.int64))[None])
        return out.logits[0].float().numpy()

    def close(self) -> None:
        self.model = None


def make_reference(kind: str, checkpoint_dir: Path):
    if kind == "transformers":
        return TransformersReference(checkpoint_dir)
    if kind == "numpy":
        return NumpyReference(checkpoint_dir)
    if kind == "auto":
        try:
            return TransformersReference(checkpoint_dir)
        except ConfigError:
            return NumpyReference(checkpoint_dir)
    raise ConfigError(f"reference: unknown kind '{kind}' (choose transformers, numpy or auto)")
