"""A Qwen2.5-VL int4 bundle runs unmodified in onnxruntime-genai 0.18 (its qwen2_5_vl type: vision.onnx +
embedding.onnx + the decoder, processor_config.json for its image processor), and an image prompt
decodes the same greedy tokens there as in qwen_edge.runtime."""

from __future__ import annotations

import numpy as np
import pytest

og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is a test dependency; install .[test]")
Image = pytest.importorskip("PIL.Image")

NEW_TOKENS = 12


def _genai_greedy(bundle, prompt: str, paths: list[str]) -> list[int]:
    model = og.Model(str(bundle))
    inputs = model.create_multimodal_processor()(prompt, images=og.Images.open(*paths))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, repetition_penalty=1.0, max_length=512, min_length=0)
    generator = og.Generator(model, params)
    generator.set_inputs(inputs)
    out = []
    while not generator.is_done() and len(out) < NEW_TOKENS:
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


@pytest.mark.parametrize("precision", ["int4", "fp32"])  # fp32: greedy tokens that small position errors flip
def test_image_prompt_same_greedy_tokens_in_genai(vl_bundles, tmp_path, precision):
    from qwen_edge.runtime import Generator, Model, SamplingParams

    bundle = vl_bundles(precision)
    rng = np.random.default_rng(4)
    # Sizes that are already multiples of 28: the resize is the identity in both processors (ort-extensions'
    # bicubic is not Pillow's, so other sizes give slightly different pixels, not a different contract).
    paths = []
    for k, (h, w) in enumerate([(140, 196), (84, 112)]):
        paths.append(str(tmp_path / f"{k}.png"))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    gen = Generator(Model(bundle))
    content = [{"type": "image", "image": p} for p in paths] + [{"type": "text", "text": "what?"}]
    messages = [{"role": "user", "content": content}]
    chat = gen.start_chat(messages, max_new_tokens=NEW_TOKENS, sampling=SamplingParams.greedy(), stop_token_ids=[])
    ours = chat.result().token_ids
    prompt = gen.render_chat([{"role": "user", "content": "<|vision_start|><|image_pad|><|vision_end|>" * 2 + "what?"}])
    theirs = _genai_greedy(bundle, prompt, paths)
    assert len(ours) == NEW_TOKENS and theirs == ours
