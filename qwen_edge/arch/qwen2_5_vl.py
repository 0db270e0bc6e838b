"""Qwen2.5-VL and Qwen3-VL: a vision tower beside a Qwen2 / Qwen3 decoder with M-RoPE positions.

The text part is the dense decoder (Qwen2.5-VL: q/k/v biases; Qwen3-VL: q/k norms) whose rotary
frequencies read 3-D (t, h, w) position ids (`ArchSpec.mrope`). The vision tower is described by a
`VisionSpec`, read from `vision_config`. Checkpoints name the weights in one of two layouts:
`visual.*` + `model.*` (what Qwen2.5-VL publishes, and what transformers 5 saves) or
`model.visual.*` + `model.language_model.*` (Qwen3-VL); `use_layout` picks the one a checkpoint has.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, ClassVar

from ..errors import CheckpointError
from .base import ArchAdapter, ArchSpec, _get, register
from .qwen3_5 import text_config
from .rope import MropeSpec

LAYOUTS = (("visual.", "model."), ("model.visual.", "model.language_model."))


@dataclass(frozen=True)
class VisionSpec:
    """The vision tower's hyper-parameters (Qwen2.5-VL: window attention; Qwen3-VL: learned positions,
    DeepStack)."""

    kind: str  # "qwen2_5_vl" or "qwen3_vl"
    depth: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    out_hidden_size: int
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    in_channels: int = 3
    hidden_act: str = "silu"
    window_size: int = 0  # pixels; 0 = every block attends over the whole image
    fullatt_blocks: tuple[int, ...] = ()
    rope_theta: float = 10000.0
    num_position_embeddings: int = 0  # Qwen3-VL's learned position table
    deepstack_layers: tuple[int, ...] = ()  # Qwen3-VL: blocks whose features are added to the decoder
    image_token_id: int = 0
    vision_start_token_id: int = 0
    vision_end_token_id: int = 0
    video_token_id: int = 0
    tokens_per_second: float = 2.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for key in ("depth", "hidden_size", "num_heads", "intermediate_size", "out_hidden_size", "patch_size",
                    "temporal_patch_size", "merge_size", "in_channels"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise CheckpointError(f"config.json: vision_config '{key}' must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 4:
            raise CheckpointError(f"config.json: vision_config hidden_size {self.hidden_size} over {self.num_heads} "
                                  "heads must give a head size divisible by 4")
        bad = [i for i in (*self.fullatt_blocks, *self.deepstack_layers) if not 0 <= i < self.depth]
        if bad:
            raise CheckpointError(f"config.json: vision_config block index {bad[0]} is outside depth {self.depth}")
        if self.window_size and self.window_size % (self.patch_size * self.merge_size):
            raise CheckpointError(f"config.json: vision_config window_size {self.window_size} is not a multiple of "
                                  f"patch_size x spatial_merge_size ({self.patch_size * self.merge_size})")
        if self.hidden_act not in ("silu", "gelu_pytorch_tanh", "gelu"):
            raise CheckpointError(f"config.json: vision_config hidden_act '{self.hidden_act}' is not supported")

    @property
    def processor(self) -> dict:
        """The Hugging Face image processor's settings for this tower (its published preprocessor_config)."""
        if self.kind == "qwen3_vl":
            return {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "min_pixels": 65536, "max_pixels": 16777216}
        return {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
                "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280}

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

    @property
    def merge_unit(self) -> int:
        return self.merge_size ** 2

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def _ints(config: dict, key: str) -> tuple[int, ...]:
    value = config.get(key) or []
    if not isinstance(value, list) or any(not isinstance(v, int) or isinstance(v, bool) for v in value):
        raise CheckpointError(f"config.json: vision_config '{key}' must be a list of integers, got {value!r}")
    return tuple(value)


def vision_from_config(config: dict, kind: str) -> VisionSpec:
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        raise CheckpointError("config.json: 'vision_config' is missing or not an object")
    rope = vision.get("rope_parameters") or {}
    common = dict(
        kind=kind,
        depth=_get(vision, "depth", int),
        hidden_size=_get(vision, "hidden_size", int),
        num_heads=_get(vision, "num_heads", int),
        intermediate_size=_get(vision, "intermediate_size", int),
        out_hidden_size=_get(vision, "out_hidden_size", int),
        patch_size=_get(vision, "patch_size", int, 14, required=False),
        temporal_patch_size=_get(vision, "temporal_patch_size", int, 2, required=False),
        merge_size=_get(vision, "spatial_merge_size", int, 2, required=False),
        in_channels=_get(vision, "in_channels", int, 3, required=False),
        hidden_act=_get(vision, "hidden_act", str, "silu", required=False),
        rope_theta=float(rope.get("rope_theta", 10000.0)),
        image_token_id=_get(config, "image_token_id", int),
        vision_start_token_id=_get(config, "vision_start_token_id", int),
        vision_end_token_id=_get(config, "vision_end_token_id", int),
        video_token_id=_get(config, "video_token_id", int, 0, required=False),
        tokens_per_second=float(vision.get("tokens_per_second", 2.0)),
    )
    if kind == "qwen2_5_vl":
        return VisionSpec(**common, window_size=_get(vision, "window_size", int, 112, required=False),
                          fullatt_blocks=_ints(vision, "fullatt_block_indexes"))
    return VisionSpec(**common, num_position_embeddings=_get(vision, "num_position_embeddings", int),
                      deepstack_layers=_ints(vision, "deepstack_visual_indexes"))


def mrope_from_config(text: dict, *, interleaved: bool) -> MropeSpec:
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    section = rope.get("mrope_section")
    if not isinstance(section, list):
        raise CheckpointError("config.json: text_config rope parameters need an 'mrope_section' list")
    return MropeSpec(section=tuple(section), interleaved=bool(rope.get("mrope_interleaved", interleaved)))


class VisionLanguageAdapter(ArchAdapter):
    """The decoder's tensors under `MODEL_PREFIX`, the vision tower's under `VISUAL_PREFIX`; both set
    per checkpoint by `use_layout`."""

    VISION_KIND: ClassVar[str] = "qwen2_5_vl"
    QK_NORM: ClassVar[bool] = False
    ATTENTION_BIAS: ClassVar[bool] = True
    INTERLEAVED_MROPE: ClassVar[bool] = False

    def __init__(self) -> None:
        self.use_layout(lambda name: False)

    def use_layout(self, has: Callable[[str], bool]) -> "VisionLanguageAdapter":
        visual, model = next(((v, m) for v, m in LAYOUTS if has(f"{m}embed_tokens.weight")), LAYOUTS[0])
        self.VISUAL_PREFIX, self.MODEL_PREFIX = visual, model
        self.GLOBAL_TENSORS = {"embed": f"{model}embed_tokens.weight", "final_norm": f"{model}norm.weight",
                               "lm_head": "lm_head.weight"}
        self.LEFT_OUT_PREFIXES = (visual,)
        return self

    def check_tensors(self, checkpoint, spec: ArchSpec) -> None:
        self.use_layout(checkpoint.has)
        super().check_tensors(checkpoint, spec)

    def spec(self, config: dict, architecture: str) -> ArchSpec:
        text = text_config(config)
        dense = self._dense_spec(text, architecture, attention_bias=self.ATTENTION_BIAS, qk_norm=self.QK_NORM)
        mrope = mrope_from_config(text, interleaved=self.INTERLEAVED_MROPE)
        deepstack = len(self.vision_spec(config).deepstack_layers)
        if deepstack > dense.num_layers:
            raise CheckpointError(f"config.json: {deepstack} DeepStack layers for a {dense.num_layers}-layer decoder")
        return replace(dense, mrope=replace(mrope, deepstack=deepstack))

    def vision_spec(self, config: dict) -> VisionSpec:
        return vision_from_config(config, self.VISION_KIND)

    def layer_tensor_names(self, spec: ArchSpec, i: int) -> dict[str, str]:
        names = super().layer_tensor_names(spec, i)
        return {role: self.MODEL_PREFIX + name[len("model."):] for role, name in names.items()}


@register("Qwen2_5_VLForConditionalGeneration")
class Qwen25VLAdapter(VisionLanguageAdapter):
    pass


@register("Qwen3VLForConditionalGeneration")
class Qwen3VLAdapter(VisionLanguageAdapter):
    VISION_KIND = "qwen3_vl"
    QK_NORM = True
    ATTENTION_BIAS = False
    INTERLEAVED_MROPE = True


__all__ = ["LAYOUTS", "Qwen25VLAdapter", "Qwen3VLAdapter", "VisionLanguageAdapter", "VisionSpec"]
