"""The dense Qwen decoder graph, built layer by layer straight from the checkpoint's tensors.

IO follows onnxruntime-genai's decoder contract so that a bundle runs unmodified there:
inputs `input_ids`, `attention_mask`, `past_key_values.{i}.key|value`; outputs `logits`,
`present.{i}.key|value` (BNSH caches). Attention is onnxruntime's GroupQueryAttention with
the rotary embedding fused in, norms are (Skip)SimplifiedLayerNormalization, projections are
MatMul or MatMulNBits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from onnx import TensorProto

from ..arch import ArchAdapter, ArchSpec, rope_inv_freq, rope_tables
from ..errors import GraphError
from ..precision import Precision
from ..worker_threads import worker_pool
from .builder import MS_DOMAIN, GraphBuilder
from .linear import LinearFactory, WeightStats
from .moe import MoeBlockBuilder

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DecoderOptions:
    """Build options that shape the graph but are not about weight storage."""

    max_positions: int | None = None  # rotary table length; None = the checkpoint's context
    # The optional `logits_to_keep` input (below). Targets whose compilers want a graph without
    # overridable initializers or dynamic slicing can turn it off.
    logits_to_keep: bool = True
    # Every GroupQueryAttention takes one spare zero row after the new tokens and drops its output, so a
    # one-token step takes the same kernels as a pass over several tokens (_group_query_attention). It
    # costs the bundle one position of context.
    exact_speculation: bool = False

    def context_length(self, spec: ArchSpec) -> int:
        if self.max_positions is None:
            return spec.max_positions
        if self.max_positions <= 0:
            raise GraphError(f"max_positions must be positive, got {self.max_positions}")
        return self.max_positions


# An overridable initializer: 0 (the default) returns logits for every position, n > 0 only
# for the last n. Generation asks for 1 at prefill; verification and onnxruntime-genai, which
# do not feed it, get every position as before.
LOGITS_TO_KEEP = "logits_to_keep"
_INT64_MAX = np.iinfo(np.int64).max


class DecoderBuilder:

    def __init__(self, checkpoint, adapter: ArchAdapter, spec: ArchSpec, precision: Precision,
                 g: GraphBuilder, options: DecoderOptions = DecoderOptions(),
                 progress: Progress | None = None, plan=None):
        self.ckpt = checkpoint
        self.plan = plan  # quant.data_aware.QuantPlan or None
        self.adapter = adapter
        self.spec = spec
        self.precision = precision
        self.g = g
        self.options = options
        self.progress = progress or (lambda stage, done, total: None)
        self.stats = WeightStats()
        self.lin = LinearFactory(g, precision, self.stats, plan)
        self.elem = TensorProto.FLOAT16 if precision.dtype == "fp16" else TensorProto.FLOAT
        self.np_dtype = precision.numpy_dtype
        self._spare_lengths: tuple[str, str] | None = None

    # Tensor access with shape checks -----------------------------------------------------
    def _read(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        return self.ckpt.read_expected(name, shape)

    def _layer_tensors(self, i: int) -> dict[str, np.ndarray]:
        names = self.adapter.layer_tensor_names(self.spec, i)
        shapes = self.adapter.expected_shapes(self.spec, i)
        tensors = {role: self._read(names[role], shapes[role]) for role in names}
        overrides = self.plan.tensor_overrides if self.plan is not None else {}
        return {role: overrides.get(names[role], value) for role, value in tensors.items()}

    # Graph pieces --------------------------------------------------------------------------
    def _norm_weight(self, scope: str, w: np.ndarray) -> str:
        return self.g.weight(f"{scope}/weight", w.astype(self.np_dtype))

    def _attention_mask_inputs(self) -> tuple[str, str]:
        g = self.g
        total = g.one("ReduceSum", ["attention_mask", g.const([1], np.int64)], "/model/attn_mask/ReduceSum",
                      keepdims=0)
        seqlens = g.one("Sub", [total, g.const(1, np.int64)], "/model/attn_mask/Sub")
        seqlens = g.one("Cast", [seqlens], "/model/attn_mask/seqlens_k/Cast", to=TensorProto.INT32)
        shape = g.one("Shape", ["attention_mask"], "/model/attn_mask/Shape")
        total_len = g.one("Gather", [shape, g.const(1, np.int64)], "/model/attn_mask/Gather", axis=0)
        total_len = g.one("Cast", [total_len], "/model/attn_mask/total_seq_len/Cast", to=TensorProto.INT32)
        return seqlens, total_len

    def _head_norm(self, x: str, weight: np.ndarray, heads: int, scope: str) -> str:
        g, d = self.g, self.spec.head_dim
        x4 = g.one("Reshape", [x, g.const([0, 0, heads, d], np.int64)], f"{scope}/Reshape_in")
        y4 = g.one("SimplifiedLayerNormalization", [x4, self._norm_weight(scope, weight)],
                   f"{scope}/SimplifiedLayerNormalization", axis=-1, epsilon=self.spec.rms_norm_eps,
                   stash_type=1)
        return g.one("Reshape", [y4, g.const([0, 0, heads * d], np.int64)], f"{scope}/Reshape_out")

    def _qkv(self, x: str, t: dict[str, np.ndarray], scope: str) -> str:
        """The fused q|k|v projection, with the checkpoint's biases where it has them."""
        s = self.spec
        qkv_w = np.concatenate([t["q_proj"], t["k_proj"], t["v_proj"]], axis=0)
        qkv_b = np.concatenate([t["q_bias"], t["k_bias"], t["v_bias"]]) if s.attention_bias else None
        return self.lin.linear(x, qkv_w, f"{scope}/qkv_proj", self.precision.weights, bias=qkv_b)

    def _split_qkv(self, qkv: str, t: dict[str, np.ndarray], scope: str) -> tuple[str, str, str]:
        """q, k and v apart, q and k RMS-normed per head where the model norms them."""
        g, s = self.g, self.spec
        q, k, v = g.node("Split", [qkv, g.const([s.q_size, s.kv_size, s.kv_size], np.int64)],
                         f"{scope}/qkv_split/Split", outputs=3, axis=-1)
        if s.qk_norm:
            q = self._head_norm(q, t["q_norm"], s.num_heads, f"{scope}/q_norm")
            k = self._head_norm(k, t["k_norm"], s.num_kv_heads, f"{scope}/k_norm")
        return q, k, v

    def _attention(self, i: int, x: str, t: dict[str, np.ndarray], seqlens: str, total_len: str,
                   cos: str, sin: str) -> str:
        s = self.spec
        scope = f"/model/layers.{i}/attn"
        qkv = self._qkv(x, t, scope)
        # GroupQueryAttention takes the packed q|k|v as it is, unless q and k are normed first.
        q, k, v = self._split_qkv(qkv, t, scope) if s.qk_norm else (qkv, "", "")
        out = self._group_query_attention(i, scope, q, k, v, seqlens, total_len, (cos, sin),
                                          local_window_size=s.sliding_windows[i] or -1)
        return self.lin.linear(out, t["o_proj"], f"{scope}/o_proj", self.precision.weights)

    def _group_query_attention(self, i: int, scope: str, q: str, k: str, v: str, seqlens: str, total_len: str,
                               rotary: tuple[str, str] | tuple = (), **attrs) -> str:
        """GroupQueryAttention of layer i over its shared key/value cache (q|k|v packed in q when k and v
        are ""), with the rotary applied inside when `rotary` gives the cos/sin caches; its output.

        With `options.exact_speculation` the new tokens get one spare zero row after them, whose output is
        dropped. onnxruntime's CPU kernel computes probs x V with one SGEMM per head whose M is the number of
        rows, and MLAS takes a matrix-vector kernel for M == 1 that rounds otherwise than its blocked kernel;
        MatMulNBits at accuracy_level 4 can turn that 1e-6 into 0.2 in the logits. With the spare row every
        pass has M >= 2: a row's result depends only on its own query and the cache before it, so a
        speculative pass over n tokens gives the bits of n one-token steps. The spare row's key and value
        land one position past the sequence, where the next pass overwrites them.
        """
        g, s = self.g, self.spec
        spare = self.options.exact_speculation
        if spare:
            seqlens, total_len = self._spare_row_lengths(seqlens, total_len)
            pads, axis = g.const([0, 1], np.int64), g.const([1], np.int64)
            q, k, v = (g.one("Pad", [x, pads, "", axis], f"{scope}/spare_row/{name}/Pad", mode="constant") if x else ""
                       for x, name in ((q, "q"), (k, "k"), (v, "v")))
        out = g.node(
            "GroupQueryAttention",
            [q, k, v, f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens, total_len, *rotary],
            f"{scope}/GroupQueryAttention",
            outputs=[f"{scope}/GroupQueryAttention/output_0", f"present.{i}.key", f"present.{i}.value"],
            domain=MS_DOMAIN, num_heads=s.num_heads, kv_num_heads=s.num_kv_heads, scale=float(s.head_dim) ** -0.5,
            do_rotary=int(bool(rotary)), rotary_interleaved=0, **attrs,
        )[0]
        if spare:
            out = g.one("Slice", [out, g.const([0], np.int64), g.const([-1], np.int64), g.const([1], np.int64)],
                        f"{scope}/spare_row/Slice")
        return out

    def _spare_row_lengths(self, seqlens: str, total_len: str) -> tuple[str, str]:
        """GroupQueryAttention's seqlens_k and total_sequence_length with the spare row counted (made once)."""
        if self._spare_lengths is None:
            g, one = self.g, self.g.const(1, np.int32)
            self._spare_lengths = (g.one("Add", [seqlens, one], "/model/attn_mask/spare_row/seqlens_k/Add"),
                                   g.one("Add", [total_len, one], "/model/attn_mask/spare_row/total_seq_len/Add"))
        return self._spare_lengths

    def _mlp(self, i: int, x: str, t: dict[str, np.ndarray]) -> str:
        """Layer i's feed-forward block: the routed experts of a sparse layer, else the dense MLP."""
        if self.spec.moe is not None and self.spec.moe.is_sparse(i):
            return MoeBlockBuilder(self).build(i, x)
        return self.dense_mlp(i, x, t)

    def dense_mlp(self, i: int, x: str, t: dict[str, np.ndarray]) -> str:
        """SwiGLU MLP."""
        g, scope = self.g, f"/model/layers.{i}/mlp"
        gate, up = self._gate_and_up(x, t, scope)
        sig = g.one("Sigmoid", [gate], f"{scope}/act/Sigmoid")
        act = g.one("Mul", [gate, sig], f"{scope}/act/Mul")
        prod = g.one("Mul", [act, up], f"{scope}/Mul")
        return self.lin.linear(prod, t["down_proj"], f"{scope}/down_proj", self.precision.weights)

    def _gate_and_up(self, x: str, t: dict[str, np.ndarray], scope: str) -> tuple[str, str]:
        """The MLP's gate and up projections: one fused projection, then a Split."""
        g, m = self.g, self.spec.intermediate_size
        gate_up = self.lin.linear(x, np.concatenate([t["gate_proj"], t["up_proj"]], axis=0),
                                  f"{scope}/gate_up_proj", self.precision.weights)
        gate, up = g.node("Split", [gate_up, g.const([m, m], np.int64)], f"{scope}/gate_up_split/Split",
                          outputs=2, axis=-1)
        return gate, up

    def _rms_norm(self, x: str, weight: np.ndarray, scope: str) -> str:
        return self.g.one("SimplifiedLayerNormalization", [x, self._norm_weight(scope, weight)],
                          f"{scope}/SimplifiedLayerNormalization", axis=-1, epsilon=self.spec.rms_norm_eps,
                          stash_type=1)

    def _skip_norm(self, x: str, residual: str, weight: np.ndarray, scope: str) -> tuple[str, str]:
        out, _, _, summed = self.g.node(
            "SkipSimplifiedLayerNormalization", [x, residual, self._norm_weight(scope, weight)],
            f"{scope}/SkipSimplifiedLayerNormalization",
            outputs=[f"{scope}/output_0", "", "", f"{scope}/output_3"],
            domain=MS_DOMAIN, epsilon=self.spec.rms_norm_eps,
        )
        return out, summed

    def _rotary_caches(self) -> tuple[str, str]:
        """cos/sin caches [context, rotary_dim / 2] for GroupQueryAttention.

        Where the frequencies do not depend on the position, the tables are computed by the graph
        from the frequency vector (onnxruntime folds them once at load time, in float32 as
        transformers does), so the bundle does not carry context x rotary_dim floats.
        """
        g, s = self.g, self.spec
        length = self.options.context_length(s)
        if s.rope.rope_type == "dynamic":
            cos_np, sin_np = rope_tables(s.rope, length, s.max_positions)
            return (g.weight("/model/rotary/cos_cache", cos_np.astype(self.np_dtype)),
                    g.weight("/model/rotary/sin_cache", sin_np.astype(self.np_dtype)))
        inv_freq, scale = rope_inv_freq(s.rope, s.max_positions)
        scope = "/model/rotary"
        pos = g.one("Range", [g.const(0.0, np.float32), g.const(float(length), np.float32), g.const(1.0, np.float32)],
                    f"{scope}/positions/Range")
        pos = g.one("Unsqueeze", [pos, g.const([1], np.int64)], f"{scope}/positions/Unsqueeze")
        freqs = g.weight(f"{scope}/inv_freq", inv_freq.astype(np.float32)[None, :])
        angles = g.one("Mul", [pos, freqs], f"{scope}/angles/Mul")
        return self._cos_sin(angles, scale, scope)

    def _cos_sin(self, angles: str, scale: float, scope: str) -> tuple[str, str]:
        """cos and sin of float32 rotary angles, times the rope's attention scale, in the graph's type."""
        g = self.g
        tables = []
        for fn in ("Cos", "Sin"):
            table = g.one(fn, [angles], f"{scope}/{fn.lower()}/{fn}")
            if scale != 1.0:
                table = g.one("Mul", [table, g.const(np.float32(scale))], f"{scope}/{fn.lower()}/Mul")
            if self.np_dtype != np.float32:
                table = g.one("Cast", [table], f"{scope}/{fn.lower()}/Cast", to=self.elem)
            tables.append(table)
        return tables[0], tables[1]

    # The whole graph ----------------------------------------------------------------------
    def _declare_io(self) -> None:
        """Inputs and outputs (onnxruntime-genai's decoder contract): ids, mask, every cache in and out."""
        g, s = self.g, self.spec
        kv_shape = ["batch_size", s.num_kv_heads, "past_sequence_length", s.head_dim]
        present_shape = ["batch_size", s.num_kv_heads, "total_sequence_length", s.head_dim]
        g.add_input("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"])
        g.add_input("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"])
        for i in s.kv_layers:
            for kind in ("key", "value"):
                g.add_input(f"past_key_values.{i}.{kind}", self.elem, kv_shape)
        self._declare_state_inputs()
        if self.options.logits_to_keep:
            g.add_input(LOGITS_TO_KEEP, TensorProto.INT64, [1])
            g.weight(LOGITS_TO_KEEP, np.zeros(1, np.int64))
        logits_len = "logits_sequence_length" if self.options.logits_to_keep else "sequence_length"
        g.add_output("logits", TensorProto.FLOAT, ["batch_size", logits_len, s.vocab_size])
        for i in s.kv_layers:
            for kind in ("key", "value"):
                g.add_output(f"present.{i}.{kind}", self.elem, present_shape)
        self._declare_state_outputs()

    def _declare_state_inputs(self) -> None:
        """Caches besides key/values (a hybrid decoder's linear-attention states); none here."""

    def _declare_state_outputs(self) -> None:
        pass

    def _token_mixer(self, i: int, x: str, t: dict[str, np.ndarray], seqlens: str, total_len: str,
                     cos: str, sin: str) -> str:
        """Layer i's attention (a hybrid decoder mixes some layers' tokens otherwise)."""
        return self._attention(i, x, t, seqlens, total_len, cos, sin)

    def build(self) -> None:
        g, s, p = self.g, self.spec, self.precision
        n_layers = s.num_layers
        keep = self.options.logits_to_keep
        self._declare_io()

        globals_ = self.adapter.GLOBAL_TENSORS
        gshapes = self.adapter.global_shapes(s)
        self.progress("embeddings", 0, n_layers + 2)
        hidden, embed_float_name = self._embed_input()

        seqlens, total_len = self._attention_mask_inputs()
        cos, sin = self._rotary_caches()

        residual, pending = hidden, None
        # Layer i+1's tensors are read (and bf16 widened) on a second thread while layer i is
        # quantized: reading is otherwise a serial stretch that leaves the quantizer's cores idle.
        with worker_pool(1, "qwen-edge-prefetch") as reader:
            ahead = reader.submit(self._layer_tensors, 0) if n_layers else None
            for i in range(n_layers):
                self.progress("layers", i + 1, n_layers + 2)
                t = ahead.result()
                ahead = reader.submit(self._layer_tensors, i + 1) if i + 1 < n_layers else None
                scope = f"/model/layers.{i}/input_layernorm"
                if pending is None:
                    x = self._rms_norm(residual, t["input_norm"], scope)
                else:
                    x, residual = self._skip_norm(pending, residual, t["input_norm"], scope)
                attn = self._token_mixer(i, x, t, seqlens, total_len, cos, sin)
                x, residual = self._skip_norm(attn, residual, t["post_attention_norm"],
                                              f"/model/layers.{i}/post_attention_layernorm")
                pending = self._after_layer(i, self._mlp(i, x, t))
                del t

        self.progress("lm_head", n_layers + 1, n_layers + 2)
        final = self._read(globals_["final_norm"], gshapes["final_norm"])
        x, _ = self._skip_norm(pending, residual, final, "/model/norm")
        if keep:
            # 0 - keep rather than Neg: Neg is missing from some providers' tables (DirectML's here)
            start = g.one("Sub", [g.const([0], np.int64), LOGITS_TO_KEEP], "/lm_head/keep/Sub")
            x = g.one("Slice", [x, start, g.const([_INT64_MAX], np.int64), g.const([1], np.int64)],
                      "/lm_head/keep/Slice")
        logits = self._lm_head(x, embed_float_name)
        if self.elem != TensorProto.FLOAT:
            logits = g.one("Cast", [logits], "/lm_head/Cast", to=TensorProto.FLOAT)
        g.one("Identity", [logits], "/lm_head/output/Identity", outputs=["logits"])
        self.progress("lm_head", n_layers + 2, n_layers + 2)

    def _after_layer(self, i: int, out: str) -> str:
        """Layer i's last output (added to the residual by the next norm); a subclass may add to it."""
        return out

    def _embed_input(self) -> tuple[str, str | None]:
        """The first hidden states (the token embedding of `input_ids`), and the float table's name
        where a tied head may share it."""
        p = self.precision
        embed = self._read(self.adapter.GLOBAL_TENSORS["embed"], self.adapter.global_shapes(self.spec)["embed"])
        hidden = self.lin.embedding("input_ids", embed, "/model/embed_tokens", p.embeddings)
        return hidden, ("/model/embed_tokens/weight" if p.embeddings == "float" else None)

    def _lm_head(self, x: str, embed_float_name: str | None) -> str:
        s, p = self.spec, self.precision
        name = self.adapter.GLOBAL_TENSORS["lm_head"]
        shape = self.adapter.global_shapes(s)["lm_head"]
        if s.tie_word_embeddings:
            if self.ckpt.has(name):
                self.ckpt.read(name)  # stored redundantly by some exporters: consumed, not used
            if p.lm_head == "float" and embed_float_name is not None:
                return self.lin.tied_float_head(x, embed_float_name, "/lm_head",
                                                nbytes=shape[0] * shape[1] * np.dtype(self.np_dtype).itemsize)
            table = self.lin.embedding_table
            if table is not None and table[0] == p.lm_head:
                return self.lin.linear(x, None, "/lm_head", p.lm_head, shared_storage=True, quantized=table[1])
            weight = self._read(self.adapter.GLOBAL_TENSORS["embed"], shape)
            shared = p.lm_head == p.embeddings
        else:
            weight = self._read(name, shape)
            shared = False
        return self.lin.linear(x, weight, "/lm_head", p.lm_head, shared_storage=shared)
