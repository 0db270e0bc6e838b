"""Image preprocessing for Qwen2.5-VL bundles, as transformers' Qwen2-VL PIL image processor does it:
RGB conversion (alpha over white), `smart_resize` to a multiple of patch x merge, bicubic resize
(Pillow), rescale to [0, 1], CLIP mean / std, and patches in 2x2 merge-block order, each patch
repeated over the temporal axis.

Pillow is imported only here and only when an image is given (the `vision` extra). Images are
untrusted input: an unreadable, truncated, oversized or degenerate one is an InvalidRequestError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidRequestError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT = 200


@dataclass(frozen=True)
class ImageOptions:
    """Pixel budgets: an image is resized to between min_pixels and max_pixels (the processor's
    defaults), and refused before decoding when its header says more than max_decode_pixels."""

    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    max_decode_pixels: int = 64 * 1024 * 1024
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD

    def __post_init__(self) -> None:
        factor = self.patch_size * self.merge_size
        if not 0 < self.min_pixels <= self.max_pixels:
            raise InvalidRequestError(f"min_pixels ({self.min_pixels}) must be positive and at most max_pixels "
                                      f"({self.max_pixels})")
        if self.max_pixels < factor * factor:
            raise InvalidRequestError(f"max_pixels ({self.max_pixels}) is below one merged patch ({factor * factor})")


@dataclass(frozen=True)
class ProcessedImage:
    pixel_values: np.ndarray  # [grid_h * grid_w, C * T * P * P] float32
    grid_thw: tuple[int, int, int]


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    if min(height, width) <= 0:
        raise InvalidRequestError(f"image is empty ({width}x{height})")
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise InvalidRequestError(f"image aspect ratio {max(height, width) / min(height, width):.0f}:1 is over "
                                  f"{MAX_ASPECT}:1 ({width}x{height})")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise InvalidRequestError("images need Pillow: pip install 'qwen-edge[vision]'") from None
    return Image


def _describe(image: Any) -> str:
    return f"image '{image}'" if isinstance(image, (str, Path)) else f"{type(image).__name__} image"


def load_rgb(image: Any, options: ImageOptions):
    """A path, a PIL image or a uint8 array [H, W] / [H, W, 1|3|4] -> an RGB PIL image."""
    Image = _pil()
    where = _describe(image)
    if isinstance(image, np.ndarray):
        image = _from_array(image, Image)
    elif isinstance(image, (str, Path)):
        try:
            opened = Image.open(Path(image))
        except FileNotFoundError:
            raise InvalidRequestError(f"{where}: no such file") from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InvalidRequestError(f"{where}: not a readable image ({_first_line(exc)})") from None
        image = opened
    elif not isinstance(image, Image.Image):
        raise InvalidRequestError(f"an image must be a path, a PIL image or a numpy array, got {type(image).__name__}")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidRequestError(f"{where}: image is empty ({width}x{height})")
    if width * height > options.max_decode_pixels:
        raise InvalidRequestError(f"{where}: {width}x{height} is over the {options.max_decode_pixels}-pixel decode limit")
    try:
        image.load()
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            rgba = image.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidRequestError(f"{where}: cannot decode ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _from_array(array: np.ndarray, Image):
    if array.dtype != np.uint8:
        raise InvalidRequestError(f"an image array must be uint8 [H, W] or [H, W, C], got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InvalidRequestError(f"an image array must be [H, W] or [H, W, 1|3|4], got shape {list(array.shape)}")
    if array.size == 0:
        raise InvalidRequestError(f"image array is empty (shape {list(array.shape)})")
    mode = "L" if array.ndim == 2 else ("RGB" if array.shape[-1] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


def preprocess(image: Any, options: ImageOptions = ImageOptions()) -> ProcessedImage:
    """One image -> its patch rows and (t, h, w) grid, as the Hugging Face processor makes them."""
    Image = _pil()
    rgb = load_rgb(image, options)
    width, height = rgb.size
    p, m, t = options.patch_size, options.merge_size, options.temporal_patch_size
    new_h, new_w = smart_resize(height, width, p * m, options.min_pixels, options.max_pixels)
    resized = np.asarray(rgb.resize((new_w, new_h), resample=Image.Resampling.BICUBIC))
    x = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(options.image_mean, np.float32)) / np.array(options.image_std, np.float32)
    x = np.transpose(x, (2, 0, 1))  # C, H, W
    gh, gw = new_h // p, new_w // p
    patches = x.reshape(3, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
    patches = np.broadcast_to(patches[:, :, :, :, :, None], (*patches.shape[:5], t, p, p))
    return ProcessedImage(np.ascontiguousarray(patches.reshape(gh * gw, 3 * t * p * p), np.float32), (1, gh, gw))


__all__ = ["ImageOptions", "ProcessedImage", "load_rgb", "preprocess", "smart_resize"]
