"""benchmarks/vl_decode.py's plain loop on a tiny Qwen2.5-VL bundle: fed our embedding and M-RoPE
positions after an image prompt, it picks the tokens our runtime's Generation picks (the loop is the
model, not something else)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def vl_decode():
    sys.path[:0] = [str(BENCH), str(BENCH / "peers")]
    try:
        import vl_decode
        yield vl_decode
    finally:
        del sys.path[:2]


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_plain_loop_matches_the_runtime_after_an_image(vl_decode, vl_bundles, precision, tmp_path):
    from qwen_edge.runtime import Model
    from qwen_edge.runtime.generator import Generation
    from qwen_edge.runtime.sampling import SamplingParams

    bundle = vl_bundles(precision)
    model = Model(bundle)
    image = np.random.default_rng(0).integers(0, 256, (112, 84, 3), dtype=np.uint8)
    (features, *_), grids = model.vision.encode([image])
    config = {k: model.manifest["io"]["vision"].get(k) for k in ("vision_start_token_id", "vision_end_token_id")}
    if None in config.values():  # the tokens' ids, from the checkpoint's config the test built
        config = _vision_ids(model)
    media = vl_decode.image_prompt(model.vision, config, np.random.default_rng(1), 6, features, grids)
    assert len(media.ids) == 6 + 2 + features.shape[0] and media.delta != 0
    embed = vl_decode.Embedder(model.vision)
    new = 8
    decoder = vl_decode.EmbedsDecoder(bundle, 1, len(media.ids) + new)
    out = decoder.generate_embeds(embed.prompt(media), media.positions, media.delta, new, embed)
    gen = Generation(model, media.ids, new, SamplingParams(), (), media=media)
    assert list(gen.tokens()) == out["tokens"] and out["decode_tokens_per_s"] > 0


def _vision_ids(model) -> dict:
    tok = json.loads((model.path / "tokenizer.json").read_text())
    ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
    return {"vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"]}


def test_genai_recipe_folder_runs_in_genai(vl_decode, vl_bundles, tmp_path):
    """Our vision/embedding with a decoder from another folder (here the same bundle's, standing in for
    genai's builder's): onnxruntime-genai loads the folder of symlinks and decodes what it decodes on the
    bundle itself."""
    og = pytest.importorskip("onnxruntime_genai")
    Image = pytest.importorskip("PIL.Image")
    bundle = vl_bundles("int4")
    decoder_only = tmp_path / "decoder"
    decoder_only.mkdir()
    for p in bundle.iterdir():
        if p.name.startswith("model.onnx"):
            (decoder_only / p.name).symlink_to(p)
    folder = vl_decode.genai_recipe_dir(bundle, decoder_only, tmp_path / "recipe")
    assert (folder / "model.onnx").resolve() == (bundle / "model.onnx").resolve()
    assert (folder / "vision.onnx").is_symlink() and not (folder / "manifest.json").exists()
    png = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (56, 84, 3), dtype=np.uint8)).save(png)

    def greedy(path):
        model = og.Model(str(path))
        inputs = model.create_multimodal_processor()("<|vision_start|><|image_pad|><|vision_end|>hi",
                                                     images=og.Images.open(str(png)))
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=128, min_length=0)
        gen = og.Generator(model, params)
        gen.set_inputs(inputs)
        out = []
        for _ in range(5):
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
        return out

    assert greedy(folder) == greedy(bundle)
