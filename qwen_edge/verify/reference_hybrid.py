"""numpy references for the hybrid decoder's layers (qwen_edge.arch.hybrid has the rules), shared by
the float64 NumpyReference and the float32 layer-wise forward that calibrates quantization.

Arrays carry a leading batch axis: x [b, n, ...]. The arithmetic follows transformers' reference
(`torch_recurrent_gated_delta_rule`, `causal_conv1d_fn`, `Qwen3_5RMSNormGated`) token by token.
"""

from __future__ import annotations

import numpy as np


def rms_norm(x: np.ndarray, scale: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, x)


def l2norm(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    return x / np.sqrt((x * x).sum(-1, keepdims=True) + eps)


def causal_conv_silu(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Depthwise causal convolution then SiLU: x [b, n, C], weight [C, 1, K] -> [b, n, C]."""
    k = weight.shape[-1]
    padded = np.concatenate([np.zeros((x.shape[0], k - 1, x.shape[2]), x.dtype), x], axis=1)
    w = weight[:, 0, :].T  # [K, C]
    out = sum(padded[:, j:j + x.shape[1]] * w[j] for j in range(k))
    return silu(out)


def gated_delta_rule(q: np.ndarray, k: np.ndarray, v: np.ndarray, g: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """q, k [b, n, Hk, dk] (L2-normalised here), v [b, n, Hv, dv], g / beta [b, n, Hv] -> [b, n, Hv, dv].
    Key head h serves value heads h*r .. h*r + r - 1; the state starts at zero."""
    b, n, hk, dk = q.shape
    hv, dv = v.shape[2:]
    r = hv // hk
    q = np.repeat(l2norm(q), r, axis=2) / np.sqrt(dk)
    k = np.repeat(l2norm(k), r, axis=2)
    state = np.zeros((b, hv, dk, dv), q.dtype)
    out = np.empty((b, n, hv, dv), q.dtype)
    for t in range(n):
        state = state * np.exp(g[:, t])[..., None, None]
        kv_mem = np.einsum("bhkv,bhk->bhv", state, k[:, t])
        delta = (v[:, t] - kv_mem) * beta[:, t][..., None]
        state = state + np.einsum("bhk,bhv->bhkv", k[:, t], delta)
        out[:, t] = np.einsum("bhkv,bhk->bhv", state, q[:, t])
    return out


def linear_attention_layer(x: np.ndarray, t: dict[str, np.ndarray], lin, eps: float, project) -> np.ndarray:
    """One Gated DeltaNet token mixer on normed x [b, n, hidden]. `project(role, inputs, weight)` applies
    a projection (the calibration forward hooks it); the qkv and z projections are one fused scope."""
    b, n, _ = x.shape
    qkvz = project("qkvz", x, np.concatenate([t["in_proj_qkv"], t["in_proj_z"]], axis=0))
    qkv, z = qkvz[..., :lin.conv_dim], qkvz[..., lin.conv_dim:]
    ba = project("ba", x, np.concatenate([t["in_proj_b"], t["in_proj_a"]], axis=0))
    beta = 1 / (1 + np.exp(-ba[..., :lin.num_value_heads]))
    g = -np.exp(t["A_log"].astype(np.float64)) * softplus(ba[..., lin.num_value_heads:].astype(np.float64)
                                                          + t["dt_bias"])
    mixed = causal_conv_silu(qkv, t["conv"])
    q = mixed[..., :lin.key_dim].reshape(b, n, lin.num_key_heads, lin.key_head_dim)
    k = mixed[..., lin.key_dim:2 * lin.key_dim].reshape(b, n, lin.num_key_heads, lin.key_head_dim)
    v = mixed[..., 2 * lin.key_dim:].reshape(b, n, lin.num_value_heads, lin.value_head_dim)
    core = gated_delta_rule(q, k, v, g.astype(x.dtype), beta)
    normed = rms_norm(core, t["linear_norm"], eps) * silu(z.reshape(core.shape))
    return project("out", normed.reshape(b, n, lin.value_dim), t["out_proj"])

