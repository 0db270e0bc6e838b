"""Image chat through qwen_edge.runtime on a Qwen2.5-VL bundle built by `build`: greedy tokens equal
transformers' generate on the same images, and bad images are InvalidRequestError."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from qwen_edge.runtime import Generator, InvalidRequestError, Model, SamplingParams

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")

NEW_TOKENS = 12


@pytest.fixture(scope="module")
def gen(vl_bundles):
    return Generator(Model(vl_bundles("fp32")))


def _images(tmp_path: Path):
    rng = np.random.default_rng(11)
    path = tmp_path / "a.png"
    Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)).save(path)
    return [str(path), rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)]


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_image_chat_matches_transformers_generate(arch, vl_bundles, request, tmp_path):
    bundle = vl_bundles("fp32", arch)
    gen = Generator(Model(bundle))
    ckpt = request.getfixturevalue({"qwen2_5_vl": "qwen25vl_ckpt", "qwen3_vl": "qwen3vl_ckpt"}[arch])
    images = _images(tmp_path)
    messages = [{"role": "user", "content": [{"type": "image", "image": images[0]}, {"type": "image", "image": images[1]},
                                             {"type": "text", "text": "what is in these pictures?"}]}]
    chat = gen.start_chat(messages, max_new_tokens=NEW_TOKENS, sampling=SamplingParams.greedy(), stop_token_ids=[])
    ours = chat.result().token_ids
    prompt = chat._gen.prompt_ids

    model = transformers.AutoModelForImageTextToText.from_pretrained(str(ckpt), dtype=torch.float32).eval()
    io = gen.model.manifest["io"]["vision"]
    processor = transformers.Qwen2VLImageProcessorPil(
        patch_size=io["patch_size"], image_mean=io["image_mean"], image_std=io["image_std"],
        min_pixels=io["min_pixels"], max_pixels=io["max_pixels"])
    pil = [Image.open(images[0]), Image.fromarray(images[1])]
    ref = processor(images=pil, return_tensors="pt")
    ids = torch.as_tensor(prompt)[None]
    assert int((ids == model.config.image_token_id).sum()) == int(ref["image_grid_thw"].prod(-1).sum()) // 4
    assert len(ours) == NEW_TOKENS
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=ref["pixel_values"],
                             image_grid_thw=ref["image_grid_thw"],
                             mm_token_type_ids=(ids == model.config.image_token_id).long(),
                             max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert ours == out[0, ids.shape[1]:].tolist()


def test_text_only_chat_on_a_vision_bundle(gen):
    result = gen.chat([{"role": "user", "content": "hello"}], max_new_tokens=4, sampling=SamplingParams.greedy())
    assert result.stats.new_tokens >= 1 or result.stats.finish_reason == "eos"


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _bad_images(tmp_path: Path) -> dict:
    good = _png(Image.new("RGB", (64, 64), (1, 2, 3)))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "notes.txt").write_text("not an image")
    return {
        "corrupt": (str(tmp_path / "corrupt.png"), "not a readable image|cannot decode"),
        "truncated": (str(tmp_path / "truncated.png"), "not a readable image|cannot decode"),
        "text file": (str(tmp_path / "notes.txt"), "not a readable image"),
        "missing": (str(tmp_path / "nope.png"), "no such file"),
        "zero-size array": (np.zeros((0, 10, 3), np.uint8), "empty"),
        "100k wide": (np.zeros((10, 100_000, 3), np.uint8), "aspect ratio"),
        "float array": (np.zeros((32, 32, 3), np.float32), "uint8"),
        "bomb": (Image.new("L", (1, 1)).resize((9000, 9000)), "decode limit"),
        "not an image": (42, "path, a PIL image or a numpy array"),
    }


def test_bad_images_are_invalid_requests(gen, tmp_path):
    for name, (image, match) in _bad_images(tmp_path).items():
        with pytest.raises(InvalidRequestError, match=match):
            gen.chat([{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "?"}]}],
                     max_new_tokens=1)


@pytest.mark.parametrize("mode", ["CMYK", "P", "RGBA", "LA", "I;16", "L", "1"])
def test_other_modes_convert_as_the_hf_processor_does(mode):
    from qwen_edge.runtime.image_processing import preprocess

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (60, 70, 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (60, 70), dtype=np.uint16))
    else:
        image = image.convert(mode)
    ref = transformers.Qwen2VLImageProcessorPil()(images=[image], return_tensors="np")["pixel_values"]
    assert np.abs(preprocess(image).pixel_values - ref).max() <= 1e-5


def test_image_parts_need_a_vision_bundle(bundles):
    text_only = Generator(Model(bundles("qwen2", "fp32")))
    with pytest.raises(InvalidRequestError, match="no vision model"):
        text_only.chat([{"role": "user", "content": [{"type": "image", "image": "x.png"}]}], max_new_tokens=1)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_speculative_image_chat_gives_the_plain_tokens(arch, vl_bundles, tmp_path):
    # Verify passes after an image prompt must keep its 3-D positions (the rope delta after the image).
    gen = Generator(Model(vl_bundles("fp32", arch)))
    images = _images(tmp_path)
    messages = [{"role": "user", "content": [{"type": "image", "image": images[0]}, {"type": "image", "image": images[1]},
                                             {"type": "text", "text": "say it again: one two three one two three"}]}]
    kwargs = dict(max_new_tokens=24, sampling=SamplingParams.greedy(), stop_token_ids=[])
    plain = gen.start_chat(messages, **kwargs).result()
    chat = gen.start_chat(messages, speculative="ngram", **kwargs)
    spec = chat.result()
    assert spec.token_ids == plain.token_ids
    assert spec.stats.verify_passes > 0
