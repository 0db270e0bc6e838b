"""Qwen2.5-VL against transformers, fp32, on a tiny random checkpoint: two images of different sizes
whose merge-block grids (7x5 and 3x4) the 4-block windows do not divide, vision depth 4 with full
attention in blocks 1 and 3. Preprocessing, vision features, M-RoPE positions, and prefill + 16
decode steps of logits."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from qwen_edge.arch import adapter_for
from qwen_edge.checkpoint import Checkpoint
from qwen_edge.graph.vision_language import write_vision_language
from qwen_edge.precision import Precision
from qwen_edge.runtime.image_processing import ImageOptions, preprocess
from qwen_edge.runtime.vision_inputs import rope_positions

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")

DECODE_STEPS = 16


def _images():
    rng = np.random.default_rng(3)
    return [PIL.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)),  # -> 140x196: 10x14 patches
            PIL.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))]   # -> 84x112: 6x8 patches


@pytest.fixture(scope="module")
def built(qwen25vl_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("vl_fp32")
    with Checkpoint.open(qwen25vl_ckpt) as ckpt:
        adapter = adapter_for(ckpt.architecture)
        spec = adapter.spec(ckpt.config, ckpt.architecture)
        vision = adapter.vision_spec(ckpt.config)
        models = write_vision_language(ckpt, adapter, spec, vision, Precision(), out)
        assert not adapter.split_unused(ckpt.unconsumed())[1]
    sessions = {role: ort.InferenceSession(str(out / f), providers=["CPUExecutionProvider"])
                for role, f in models.files.items()}
    return spec, vision, sessions


@pytest.fixture(scope="module")
def hf(qwen25vl_ckpt):
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(str(qwen25vl_ckpt),
                                                                              dtype=torch.float32).eval()
    processor = transformers.Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    return model, processor


def _prompt(vision, grids):
    rng = np.random.default_rng(7)
    ids = list(rng.integers(0, 300, 5))
    for _, h, w in grids:
        n = (h // 2) * (w // 2)
        ids += [vision.vision_start_token_id] + [vision.image_token_id] * n + [vision.vision_end_token_id]
        ids += list(rng.integers(0, 300, 3))
    return np.array(ids, np.int64)


def test_qwen25vl_matches_transformers(built, hf):
    spec, vision, sess = built
    model, processor = hf
    images = _images()

    # pixel_values: our numpy + Pillow path against the Hugging Face processor
    ours = [preprocess(im, ImageOptions()) for im in images]
    ref = processor(images=images, return_tensors="pt")
    pixel_values = np.concatenate([p.pixel_values for p in ours])
    grids = [p.grid_thw for p in ours]
    assert grids == [tuple(g) for g in ref["image_grid_thw"].tolist()]
    pixel_err = float(np.abs(pixel_values - ref["pixel_values"].numpy()).max())
    assert pixel_err <= 1e-5, pixel_err

    # merged vision features
    features = sess["vision"].run(None, {"pixel_values": pixel_values, "image_grid_thw": np.array(grids)})[0]
    with torch.no_grad():
        expected = torch.cat(model.model.get_image_features(ref["pixel_values"], ref["image_grid_thw"]).pooler_output)
    assert features.shape == tuple(expected.shape)
    feature_err = float(np.abs(features - expected.numpy()).max())
    assert feature_err <= 1e-4, feature_err

    # M-RoPE positions
    ids = _prompt(vision, grids)
    positions, delta = rope_positions(ids, vision.image_token_id, grids, vision.merge_size)
    mm = torch.as_tensor((ids == vision.image_token_id).astype(np.int64))[None]
    ref_pos, ref_delta = model.model.get_rope_index(torch.as_tensor(ids)[None], mm_token_type_ids=mm,
                                                   image_grid_thw=ref["image_grid_thw"])
    assert np.array_equal(positions, ref_pos.numpy()) and delta == int(ref_delta[0, 0])

    # prefill + 16 greedy decode steps: transformers' tokens fed to both
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(ids)[None], pixel_values=ref["pixel_values"],
                    image_grid_thw=ref["image_grid_thw"], mm_token_type_ids=mm, use_cache=True)
        ref_logits, cache = [out.logits[0].numpy()], out.past_key_values
        tokens = [int(out.logits[0, -1].argmax())]
        for _ in range(DECODE_STEPS):
            out = model(input_ids=torch.as_tensor([[tokens[-1]]]), cache=cache, use_cache=True)
            cache = out.past_key_values
            ref_logits.append(out.logits[0].numpy())
            tokens.append(int(out.logits[0, -1].argmax()))

    embeds = sess["embedding"].run(None, {"input_ids": ids[None], "image_features": features})[0]
    past = {f"past_key_values.{i}.{kind}": np.zeros((1, spec.num_kv_heads, 0, spec.head_dim), np.float32)
            for i in range(spec.num_layers) for kind in ("key", "value")}
    names = [o.name for o in sess["decoder"].get_outputs()]
    got, length = [], len(ids)
    feed = {"inputs_embeds": embeds, "position_ids": positions, "attention_mask": np.ones((1, length), np.int64)}
    for step in range(DECODE_STEPS + 1):
        result = dict(zip(names, sess["decoder"].run(None, {**feed, **past})))
        got.append(result["logits"][0])
        past = {f"past_key_values.{k[len('present.'):]}": v for k, v in result.items() if k.startswith("present.")}
        if step == DECODE_STEPS:
            break
        token = np.array([[tokens[step]]], np.int64)
        empty = np.zeros((0, spec.hidden_size), np.float32)
        feed = {"inputs_embeds": sess["embedding"].run(None, {"input_ids": token, "image_features": empty})[0],
                "position_ids": np.full((3, 1, 1), length + delta, np.int64),
                "attention_mask": np.ones((1, length + 1), np.int64)}
        length += 1
    worst = max(float(np.abs(a - b).max()) for a, b in zip(got, ref_logits))
    print(f"qwen2.5-vl fp32: pixel_values {pixel_err:.2e}, features {feature_err:.2e}, logits {worst:.2e}")
    assert worst <= 1e-3, worst
