"""The image side of a vision-language bundle: vision.onnx and embedding.onnx, and what a prompt with
images becomes (its image-pad tokens expanded, the image features, the 3-D positions).

The manifest's `io.vision` says where the graphs are and how the processor is set; Pillow is
needed only when a prompt carries images (runtime/image_processing.py imports it lazily).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from ..errors import BundleError
from .errors import InvalidRequestError
from .image_processing import ImageOptions, preprocess
from .vision_inputs import rope_positions

IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"  # what Qwen-VL templates write per image


@dataclass(frozen=True)
class PromptMedia:
    """A prompt's images made ready for the decoder: ids with image pads expanded, one feature row per
    pad, and 3-D positions [3, 1, len(ids)] plus the delta that continues them."""

    ids: np.ndarray
    features: np.ndarray
    positions: np.ndarray
    delta: int
    deepstack: np.ndarray | None = None  # Qwen3-VL: [k, features, hidden]


class VisionModels:
    def __init__(self, bundle: Path, io: Mapping[str, Any], session_options, providers: Sequence[str],
                 dtype=np.float32):
        self.dtype = dtype  # the decoder's float type (its inputs_embeds)
        try:
            self.image_token_id = int(io["image_token_id"])
            self.hidden_size = int(io["hidden_size"])
            self.merge_size = int(io["merge_size"])
            self.deepstack = int(io.get("deepstack", 0))
            norm = {k: tuple(float(v) for v in io[k]) for k in ("image_mean", "image_std") if k in io}
            pixels = {k: int(io[k]) for k in ("min_pixels", "max_pixels") if k in io}
            self.options = ImageOptions(patch_size=int(io["patch_size"]), merge_size=self.merge_size,
                                        temporal_patch_size=int(io["temporal_patch_size"]), **norm, **pixels)
            files = (io["vision_file"], io["embedding_file"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{bundle}: manifest io.vision is incomplete ({exc})") from None
        sessions = []
        for name in files:
            try:
                sessions.append(ort.InferenceSession(str(bundle / name), session_options, providers=list(providers)))
            except Exception as exc:
                raise BundleError(f"{bundle / name}: onnxruntime could not load the model: "
                                  f"{str(exc).splitlines()[0]}") from exc
        self.vision, self.embedding = sessions
        self._no_features = np.zeros((0, self.hidden_size), np.float32)
        self._no_deepstack = np.zeros((self.deepstack, 0, self.hidden_size), np.float32)
        self._outputs = ["image_features"] + (["deepstack_features"] if self.deepstack else [])

    def image_options(self, min_pixels: int | None = None, max_pixels: int | None = None) -> ImageOptions:
        changes = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
        return replace(self.options, **changes) if changes else self.options

    def encode(self, images: Sequence[Any], options: ImageOptions | None = None) -> tuple[list[np.ndarray], list]:
        """[image features [sum of merged patches, hidden] (, deepstack features)] and the images' grids."""
        processed = [preprocess(image, options or self.options) for image in images]
        grids = [p.grid_thw for p in processed]
        if not processed:
            return [self._no_features, self._no_deepstack], grids
        feeds = {"pixel_values": np.concatenate([p.pixel_values for p in processed]),
                 "image_grid_thw": np.array(grids, np.int64)}
        return self.vision.run(self._outputs, feeds) + [None], grids

    def prepare(self, ids: np.ndarray, images: Sequence[Any], options: ImageOptions | None = None) -> PromptMedia:
        """`ids` hold one image-pad token per image (as the template writes them); each becomes the
        image's number of merged patches."""
        pads = np.flatnonzero(ids == self.image_token_id)
        if len(pads) != len(images):
            raise InvalidRequestError(f"the prompt has {len(pads)} image placeholder(s) for {len(images)} image(s)")
        (features, deepstack, *_), grids = self.encode(images, options)
        pieces, start = [], 0
        unit = self.merge_size ** 2
        for pad, (t, h, w) in zip(pads, grids):
            pieces += [ids[start:pad], np.full(t * h * w // unit, self.image_token_id, np.int64)]
            start = pad + 1
        expanded = np.concatenate([*pieces, ids[start:]]).astype(np.int64)
        try:
            positions, delta = rope_positions(expanded, self.image_token_id, grids, self.merge_size)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
        return PromptMedia(expanded, features, positions, delta, deepstack)

    def decoder_feeds(self, ids: np.ndarray, start: int, delta: int, media: PromptMedia | None) -> dict[str, np.ndarray]:
        """inputs_embeds and position_ids for `ids` after `start` cached tokens."""
        n = len(ids)
        prefill = media is not None and start == 0
        feeds = {"input_ids": ids.reshape(1, n), "image_features": media.features if prefill else self._no_features}
        if self.deepstack:
            feeds["deepstack_features"] = media.deepstack if prefill else self._no_deepstack
            embeds, deepstack = self.embedding.run(["inputs_embeds", "deepstack_embeds"], feeds)
        else:
            embeds, deepstack = self.embedding.run(["inputs_embeds"], feeds)[0], None
        if prefill:
            positions = media.positions
        else:
            positions = np.broadcast_to(np.arange(start, start + n, dtype=np.int64) + delta, (3, 1, n))
        out = {"inputs_embeds": embeds.astype(self.dtype, copy=False), "position_ids": np.ascontiguousarray(positions)}
        if deepstack is not None:
            out["deepstack_embeds"] = deepstack.astype(self.dtype, copy=False)
        return out


def split_images(messages, has_vision: bool) -> tuple[list, list]:
    """Messages with each image part replaced by the template's placeholder text, and the images in
    order. Non-list contents pass through untouched."""
    if not isinstance(messages, (list, tuple)):
        return messages, []
    images, out = [], []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, (list, tuple)):
            out.append(message)
            continue
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, Mapping) and part.get("type") == "image":
                if not has_vision:
                    raise InvalidRequestError(f"messages[{i}].content[{j}]: this bundle has no vision model "
                                              "(image parts need a vision-language bundle)")
                if part.get("image") is None:
                    raise InvalidRequestError(f"messages[{i}].content[{j}]: an image part needs 'image'")
                images.append(part["image"])
                parts.append({"type": "text", "text": IMAGE_PLACEHOLDER})
            else:
                parts.append(part)
        out.append({**message, "content": parts})
    return out, images


__all__ = ["IMAGE_PLACEHOLDER", "PromptMedia", "VisionModels", "split_images"]
