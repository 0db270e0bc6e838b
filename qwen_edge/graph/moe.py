"""One sparse mixture-of-experts block, as onnxruntime's com.microsoft MoE / QMoE operator.

Facts checked by experiment against onnxruntime 1.32's CPU provider (tests/test_moe_ops.py keeps
checking them against a numpy reference):

* Both ops take the hidden states [B, S, H] and router values [B*S, E]; the CPU kernels accept
  only `activation_type="swiglu"` with `swiglu_fusion=1`: FC1 holds gate and up rows interleaved
  (row 2j = gate_j, row 2j+1 = up_j), [E, 2I, H]; FC2 is [E, H, I]. With activation_alpha=1 and
  activation_beta=0 (no swiglu_limit) the activation is silu(gate) * up, as in Qwen.
* MoE (float weights) treats router_probs as logits: softmax over all experts, top-k, and the k
  weights renormalised iff normalize_routing_weights=1. That is Qwen's routing with
  normalize_routing_weights = norm_topk_prob; it matches to ~5e-7 in float32.
* QMoE (int4/int8 weights, MatMulNBits' packing: [E, N, K*bits/8], block scales [E, N, K/block],
  optional packed zero points [E, N, ceil(K/block*bits/8)]) always renormalises the top-k weights
  when only router_probs is given, whatever normalize_routing_weights says. With the optional
  `router_weights` input it selects the top-k on router_probs and mixes with the gathered
  router_weights, renormalised iff normalize_routing_weights=1. So the graph feeds the float
  softmax of the router logits as router_weights, which gives Qwen's routing exactly for both
  values of norm_topk_prob. Block size must divide H and I. 8-bit experts always run with int8
  activations on CPU (about 1% relative error); 4-bit experts follow accuracy_level.

Expert weights are streamed: each expert is read, converted (and quantized), and written to the
external data file before the next is read, so a layer's experts are never in memory together.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from ..arch.moe import MoeTensors
from ..errors import CheckpointError, GraphError
from ..quant import quantize_blockwise
from .builder import MS_DOMAIN
from .linear import FORMAT_BITS


class MoeBlockBuilder:
    def __init__(self, decoder):
        self.d = decoder
        self.g = decoder.g
        self.spec = decoder.spec
        self.moe = decoder.spec.moe
        self.ckpt = decoder.ckpt
        self.names = decoder.adapter.moe_tensors

    # Expert tensors, one expert at a time ----------------------------------------------------
    def _expert_readers(self, i: int) -> tuple[Callable[[int], np.ndarray], Callable[[int], np.ndarray]]:
        """Functions e -> interleaved gate/up rows [2I, H] and e -> down [H, I] (float32)."""
        h, m, n = self.spec.hidden_size, self.moe.intermediate_size, self.moe.num_experts
        stacked = {role: self.names.stacked(role, i) for role in ("gate_up_proj", "down_proj")}
        if self.ckpt.has(stacked["gate_up_proj"]):
            for role, shape in (("gate_up_proj", (n, 2 * m, h)), ("down_proj", (n, h, m))):
                actual = tuple(self.ckpt.tensor_info(stacked[role]).shape)
                if actual != shape:
                    raise CheckpointError(f"{self.ckpt.path.name}: tensor '{stacked[role]}' has shape "
                                          f"{list(actual)}, config.json implies {list(shape)}")

            def gate_up(e: int) -> np.ndarray:
                both = self.ckpt.read_index(stacked["gate_up_proj"], e)
                return _interleave(both[:m], both[m:])

            return gate_up, lambda e: self.ckpt.read_index(stacked["down_proj"], e)

        def name(role: str, e: int) -> str:
            return self.names.per_expert(role, i, e)

        def gate_up(e: int) -> np.ndarray:
            return _interleave(self.d._read(name("gate_proj", e), (m, h)), self.d._read(name("up_proj", e), (m, h)))

        return gate_up, lambda e: self.d._read(name("down_proj", e), (h, m))

    # The block --------------------------------------------------------------------------------
    def build(self, i: int, x: str) -> str:
        g, s, moe, p = self.g, self.spec, self.moe, self.d.precision
        scope = f"/model/layers.{i}/mlp"
        router_w = self.d._read(self.names.router(i), (moe.num_experts, s.hidden_size))
        logits = self.d.lin.linear(x, router_w, f"{scope}/router", "float")
        logits = g.one("Reshape", [logits, g.const([-1, moe.num_experts], np.int64)], f"{scope}/router/Reshape")
        gate_up, down = self._expert_readers(i)
        common = dict(k=moe.top_k, activation_type="swiglu", swiglu_fusion=1, activation_alpha=1.0,
                      activation_beta=0.0, normalize_routing_weights=int(moe.norm_topk_prob))
        if p.weights == "float":
            fc1 = self._float_experts(f"{scope}/experts/fc1", gate_up, 2 * moe.intermediate_size, s.hidden_size)
            fc2 = self._float_experts(f"{scope}/experts/fc2", down, s.hidden_size, moe.intermediate_size)
            out = g.one("MoE", [x, logits, fc1, "", fc2], f"{scope}/experts/MoE", domain=MS_DOMAIN, **common)
        else:
            bits = FORMAT_BITS[p.weights]
            fc1 = self._quantized_experts(f"{scope}/experts/fc1", gate_up, 2 * moe.intermediate_size, s.hidden_size)
            fc2 = self._quantized_experts(f"{scope}/experts/fc2", down, s.hidden_size, moe.intermediate_size)
            weights = g.one("Softmax", [logits], f"{scope}/router/Softmax", axis=-1)
            inputs = [x, logits, fc1[0], fc1[1], "", fc2[0], fc2[1], "", "", "", "",
                      fc1[2] or "", fc2[2] or "", "", weights]
            out = g.one("QMoE", inputs, f"{scope}/experts/QMoE", domain=MS_DOMAIN, expert_weight_bits=bits,
                        block_size=p.block_size, accuracy_level=p.accuracy_level, weights_prepacked=0, **common)
        if moe.shared_expert_intermediate_size:
            out = g.one("Add", [out, self._shared_expert(i, x, scope)], f"{scope}/shared_expert/Add")
        return out

    def _float_experts(self, scope: str, read: Callable[[int], np.ndarray], rows: int, cols: int) -> str:
        n, dtype = self.moe.num_experts, self.d.np_dtype
        name = self.g.weight_stream(f"{scope}/weight", dtype, (n, rows, cols),
                                    (read(e).astype(dtype, copy=False) for e in range(n)))
        size = n * rows * cols
        self.d.stats.add("float", size, size * np.dtype(dtype).itemsize, active=self.moe.top_k / n)
        return name

    def _quantized_experts(self, scope: str, read: Callable[[int], np.ndarray], rows: int,
                           cols: int) -> tuple[str, str, str | None]:
        p, n, fmt = self.d.precision, self.moe.num_experts, self.d.precision.weights
        if cols % p.block_size:
            raise GraphError(f"{scope}: QMoE needs the block size ({p.block_size}) to divide the expert "
                             f"input width {cols}; choose a smaller --block-size")
        spec = self.d.lin._quant_spec(fmt)
        # Expert scales stay in the graph's float type whatever precision.scale_dtype says: a Cast
        # would make onnxruntime hold every expert's scales in memory instead of the mapped file.
        float_dtype = self.d.np_dtype
        scales: list[np.ndarray] = []
        zero_points: list[np.ndarray] = []
        stored = [0]

        def packed() -> Iterator[np.ndarray]:
            for e in range(n):
                bq = quantize_blockwise(read(e), spec, name=f"{scope}/expert.{e}")
                tensors = bq.matmul_nbits_tensors(float_dtype)
                scales.append(tensors["scales"])
                if "zero_points" in tensors:
                    zero_points.append(tensors["zero_points"])
                stored[0] += bq.nbytes(float_dtype)
                yield tensors["B"].reshape(rows, -1)

        data = self.g.weight_stream(f"{scope}/weight.packed", np.uint8, (n, rows, cols * spec.bits // 8), packed())
        scale_name = self.g.weight(f"{scope}/weight.scales", np.stack(scales))
        zp_name = self.g.weight(f"{scope}/weight.zero_points", np.stack(zero_points)) if zero_points else None
        self.d.stats.add(fmt, n * rows * cols, stored[0], active=self.moe.top_k / n)
        return data, scale_name, zp_name

    def _shared_expert(self, i: int, x: str, scope: str) -> str:
        g, h, m = self.g, self.spec.hidden_size, self.moe.shared_expert_intermediate_size
        fmt = self.d.precision.weights
        names = {role: self.names.shared(role, i) for role in MoeTensors.EXPERT_ROLES}
        sub = f"{scope}/shared_expert"
        gate_up = np.concatenate([self.d._read(names["gate_proj"], (m, h)), self.d._read(names["up_proj"], (m, h))])
        y = self.d.lin.linear(x, gate_up, f"{sub}/gate_up_proj", fmt)
        del gate_up
        gate, up = g.node("Split", [y, g.const([m, m], np.int64)], f"{sub}/gate_up_split/Split", outputs=2, axis=-1)
        act = g.one("Mul", [gate, g.one("Sigmoid", [gate], f"{sub}/act/Sigmoid")], f"{sub}/act/Mul")
        prod = g.one("Mul", [act, up], f"{sub}/Mul")
        y = self.d.lin.linear(prod, self.d._read(names["down_proj"], (h, m)), f"{sub}/down_proj", fmt)
        gate_w = self.d._read(self.names.shared_gate(i), (1, h))
        mix = g.one("Sigmoid", [self.d.lin.linear(x, gate_w, f"{scope}/shared_expert_gate", "float")],
                    f"{scope}/shared_expert_gate/Sigmoid")
        return g.one("Mul", [y, mix], f"{sub}/gated/Mul")


def _interleave(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    out = np.empty((gate.shape[0] * 2, gate.shape[1]), np.float32)
    out[0::2] = gate
    out[1::2] = up
    return out
