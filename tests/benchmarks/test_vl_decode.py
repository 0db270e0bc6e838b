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
