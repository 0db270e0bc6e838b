"""Qwen3-VL's vision tower as a local delta on VisionGraphBuilder: patch embedding with a bias plus a
learned position table resampled (bilinear, align_corners) to each image's patch grid, LayerNorm
blocks with a plain GELU-tanh MLP, full attention per image (no windows), the merger under LayerNorm,
and DeepStack: the outputs of `deepstack_visual_indexes` blocks go through mergers of their own
(LayerNorm after the 2x2 shuffle) and leave as `deepstack_features` [k, merged patches, text hidden],
which the decoder adds to its first k layers' outputs at the image tokens (graph/mrope_decoder.py).
"""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from .vision import VisionGraphBuilder


class Qwen3VisionGraphBuilder(VisionGraphBuilder):
    KIND = "qwen3_vl"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._deepstack: list[str] = []

    def _norm(self, x: str, name: str, size: int, scope: str) -> str:
        g = self.g
        weight = g.weight(f"{scope}/weight", self._read(f"{name}.weight", (size,)))
        bias = g.weight(f"{scope}/bias", self._read(f"{name}.bias", (size,)))
        return g.one("LayerNormalization", [x, weight, bias], f"{scope}/LayerNormalization", axis=-1,
                     epsilon=self.spec.norm_eps)

    def _mlp(self, i: int, x: str) -> str:
        s, scope, name = self.spec, f"/vision/blocks.{i}/mlp", f"blocks.{i}.mlp"
        h = self._linear(x, f"{name}.linear_fc1", s.intermediate_size, s.hidden_size, f"{scope}/fc1")
        h = self._activation(h, f"{scope}/act")
        return self._linear(h, f"{name}.linear_fc2", s.hidden_size, s.intermediate_size, f"{scope}/fc2")

    def _patch_embed(self) -> str:
        g, s = self.g, self.spec
        x = super()._patch_embed()
        x = g.one("Add", [x, g.weight("/vision/patch_embed/bias", self._read("patch_embed.proj.bias", (s.hidden_size,)))],
                  "/vision/patch_embed/Add")
        return g.one("Add", [x, self._position_embedding()], "/vision/pos_embed/Add")

    def _position_embedding(self) -> str:
        """The side x side table, bilinearly resampled (align_corners) at every patch's (row, col)."""
        g, s, sc = self.g, self.spec, "/vision/pos_embed"
        side = math.isqrt(s.num_position_embeddings)
        table = g.weight(f"{sc}/weight", self._read("pos_embed.weight", (s.num_position_embeddings, s.hidden_size)))
        f32 = TensorProto.FLOAT
        taps, weights = {}, {}
        for axis, (extent, label) in enumerate(((self.block_height, "h"), (self.block_width, "w"))):
            pos = g.one("Gather", ["rotary_pos_ids", g.const(np.int64(axis))], f"{sc}/{label}/pos", axis=1)
            size = g.one("Cast", [self._per_patch(extent, f"{label}_size")], f"{sc}/{label}/size", to=f32)
            span = g.one("Max", [g.one("Sub", [size, g.const(np.float32(1))], f"{sc}/{label}/size_m1"),
                                 g.const(np.float32(1))], f"{sc}/{label}/span")
            src = g.one("Div", [g.one("Mul", [g.one("Cast", [pos], f"{sc}/{label}/pos_f", to=f32),
                                              g.const(np.float32(side - 1))], f"{sc}/{label}/scaled"), span],
                        f"{sc}/{label}/src")
            floor = g.one("Floor", [src], f"{sc}/{label}/floor")
            frac = g.one("Sub", [src, floor], f"{sc}/{label}/frac")
            base = g.one("Cast", [floor], f"{sc}/{label}/base", to=TensorProto.INT64)
            for k in (0, 1):
                taps[label, k] = g.one("Clip", [g.one("Add", [base, g.const(np.int64(k))], f"{sc}/{label}/tap{k}/Add"),
                                                g.const(np.int64(0)), g.const(np.int64(side - 1))],
                                       f"{sc}/{label}/tap{k}")
                dist = g.one("Abs", [g.one("Sub", [frac, g.const(np.float32(k))], f"{sc}/{label}/w{k}/Sub")],
                             f"{sc}/{label}/w{k}/Abs")
                weights[label, k] = g.one("Max", [g.one("Sub", [g.const(np.float32(1)), dist], f"{sc}/{label}/w{k}/one"),
                                                  g.const(np.float32(0))], f"{sc}/{label}/w{k}")
        rows = []
        for a in (0, 1):
            for b in (0, 1):
                index = g.one("Add", [g.one("Mul", [taps["h", a], g.const(np.int64(side))], f"{sc}/i{a}{b}/Mul"),
                                      taps["w", b]], f"{sc}/i{a}{b}")
                weight = g.one("Mul", [weights["h", a], weights["w", b]], f"{sc}/p{a}{b}")
                row = g.one("Gather", [table, index], f"{sc}/r{a}{b}", axis=0)
                rows.append(g.one("Mul", [row, g.one("Unsqueeze", [weight, g.const([1], np.int64)], f"{sc}/p{a}{b}/col")],
                                  f"{sc}/r{a}{b}/Mul"))
        total = g.one("Add", [rows[0], rows[1]], f"{sc}/sum01")
        total = g.one("Add", [total, rows[2]], f"{sc}/sum2")
        return g.one("Add", [total, rows[3]], f"{sc}/sum3")

    def _shuffle_merger(self, x: str, prefix: str, scope: str, post_norm: bool) -> str:
        g, s = self.g, self.spec
        merged = s.hidden_size * s.merge_unit
        if not post_norm:
            x = self._norm(x, f"{prefix}.norm", s.hidden_size, f"{scope}/norm")
        x = g.one("Reshape", [x, g.const([-1, merged], np.int64)], f"{scope}/Reshape")
        if post_norm:
            x = self._norm(x, f"{prefix}.norm", merged, f"{scope}/norm")
        x = self._linear(x, f"{prefix}.linear_fc1", merged, merged, f"{scope}/fc1")
        x = g.one("Gelu", [x], f"{scope}/Gelu")
        return self._linear(x, f"{prefix}.linear_fc2", s.out_hidden_size, merged, f"{scope}/fc2")

    def _merger(self, x: str) -> str:
        return self._shuffle_merger(x, "merger", "/vision/merger", post_norm=False)

    def _after_block(self, i: int, x: str) -> None:
        if i in self.spec.deepstack_layers:
            j = self.spec.deepstack_layers.index(i)
            scope = f"/vision/deepstack.{j}"
            out = self._shuffle_merger(x, f"deepstack_merger_list.{j}", scope, post_norm=True)
            out = self.g.one("Gather", [out, "reverse_index"], f"{scope}/image_order", axis=0)
            self._deepstack.append(self.g.one("Unsqueeze", [out, self.g.const([0], np.int64)], f"{scope}/Unsqueeze"))

    def _finish(self) -> None:
        g, s = self.g, self.spec
        if not self._deepstack:
            return
        g.add_output("deepstack_features", TensorProto.FLOAT, [len(s.deepstack_layers), "num_merged", s.out_hidden_size])
        g.one("Concat", self._deepstack, "/vision/deepstack/Concat", axis=0, outputs=["deepstack_features"])


__all__ = ["Qwen3VisionGraphBuilder"]
