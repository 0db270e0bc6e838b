"""Static-shape, standard-op decoder graphs for NPUs: a prefill chunk and a one-token decode.

Both graphs take `input_ids` and `position_ids` (int32, [1, T]), an additive float
`attention_mask` [1, 1, T, S + T] and, per layer, a fixed-size cache of S slots: keys stored
transposed (`past_key.{i}` [1, kv_heads, head_dim, S]) so attention needs no transpose of the
cache, values as `past_value.{i}` [1, kv_heads, S, head_dim]. They return `logits` [1, T, vocab]
and only the T new keys/values (`new_key.{i}` [1, kv_heads, head_dim, T], `new_value.{i}`);
the runner writes those into the cache. Only ONNX-standard operators are used (no
com.microsoft), int32 indices, rotary tables gathered by position, grouped-query attention by
folding the query heads of a group into the row axis (no repeated KV), and the 1/sqrt(d)
attention scale folded into the query weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from onnx import TensorProto

from ..arch import ArchAdapter, ArchSpec, rope_tables
from ..errors import CheckpointError, GraphError
from .builder import IR_VERSION, GraphBuilder
from .writer import ExternalDataWriter, save_model

Progress = Callable[[str, int, int], None]
OPSET_RMS = 23


def io_names(num_layers: int) -> dict[str, list[str]]:
    caches = [f"past_{kind}.{i}" for i in range(num_layers) for kind in ("key", "value")]
    new = [f"new_{kind}.{i}" for i in range(num_layers) for kind in ("key", "value")]
    return {"inputs": ["input_ids", "position_ids", "attention_mask", *caches], "outputs": ["logits", *new]}


@dataclass(frozen=True)
class StaticShape:
    tokens: int   # T: tokens per call
    context: int  # S: cache slots


class _GraphEmitter:
    """Emits one static graph (prefill or decode) into its own GraphBuilder."""

    def __init__(self, g: GraphBuilder, spec: ArchSpec, shape: StaticShape, norm_style: str):
        self.g, self.s, self.shape, self.norm_style = g, spec, shape, norm_style
        t, S, s = shape.tokens, shape.context, spec
        g.add_input("input_ids", TensorProto.INT32, [1, t])
        g.add_input("position_ids", TensorProto.INT32, [1, t])
        g.add_input("attention_mask", TensorProto.FLOAT, [1, 1, t, S + t])
        for i in range(s.num_layers):
            g.add_input(f"past_key.{i}", TensorProto.FLOAT, [1, s.num_kv_heads, s.head_dim, S])
            g.add_input(f"past_value.{i}", TensorProto.FLOAT, [1, s.num_kv_heads, S, s.head_dim])
        g.add_output("logits", TensorProto.FLOAT, [1, t, s.vocab_size])
        for i in range(s.num_layers):
            g.add_output(f"new_key.{i}", TensorProto.FLOAT, [1, s.num_kv_heads, s.head_dim, t])
            g.add_output(f"new_value.{i}", TensorProto.FLOAT, [1, s.num_kv_heads, t, s.head_dim])

    def c(self, values, dtype=np.int64) -> str:
        return self.g.const(np.asarray(values, dtype=dtype))

    def rms_norm(self, x: str, weight: str, scope: str) -> str:
        g, eps = self.g, self.s.rms_norm_eps
        if self.norm_style == "rms_op":
            return g.one("RMSNormalization", [x, weight], f"{scope}/RMSNormalization", axis=-1, epsilon=eps)
        sq = g.one("Mul", [x, x], f"{scope}/Mul_square")
        mean = g.one("ReduceMean", [sq, self.c([-1])], f"{scope}/ReduceMean", keepdims=1)
        var = g.one("Add", [mean, g.const(np.float32(eps))], f"{scope}/Add_eps")
        rstd = g.one("Reciprocal", [g.one("Sqrt", [var], f"{scope}/Sqrt")], f"{scope}/Reciprocal")
        return g.one("Mul", [g.one("Mul", [x, rstd], f"{scope}/Mul_norm"), weight], f"{scope}/Mul_weight")

    def linear(self, x: str, weight: str, bias: str | None, scope: str) -> str:
        y = self.g.one("MatMul", [x, weight], f"{scope}/MatMul")
        return self.g.one("Add", [y, bias], f"{scope}/Add") if bias else y

    def rotary_tables(self, cos_table: str, sin_signed_table: str) -> tuple[str, str]:
        """cos [1, T, 1, d] and concat(-sin, sin) [1, T, 1, d] for the call's positions."""
        g = self.g
        out = []
        for name, table in (("cos", cos_table), ("sin", sin_signed_table)):
            rows = g.one("Gather", [table, "position_ids"], f"/model/rotary/{name}/Gather", axis=0)
            out.append(g.one("Unsqueeze", [rows, self.c([2])], f"/model/rotary/{name}/Unsqueeze"))
        return out[0], out[1]

    def rotate(self, x: str, cos: str, sin: str, scope: str) -> str:
        """x * cos + rotate_half(x) * sin on [1, T, heads, d] (sin already carries rotate_half's sign)."""
        g, half = self.g, self.s.head_dim // 2
        x1, x2 = g.node("Split", [x, self.c([half, half])], f"{scope}/Split", outputs=2, axis=-1)
        swapped = g.one("Concat", [x2, x1], f"{scope}/Concat", axis=-1)
        return g.one("Add", [g.one("Mul", [x, cos], f"{scope}/Mul_cos"),
                             g.one("Mul", [swapped, sin], f"{scope}/Mul_sin")], f"{scope}/Add")

    def attention(self, i: int, x: str, w: dict[str, str], cos: str, sin: str, mask: str) -> str:
        g, s, t = self.g, self.s, self.shape.tokens
        scope = f"/model/layers.{i}/attn"
        d, h, kvh = s.head_dim, s.num_heads, s.num_kv_heads
        q = self.linear(x, w["q"], w.get("q_bias"), f"{scope}/q_proj")
        k = self.linear(x, w["k"], w.get("k_bias"), f"{scope}/k_proj")
        v = self.linear(x, w["v"], w.get("v_bias"), f"{scope}/v_proj")
        q = g.one("Reshape", [q, self.c([1, t, h, d])], f"{scope}/q/Reshape")
        k = g.one("Reshape", [k, self.c([1, t, kvh, d])], f"{scope}/k/Reshape")
        v = g.one("Reshape", [v, self.c([1, t, kvh, d])], f"{scope}/v/Reshape")
        if s.qk_norm:
            q = self.rms_norm(q, w["q_norm"], f"{scope}/q_norm")
            k = self.rms_norm(k, w["k_norm"], f"{scope}/k_norm")
        q = self.rotate(q, cos, sin, f"{scope}/q_rotary")
        k = self.rotate(k, cos, sin, f"{scope}/k_rotary")
        q = g.one("Transpose", [q], f"{scope}/q/Transpose", perm=[0, 2, 1, 3])          # [1, h, T, d]
        q = g.one("Reshape", [q, self.c([1, kvh, (h // kvh) * t, d])], f"{scope}/q/Reshape_groups")
        g.one("Transpose", [k], f"{scope}/k/Transpose", perm=[0, 2, 3, 1], outputs=[f"new_key.{i}"])
        g.one("Transpose", [v], f"{scope}/v/Transpose", perm=[0, 2, 1, 3], outputs=[f"new_value.{i}"])
        keys = g.one("Concat", [f"past_key.{i}", f"new_key.{i}"], f"{scope}/k/Concat", axis=3)
        values = g.one("Concat", [f"past_value.{i}", f"new_value.{i}"], f"{scope}/v/Concat", axis=2)
        scores = g.one("MatMul", [q, keys], f"{scope}/scores/MatMul")                 # [1, kvh, g*T, S+T]
        scores = g.one("Add", [scores, mask], f"{scope}/scores/Add_mask")
        probs = g.one("Softmax", [scores], f"{scope}/Softmax", axis=-1)
        out = g.one("MatMul", [probs, values], f"{scope}/context/MatMul")             # [1, kvh, g*T, d]
        out = g.one("Reshape", [out, self.c([1, h, t, d])], f"{scope}/context/Reshape_heads")
        out = g.one("Transpose", [out], f"{scope}/context/Transpose", perm=[0, 2, 1, 3])
        out = g.one("Reshape", [out, self.c([1, t, h * d])], f"{scope}/context/Reshape")
        return self.linear(out, w["o"], None, f"{scope}/o_proj")

    def grouped_mask(self) -> str:
        """The [1, 1, T, S+T] mask repeated for the query heads folded into rows: [1, 1, g*T, S+T]."""
        group = self.s.num_heads // self.s.num_kv_heads
        if group == 1:
            return "attention_mask"
        return self.g.one("Concat", ["attention_mask"] * group, "/model/attn_mask/Concat_groups", axis=2)

    def mlp(self, i: int, x: str, w: dict[str, str]) -> str:
        g, scope = self.g, f"/model/layers.{i}/mlp"
        gate = self.linear(x, w["gate"], None, f"{scope}/gate_proj")
        up = self.linear(x, w["up"], None, f"{scope}/up_proj")
        act = g.one("Mul", [gate, g.one("Sigmoid", [gate], f"{scope}/act/Sigmoid")], f"{scope}/act/Mul")
        return self.linear(g.one("Mul", [act, up], f"{scope}/Mul"), w["down"], None, f"{scope}/down_proj")


class StaticDecoderPair:
    """Builds the prefill and decode graphs from one read of the checkpoint.

    Both GraphBuilders write through the same ExternalDataWriter under the same initializer
    names, so every weight is stored once and both graphs point at the same bytes.
    """

    def __init__(self, ckpt, adapter: ArchAdapter, spec: ArchSpec, graphs: dict[str, tuple[GraphBuilder, StaticShape]],
                 norm_style: str = "rms_op", progress: Progress | None = None):
        if spec.rope.rope_type == "dynamic":
            raise GraphError("npu-qnn: dynamic (NTK) rope scaling is not supported by the static graphs")
        if any(spec.sliding_windows):
            raise GraphError("npu-qnn: sliding-window attention is not supported by the static graphs")
        if spec.rope.rotary_dim != spec.head_dim:
            raise GraphError("npu-qnn: partial rotary embeddings are not supported by the static graphs")
        self.ckpt, self.adapter, self.spec = ckpt, adapter, spec
        self.emitters = {name: _GraphEmitter(g, spec, shape, norm_style) for name, (g, shape) in graphs.items()}
        self.context = max(shape.context for _, shape in graphs.values())
        self.progress = progress or (lambda stage, done, total: None)
        self.parameters = 0

    def _read(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        array = self.ckpt.read_expected(name, shape)
        self.parameters += int(np.prod(shape))
        return array

    def _weight(self, name: str, array: np.ndarray) -> str:
        for e in self.emitters.values():
            e.g.weight(name, np.ascontiguousarray(array.astype(np.float32)))
        return name

    def build(self) -> None:
        s, n = self.spec, self.spec.num_layers
        gt, gs = self.adapter.GLOBAL_TENSORS, self.adapter.global_shapes(s)
        self.progress("graphs", 0, n + 2)
        embed = self._read(gt["embed"], gs["embed"])
        embed_name = self._weight("/model/embed_tokens/weight", embed)
        cos, sin = rope_tables(s.rope, self.context, s.max_positions)
        cos_name = self._weight("/model/rotary/cos_table", np.concatenate([cos, cos], axis=1))
        sin_name = self._weight("/model/rotary/sin_signed_table", np.concatenate([-sin, sin], axis=1))
        state = {}
        for key, e in self.emitters.items():
            hidden = e.g.one("Gather", [embed_name, "input_ids"], "/model/embed_tokens/Gather", axis=0)
            state[key] = (hidden, *e.rotary_tables(cos_name, sin_name), e.grouped_mask())
        scale = float(s.head_dim) ** -0.5
        for i in range(n):
            self.progress("graphs", i + 1, n + 2)
            names = self.adapter.layer_tensor_names(s, i)
            shapes = self.adapter.expected_shapes(s, i)
            t = {role: self._read(names[role], shapes[role]) for role in names}
            p = f"/model/layers.{i}"
            w = {
                "input_norm": self._weight(f"{p}/input_layernorm/weight", t["input_norm"]),
                "post_norm": self._weight(f"{p}/post_attention_layernorm/weight", t["post_attention_norm"]),
                "k": self._weight(f"{p}/attn/k_proj/weight", t["k_proj"].T),
                "v": self._weight(f"{p}/attn/v_proj/weight", t["v_proj"].T),
                "o": self._weight(f"{p}/attn/o_proj/weight", t["o_proj"].T),
                "gate": self._weight(f"{p}/mlp/gate_proj/weight", t["gate_proj"].T),
                "up": self._weight(f"{p}/mlp/up_proj/weight", t["up_proj"].T),
                "down": self._weight(f"{p}/mlp/down_proj/weight", t["down_proj"].T),
            }
            if s.qk_norm:  # the attention scale goes after the norm, into its weight
                w["q"] = self._weight(f"{p}/attn/q_proj/weight", t["q_proj"].T)
                w["q_norm"] = self._weight(f"{p}/attn/q_norm/weight", t["q_norm"] * scale)
                w["k_norm"] = self._weight(f"{p}/attn/k_norm/weight", t["k_norm"])
            else:
                w["q"] = self._weight(f"{p}/attn/q_proj/weight", t["q_proj"].T * scale)
            if s.attention_bias:
                w["q_bias"] = self._weight(f"{p}/attn/q_proj/bias", t["q_bias"] * (1.0 if s.qk_norm else scale))
                w["k_bias"] = self._weight(f"{p}/attn/k_proj/bias", t["k_bias"])
                w["v_bias"] = self._weight(f"{p}/attn/v_proj/bias", t["v_bias"])
            for key, e in self.emitters.items():
                hidden, cos_t, sin_t, mask = state[key]
                x = e.rms_norm(hidden, w["input_norm"], f"{p}/input_layernorm")
                hidden = e.g.one("Add", [hidden, e.attention(i, x, w, cos_t, sin_t, mask)], f"{p}/attn/Add_residual")
                x = e.rms_norm(hidden, w["post_norm"], f"{p}/post_attention_layernorm")
                hidden = e.g.one("Add", [hidden, e.mlp(i, x, w)], f"{p}/mlp/Add_residual")
                state[key] = (hidden, cos_t, sin_t, mask)
            del t
        self.progress("graphs", n + 1, n + 2)
        final = self._weight("/model/norm/weight", self._read(gt["final_norm"], gs["final_norm"]))
        if s.tie_word_embeddings:
            if self.ckpt.has(gt["lm_head"]):
                self.ckpt.read(gt["lm_head"])  # stored redundantly by some exporters: consumed, not used
            head = embed
        else:
            head = self._read(gt["lm_head"], gs["lm_head"])
        # The head gets its own [hidden, vocab] copy: the embedding Gather and the head MatMul are
        # quantized along different axes.
        head_name = self._weight("/lm_head/weight", head.T)
        for key, e in self.emitters.items():
            x = e.rms_norm(state[key][0], final, "/model/norm")
            e.g.one("MatMul", [x, head_name], "/lm_head/MatMul", outputs=["logits"])
        self.progress("graphs", n + 2, n + 2)


def finish_model(g: GraphBuilder, doc: str, norm_style: str):
    """The ModelProto of one emitted graph, with the opset its operators need."""
    from onnx import helper

    opset = OPSET_RMS if norm_style == "rms_op" else 21
    graph = helper.make_graph(g.nodes, g.name, g.inputs, g.outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="qwen-edge",
                              doc_string=doc)
    model.ir_version = IR_VERSION if opset <= 21 else 11
    return model


# The float pair as files: both graphs over one shared external-data file.
PREFILL_FILE = "prefill.onnx"
DECODE_FILE = "decode.onnx"
WEIGHTS_FILE = "weights.onnx.data"


@dataclass(frozen=True)
class FloatPair:
    prefill: Path
    decode: Path
    spec: ArchSpec
    parameters: int
    op_counts: dict[str, dict[str, int]]


def write_float_pair(ckpt, adapter, spec: ArchSpec, directory: Path, *, context: int, chunk: int,
                     norm_style: str, progress=None) -> FloatPair:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    writer = ExternalDataWriter(directory / WEIGHTS_FILE)
    builders = {"prefill": GraphBuilder(writer, name=f"qwen_edge_{spec.architecture}_prefill"),
                "decode": GraphBuilder(writer, name=f"qwen_edge_{spec.architecture}_decode")}
    shapes = {"prefill": StaticShape(chunk, context), "decode": StaticShape(1, context)}
    try:
        pair = StaticDecoderPair(ckpt, adapter, spec, {k: (builders[k], shapes[k]) for k in builders},
                                 norm_style=norm_style, progress=progress)
        pair.build()
    finally:
        writer.close()
    leftover = ckpt.unconsumed()
    if leftover:
        raise CheckpointError(f"{Path(ckpt.path).name}: {len(leftover)} tensor(s) not used by the "
                              f"{spec.architecture} adapter, first '{leftover[0]}'")
    paths = {"prefill": directory / PREFILL_FILE, "decode": directory / DECODE_FILE}
    for key, g in builders.items():
        save_model(finish_model(g, f"{spec.architecture} static {key} graph ({shapes[key].tokens} tokens, "
                                   f"{context} cache slots)", norm_style), paths[key])
    return FloatPair(paths["prefill"], paths["decode"], spec, pair.parameters,
                     {k: dict(sorted(g.op_counts.items())) for k, g in builders.items()})
