"""The vision tower and the embedding merge of Qwen2.5-VL, as two fp32 ONNX graphs of standard ops.

vision.onnx turns the processor's patches into one feature row per merged 2x2 patch block:

    pixel_values     [patches, C*T*P*P]  the processor's rows (Conv3d with kernel == stride = a MatMul)
    image_grid_thw   [images, 3]         each image's (t, h, w) patch grid
  -> image_features  [patches / 4, text hidden]

onnxruntime-genai's contract for qwen2_5_vl. What transformers computes from the grids in Python
(the window order of merge blocks, each patch's (h, w) rotary position, its attention window and
frame) the graph computes with vectorised integer ops (`_grid_indices`): a block's image is found by
comparing its index with the images' first blocks, windows are ordered by a TopK over
`window id * blocks + block index`. Window blocks attend window by window (`_window_layout`: each
window's patches gathered into a padded [windows, S] layout); full-attention blocks (the
`fullatt_block_indexes`) attend over all patches masked to equal frame ids. Both are what
transformers' per-`cu_seqlens` attention computes. The tower stays float32: Qwen's vision MLP overflows fp16.

embedding.onnx looks the tokens up and puts the image features on the image-pad tokens, in order.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..arch.qwen2_5_vl import VisionSpec
from ..errors import CheckpointError, GraphError
from .builder import GraphBuilder

VISION_INPUTS = ("pixel_values", "image_grid_thw")
_NEG = np.float32(-1e30)


class VisionGraphBuilder:
    KIND = "qwen2_5_vl"

    def __init__(self, checkpoint, prefix: str, spec: VisionSpec, g: GraphBuilder):
        if spec.kind != self.KIND:
            raise GraphError(f"vision tower '{spec.kind}' is not built by {type(self).__name__}")
        self.ckpt, self.prefix, self.spec, self.g = checkpoint, prefix, spec, g
        self.parameters = 0

    def _read(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        array = self.ckpt.read_expected(self.prefix + name, shape)
        self.parameters += int(np.prod(shape))
        return array

    def _linear(self, x: str, name: str, out: int, inp: int, scope: str, bias: bool = True) -> str:
        g = self.g
        w = self._read(f"{name}.weight", (out, inp))
        y = g.one("MatMul", [x, g.weight(f"{scope}/weight", np.ascontiguousarray(w.T))], f"{scope}/MatMul")
        if bias:
            y = g.one("Add", [y, g.weight(f"{scope}/bias", self._read(f"{name}.bias", (out,)))], f"{scope}/Add")
        return y

    def _rms_norm(self, x: str, name: str, size: int, scope: str) -> str:
        g = self.g
        return g.one("SimplifiedLayerNormalization", [x, g.weight(f"{scope}/weight", self._read(name, (size,)))],
                     f"{scope}/SimplifiedLayerNormalization", axis=-1, epsilon=self.spec.norm_eps, stash_type=1)

    def _reorder(self, x: str, index: str, width: int, scope: str) -> str:
        """Rows grouped by merge block (4 consecutive rows), blocks gathered by `index`."""
        g, unit = self.g, self.spec.merge_unit
        grouped = g.one("Reshape", [x, g.const([-1, unit * width], np.int64)], f"{scope}/Reshape_in")
        picked = g.one("Gather", [grouped, index], f"{scope}/Gather", axis=0)
        return g.one("Reshape", [picked, g.const([-1, width], np.int64)], f"{scope}/Reshape_out")

    def _rotary(self) -> tuple[str, str]:
        """cos / sin [patches, 1, head_dim]: h angles then w angles, the pair repeated (rotate_half)."""
        g, s = self.g, self.spec
        quarter = s.head_dim // 4
        inv_freq = 1.0 / (s.rope_theta ** (np.arange(0, s.head_dim // 2, 2, dtype=np.float32) / (s.head_dim // 2)))
        scope = "/vision/rotary"
        pos = g.one("Cast", ["rotary_pos_ids"], f"{scope}/Cast", to=TensorProto.FLOAT)
        pos = g.one("Unsqueeze", [pos, g.const([2], np.int64)], f"{scope}/Unsqueeze")
        angles = g.one("Mul", [pos, g.weight(f"{scope}/inv_freq", inv_freq.reshape(1, 1, quarter))], f"{scope}/Mul")
        angles = g.one("Reshape", [angles, g.const([0, 1, 2 * quarter], np.int64)], f"{scope}/Reshape")
        angles = g.one("Concat", [angles, angles], f"{scope}/Concat", axis=-1)
        return g.one("Cos", [angles], f"{scope}/Cos"), g.one("Sin", [angles], f"{scope}/Sin")

    def _mask(self, ids: str, scope: str) -> str:
        """[1, patches, patches] additive mask: 0 where two patches share an id, else -1e30."""
        g = self.g
        rows = g.one("Unsqueeze", [ids, g.const([1], np.int64)], f"{scope}/Unsqueeze_rows")
        cols = g.one("Unsqueeze", [ids, g.const([0], np.int64)], f"{scope}/Unsqueeze_cols")
        same = g.one("Equal", [rows, cols], f"{scope}/Equal")
        mask = g.one("Where", [same, g.const(np.float32(0)), g.const(_NEG)], f"{scope}/Where")
        return g.one("Unsqueeze", [mask, g.const([0], np.int64)], f"{scope}/Unsqueeze")

    def _rotate(self, x: str, cos: str, sin: str, scope: str) -> str:
        g, half = self.g, self.spec.head_dim // 2
        x1, x2 = g.node("Split", [x, g.const([half, half], np.int64)], f"{scope}/Split", outputs=2, axis=-1)
        neg = g.one("Neg", [x2], f"{scope}/Neg")
        rotated = g.one("Concat", [neg, x1], f"{scope}/Concat", axis=-1)
        return g.one("Add", [g.one("Mul", [x, cos], f"{scope}/Mul_cos"),
                             g.one("Mul", [rotated, sin], f"{scope}/Mul_sin")], f"{scope}/Add")

    def _attention(self, i: int, x: str, cos: str, sin: str, mask: str | None) -> str:
        """Block i's attention: over the whole frame with `mask`, or (mask None) window by window, each
        window padded to the largest one's patch count (`_window_layout`)."""
        g, s = self.g, self.spec
        scope, name = f"/vision/blocks.{i}/attn", f"blocks.{i}.attn"
        qkv = self._linear(x, f"{name}.qkv", 3 * s.hidden_size, s.hidden_size, f"{scope}/qkv")
        qkv = g.one("Reshape", [qkv, g.const([0, 3, s.num_heads, s.head_dim], np.int64)], f"{scope}/Reshape_qkv")
        q, k, v = g.node("Split", [qkv, g.const([1, 1, 1], np.int64)], f"{scope}/Split", outputs=3, axis=1)
        heads = []
        for part, label in ((q, "q"), (k, "k"), (v, "v")):
            t = g.one("Squeeze", [part, g.const([1], np.int64)], f"{scope}/{label}/Squeeze")  # [N, heads, d]
            if label != "v":
                t = self._rotate(t, cos, sin, f"{scope}/{label}/rotary")
            if mask is None:  # -> [windows, heads, S, d]
                t = g.one("Concat", [t, g.const(np.zeros((1, s.num_heads, s.head_dim), np.float32))],
                          f"{scope}/{label}/pad", axis=0)
                t = g.one("Gather", [t, "/vision/windows/pad_index"], f"{scope}/{label}/Gather", axis=0)
                t = g.one("Reshape", [t, g.const([-1, self._window_slots, s.num_heads, s.head_dim], np.int64)],
                          f"{scope}/{label}/Reshape")
                heads.append(g.one("Transpose", [t], f"{scope}/{label}/Transpose", perm=[0, 2, 1, 3]))
            else:  # -> [heads, N, d]
                heads.append(g.one("Transpose", [t], f"{scope}/{label}/Transpose", perm=[1, 0, 2]))
        q, k, v = heads
        last2 = [0, 1, 3, 2] if mask is None else [0, 2, 1]
        kt = g.one("Transpose", [k], f"{scope}/k/Transpose_t", perm=last2)
        scores = g.one("MatMul", [q, kt], f"{scope}/scores/MatMul")
        scores = g.one("Mul", [scores, g.const(np.float32(s.head_dim ** -0.5))], f"{scope}/scores/Mul")
        scores = g.one("Add", [scores, "/vision/windows/key_mask" if mask is None else mask], f"{scope}/scores/Add")
        probs = g.one("Softmax", [scores], f"{scope}/Softmax", axis=-1)
        out = g.one("MatMul", [probs, v], f"{scope}/out/MatMul")
        if mask is None:
            out = g.one("Transpose", [out], f"{scope}/out/Transpose", perm=[0, 2, 1, 3])
            out = g.one("Reshape", [out, g.const([-1, s.hidden_size], np.int64)], f"{scope}/out/Reshape")
            out = g.one("Gather", [out, "/vision/windows/slot"], f"{scope}/out/Gather", axis=0)
        else:
            out = g.one("Transpose", [out], f"{scope}/out/Transpose", perm=[1, 0, 2])
            out = g.one("Reshape", [out, g.const([0, s.hidden_size], np.int64)], f"{scope}/out/Reshape")
        return self._linear(out, f"{name}.proj", s.hidden_size, s.hidden_size, f"{scope}/proj")

    def _window_layout(self) -> None:
        """Window attention without an all-patches mask: each patch's slot in a [windows, S] layout (S =
        the patches of a full window), the patch in each slot (N, a zero row, for padding), and a key
        mask for the padding. window_ids are sorted (window order), so a window's patches are a run."""
        g, s, sc = self.g, self.spec, "/vision/windows"
        i64 = np.int64
        size = s.window_size // s.patch_size
        self._window_slots = slots = size * size
        count = g.one("Shape", ["window_ids"], f"{sc}/count")
        index = g.one("Range", [g.const(i64(0)), g.one("Squeeze", [count], f"{sc}/count_scalar"), g.const(i64(1))],
                      f"{sc}/index")
        windows = g.one("Add", [g.one("ReduceMax", ["window_ids"], f"{sc}/last", keepdims=1), g.const([1], i64)],
                        f"{sc}/windows")
        zeros = g.one("Expand", [g.const(i64(0)), windows], f"{sc}/zeros")
        ones = g.one("Expand", [g.const(i64(1)), count], f"{sc}/ones")
        sizes = g.one("ScatterElements", [zeros, "window_ids", ones], f"{sc}/sizes", axis=0, reduction="add")
        start = g.one("CumSum", [sizes, g.const(i64(0))], f"{sc}/start", exclusive=1)
        rank = g.one("Sub", [index, g.one("Gather", [start, "window_ids"], f"{sc}/first", axis=0)], f"{sc}/rank")
        g.one("Add", [g.one("Mul", ["window_ids", g.const(i64(slots))], f"{sc}/base"), rank], f"{sc}/slot_add",
              outputs=[f"{sc}/slot"])
        total = g.one("Mul", [windows, g.const([slots], i64)], f"{sc}/total")
        empty = g.one("Expand", [g.one("Squeeze", [count], f"{sc}/pad_value"), total], f"{sc}/empty")
        g.one("ScatterElements", [empty, f"{sc}/slot", index], f"{sc}/pad_scatter", axis=0,
              outputs=[f"{sc}/pad_index"])
        valid = g.one("Less", [g.const(np.arange(slots, dtype=i64).reshape(1, slots)),
                               g.one("Unsqueeze", [sizes, g.const([1], i64)], f"{sc}/sizes_col")], f"{sc}/valid")
        mask = g.one("Where", [valid, g.const(np.float32(0)), g.const(_NEG)], f"{sc}/Where")
        g.one("Reshape", [mask, g.const([-1, 1, 1, slots], i64)], f"{sc}/key_mask_shape", outputs=[f"{sc}/key_mask"])

    def _mlp(self, i: int, x: str) -> str:
        g, s = self.g, self.spec
        scope, name = f"/vision/blocks.{i}/mlp", f"blocks.{i}.mlp"
        gate = self._linear(x, f"{name}.gate_proj", s.intermediate_size, s.hidden_size, f"{scope}/gate_proj")
        up = self._linear(x, f"{name}.up_proj", s.intermediate_size, s.hidden_size, f"{scope}/up_proj")
        act = self._activation(gate, f"{scope}/act")
        prod = g.one("Mul", [act, up], f"{scope}/Mul")
        return self._linear(prod, f"{name}.down_proj", s.hidden_size, s.intermediate_size, f"{scope}/down_proj")

    def _activation(self, x: str, scope: str) -> str:
        g = self.g
        if self.spec.hidden_act == "silu":
            return g.one("Mul", [x, g.one("Sigmoid", [x], f"{scope}/Sigmoid")], f"{scope}/Mul")
        approximate = "tanh" if self.spec.hidden_act == "gelu_pytorch_tanh" else "none"
        return g.one("Gelu", [x], f"{scope}/Gelu", approximate=approximate)

    def _grid_indices(self) -> None:
        """window_index, reverse_index [blocks]; rotary_pos_ids [patches, 2]; window_ids, frame_ids
        [patches] (all in window order), from image_grid_thw."""
        g, s = self.g, self.spec
        sc = "/vision/grid"
        i64 = np.int64

        def op(kind, inputs, name, **kw):
            return g.one(kind, inputs, f"{sc}/{name}", **kw)

        def col(k, name):
            return op("Gather", ["image_grid_thw", g.const(i64(k))], name, axis=1)

        def at(values, name):  # the per-image value of every block
            return op("Gather", [values, image], name, axis=0)

        m = g.const(i64(s.merge_size))
        t, lh, lw = col(0, "t"), op("Div", [col(1, "h"), m], "lh"), op("Div", [col(2, "w"), m], "lw")
        per_frame = op("Mul", [lh, lw], "per_frame")
        count = op("Mul", [t, per_frame], "count")
        zero = g.const(i64(0))
        block_start = op("CumSum", [count, zero], "block_start", exclusive=1)
        frame_start = op("CumSum", [t, zero], "frame_start", exclusive=1)
        total = op("ReduceSum", [count], "total", keepdims=1)
        index = op("Range", [zero, op("Squeeze", [total], "total_scalar"), g.const(i64(1))], "index")
        after = op("GreaterOrEqual", [op("Unsqueeze", [index, g.const([1], i64)], "index_col"),
                                      op("Unsqueeze", [block_start, g.const([0], i64)], "start_row")], "after")
        image = op("Sub", [op("ReduceSum", [op("Cast", [after], "after_int", to=TensorProto.INT64),
                                             g.const([1], i64)], "images_before", keepdims=0), g.const(i64(1))], "image")
        local = op("Sub", [index, at(block_start, "block_start_b")], "local")
        frame_size = at(per_frame, "per_frame_b")
        frame = op("Div", [local, frame_size], "frame")
        within = op("Mod", [local, frame_size], "within")
        width = at(lw, "lw_b")
        row, column = op("Div", [within, width], "row"), op("Mod", [within, width], "column")
        frame_id = op("Add", [at(frame_start, "frame_start_b"), frame], "frame_id")
        if s.window_size:
            size = g.const(i64(s.window_size // (s.merge_size * s.patch_size)))
            ceil = g.const(i64(s.window_size // (s.merge_size * s.patch_size) - 1))
            nh = op("Div", [op("Add", [lh, ceil], "lh_up"), size], "windows_h")
            nw = op("Div", [op("Add", [lw, ceil], "lw_up"), size], "windows_w")
            frame_windows = op("Mul", [nh, nw], "frame_windows")
            window_start = op("CumSum", [op("Mul", [t, frame_windows], "image_windows"), zero], "window_start",
                              exclusive=1)
            in_frame = op("Add", [op("Mul", [op("Div", [row, size], "window_row"), at(nw, "windows_w_b")],
                                     "window_row_start"), op("Div", [column, size], "window_column")], "in_frame")
            window = op("Add", [op("Add", [at(window_start, "window_start_b"),
                                           op("Mul", [frame, at(frame_windows, "frame_windows_b")], "frame_offset")],
                                   "window_base"), in_frame], "window")
        else:
            window = frame_id
        key = op("Add", [op("Mul", [window, op("Squeeze", [total], "total_key")], "key_major"), index], "key")
        g.node("TopK", [key, total], f"{sc}/TopK", outputs=[f"{sc}/TopK/values", "window_index"], largest=0, sorted=1)
        g.one("ScatterElements", [op("Mul", [index, zero], "zeros"), "window_index", index], f"{sc}/reverse",
              outputs=["reverse_index"], axis=0)
        unit = s.merge_unit
        per_patch = self._per_patch
        self.block_height, self.block_width = at(col(1, "h_grid"), "h_b"), at(col(2, "w_grid"), "w_b")

        g.one("Identity", [per_patch(window, "window_patch")], f"{sc}/window_ids", outputs=["window_ids"])
        g.one("Identity", [per_patch(frame_id, "frame_patch")], f"{sc}/frame_ids", outputs=["frame_ids"])
        sub = np.arange(unit, dtype=i64)
        hpos = per_patch(row, "h_patch", sub // s.merge_size)
        wpos = per_patch(column, "w_patch", sub % s.merge_size)
        g.one("Concat", [op("Unsqueeze", [hpos, g.const([1], i64)], "h_col"),
                         op("Unsqueeze", [wpos, g.const([1], i64)], "w_col")], f"{sc}/positions",
              outputs=["rotary_pos_ids"], axis=1)

    # Hooks a tower of another kind overrides (graph/vision_qwen3.py) ------------------------------
    def _norm(self, x: str, name: str, size: int, scope: str) -> str:
        return self._rms_norm(x, f"{name}.weight", size, scope)

    def _patch_embed(self) -> str:
        s = self.spec
        w = self._read("patch_embed.proj.weight", (s.hidden_size, s.in_channels, s.temporal_patch_size,
                                                   s.patch_size, s.patch_size))
        return self.g.one("MatMul", ["pixel_values", self.g.weight("/vision/patch_embed/weight",
                                                                   np.ascontiguousarray(w.reshape(s.hidden_size, -1).T))],
                          "/vision/patch_embed/MatMul")

    def _merger(self, x: str) -> str:
        g, s = self.g, self.spec
        merged = s.hidden_size * s.merge_unit
        x = self._rms_norm(x, "merger.ln_q.weight", s.hidden_size, "/vision/merger/ln_q")
        x = g.one("Reshape", [x, g.const([-1, merged], np.int64)], "/vision/merger/Reshape")
        x = self._linear(x, "merger.mlp.0", merged, merged, "/vision/merger/fc1")
        x = g.one("Gelu", [x], "/vision/merger/Gelu")
        return self._linear(x, "merger.mlp.2", s.out_hidden_size, merged, "/vision/merger/fc2")

    def _after_block(self, i: int, x: str) -> None:
        """Called with each block's output (Qwen3-VL taps some for DeepStack)."""

    def _finish(self) -> None:
        """Outputs besides image_features."""

    def _per_patch(self, values: str, name: str, offsets: np.ndarray | None = None) -> str:
        """A per-block value [blocks] in window order, one per patch [patches]: repeated, or
        value * merge + offsets (a patch's row or column inside its block)."""
        g, s, sc = self.g, self.spec, "/vision/grid"
        picked = g.one("Unsqueeze", [g.one("Gather", [values, "window_index"], f"{sc}/{name}/Gather", axis=0),
                                     g.const([1], np.int64)], f"{sc}/{name}/Unsqueeze")
        if offsets is None:
            wide = g.one("Expand", [picked, g.const([1, s.merge_unit], np.int64)], f"{sc}/{name}/Expand")
        else:
            wide = g.one("Add", [g.one("Mul", [picked, g.const(np.int64(s.merge_size))], f"{sc}/{name}/Mul"),
                                 g.const(offsets.reshape(1, s.merge_unit))], f"{sc}/{name}/Add")
        return g.one("Reshape", [wide, g.const([-1], np.int64)], f"{sc}/{name}/Reshape")

    def build(self) -> None:
        g, s = self.g, self.spec
        g.add_input("pixel_values", TensorProto.FLOAT, ["num_patches", s.patch_dim])
        g.add_input("image_grid_thw", TensorProto.INT64, ["num_images", 3])
        g.add_output("image_features", TensorProto.FLOAT, ["num_merged", s.out_hidden_size])
        self._grid_indices()
        x = self._reorder(self._patch_embed(), "window_index", s.hidden_size, "/vision/window_order")
        cos, sin = self._rotary()
        full_mask = self._mask("frame_ids", "/vision/full_mask")
        window_mask = full_mask
        if s.window_size and any(i not in s.fullatt_blocks for i in range(s.depth)):
            self._window_layout()
            window_mask = None
        for i in range(s.depth):
            scope = f"/vision/blocks.{i}"
            mask = full_mask if i in s.fullatt_blocks else window_mask
            h = self._norm(x, f"blocks.{i}.norm1", s.hidden_size, f"{scope}/norm1")
            x = g.one("Add", [x, self._attention(i, h, cos, sin, mask)], f"{scope}/attn/residual")
            h = self._norm(x, f"blocks.{i}.norm2", s.hidden_size, f"{scope}/norm2")
            x = g.one("Add", [x, self._mlp(i, h)], f"{scope}/mlp/residual")
            self._after_block(i, x)
        g.one("Gather", [self._merger(x), "reverse_index"], "/vision/image_order/Gather", axis=0,
              outputs=["image_features"])
        self._finish()


def build_embedding(checkpoint, embed_name: str, vocab: int, hidden: int, image_token_id: int,
                    g: GraphBuilder, deepstack: int = 0) -> None:
    """embedding.onnx: input_ids [batch, seq] + image_features [n, hidden] -> inputs_embeds.

    The k-th image-pad token (in reading order) takes feature row k; a prompt without images feeds
    zero rows. The table is float32, as the decoder's input is. With `deepstack` (Qwen3-VL) it also
    places deepstack_features [deepstack, n, hidden] the same way, zeros elsewhere: deepstack_embeds
    [deepstack, batch, seq, hidden]."""
    actual = tuple(checkpoint.tensor_info(embed_name).shape) if checkpoint.has(embed_name) else None
    if actual != (vocab, hidden):
        raise CheckpointError(f"{checkpoint.path.name}: tensor '{embed_name}' has shape "
                              f"{list(actual) if actual else 'missing'}, config.json implies {[vocab, hidden]}")
    table = g.weight("/embed_tokens/weight", checkpoint.read(embed_name, dtype=np.float32))
    g.add_input("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"])
    g.add_input("image_features", TensorProto.FLOAT, ["num_image_tokens", hidden])
    g.add_output("inputs_embeds", TensorProto.FLOAT, ["batch_size", "sequence_length", hidden])
    scope = "/embed_merge"
    text = g.one("Gather", [table, "input_ids"], "/embed_tokens/Gather", axis=0)
    is_image = g.one("Equal", ["input_ids", g.const(np.int64(image_token_id))], f"{scope}/Equal")
    flat = g.one("Reshape", [g.one("Cast", [is_image], f"{scope}/Cast", to=TensorProto.INT64),
                             g.const([-1], np.int64)], f"{scope}/Reshape")
    order = g.one("Sub", [g.one("CumSum", [flat, g.const(np.int64(0))], f"{scope}/CumSum"),
                          g.const(np.int64(1))], f"{scope}/Sub")
    order = g.one("Max", [order, g.const(np.int64(0))], f"{scope}/Max")
    # One zero row past the features: a prompt with no image (or a stray pad) never indexes an empty tensor.
    padded = g.one("Concat", ["image_features", g.const(np.zeros((1, hidden), np.float32))], f"{scope}/Concat", axis=0)
    count = g.one("Gather", [g.one("Shape", ["image_features"], f"{scope}/Shape"), g.const(np.int64(0))],
                  f"{scope}/Count", axis=0)
    order = g.one("Min", [order, count], f"{scope}/Min")
    picked = g.one("Gather", [padded, order], f"{scope}/Gather", axis=0)
    picked = g.one("Reshape", [picked, g.one("Shape", [text], f"{scope}/Shape_text")], f"{scope}/Reshape_back")
    mask = g.one("Unsqueeze", [is_image, g.const([-1], np.int64)], f"{scope}/Unsqueeze")
    g.one("Where", [mask, picked, text], f"{scope}/Where", outputs=["inputs_embeds"])
    if deepstack:
        g.add_input("deepstack_features", TensorProto.FLOAT, [deepstack, "num_image_tokens", hidden])
        g.add_output("deepstack_embeds", TensorProto.FLOAT, [deepstack, "batch_size", "sequence_length", hidden])
        ds = "/deepstack_merge"
        padded = g.one("Concat", ["deepstack_features", g.const(np.zeros((deepstack, 1, hidden), np.float32))],
                       f"{ds}/Concat", axis=1)
        picked = g.one("Gather", [padded, order], f"{ds}/Gather", axis=1)  # [k, batch*seq, hidden]
        shape = g.one("Concat", [g.const([deepstack], np.int64), g.one("Shape", [text], f"{ds}/Shape")], f"{ds}/shape",
                      axis=0)
        picked = g.one("Reshape", [picked, shape], f"{ds}/Reshape")
        g.one("Where", [mask, picked, g.const(np.float32(0))], f"{ds}/Where", outputs=["deepstack_embeds"])


__all__ = ["VISION_INPUTS", "VisionGraphBuilder", "build_embedding"]
