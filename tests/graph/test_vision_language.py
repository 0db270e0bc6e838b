"""Qwen2.5-VL and Qwen3-VL against transformers, fp32, on tiny random checkpoints: two images of
different sizes in one prompt, vision depth 4 (Qwen2.5-VL: full attention in blocks 1 and 3, 112-px
windows that its 5x7 and 3x4 merge-block grids do not fill evenly; Qwen3-VL: a learned position table
resampled to each grid, DeepStack from blocks 0 and 2). Preprocessing, vision features (and DeepStack
features), M-RoPE positions, and prefill + 16 decode steps of logits."""

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
CHECKPOINTS = {"qwen2_5_vl": "qwen25vl_ckpt", "qwen3_vl": "qwen3vl_ckpt"}


def _images():
    rng = np.random.default_rng(3)
    return [PIL.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)),
            PIL.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))]


@pytest.fixture(scope="module", params=sorted(CHECKPOINTS))
def case(request, tmp_path_factory):
    ckpt_dir = request.getfixturevalue(CHECKPOINTS[request.param])
    out = tmp_path_factory.mktemp(f"vl_fp32_{request.param}")
    with Checkpoint.open(ckpt_dir) as ckpt:
        adapter = adapter_for(ckpt.architecture)
        spec = adapter.spec(ckpt.config, ckpt.architecture)
        vision = adapter.vision_spec(ckpt.config)
        models = write_vision_language(ckpt, adapter, spec, vision, Precision(), out)
        assert not adapter.split_unused(ckpt.unconsumed())[1]
    sessions = {role: ort.InferenceSession(str(out / f), providers=["CPUExecutionProvider"])
                for role, f in models.files.items()}
    model_cls = getattr(transformers, spec.architecture)
    model = model_cls.from_pretrained(str(ckpt_dir), dtype=torch.float32).eval()
    settings = vision.processor
    processor = transformers.Qwen2VLImageProcessorPil(
        patch_size=vision.patch_size, merge_size=vision.merge_size, image_mean=settings["image_mean"],
        image_std=settings["image_std"], min_pixels=settings["min_pixels"], max_pixels=settings["max_pixels"])
    options = ImageOptions(patch_size=vision.patch_size, merge_size=vision.merge_size,
                           image_mean=tuple(settings["image_mean"]), image_std=tuple(settings["image_std"]),
                           min_pixels=settings["min_pixels"], max_pixels=settings["max_pixels"])
    return spec, vision, sessions, model, processor, options


def _prompt(vision, grids):
    rng = np.random.default_rng(7)
    ids = list(rng.integers(0, 300, 5))
    for _, h, w in grids:
        n = (h // vision.merge_size) * (w // vision.merge_size)
        ids += [vision.vision_start_token_id] + [vision.image_token_id] * n + [vision.vision_end_token_id]
        ids += list(rng.integers(0, 300, 3))
    return np.array(ids, np.int64)


def test_matches_transformers(case):
    spec, vision, sess, model, processor, options = case
    images = _images()
    k = spec.mrope.deepstack

    # pixel_values: our numpy + Pillow path against the Hugging Face processor
    ours = [preprocess(im, options) for im in images]
    ref = processor(images=images, return_tensors="pt")
    pixel_values = np.concatenate([p.pixel_values for p in ours])
    grids = [p.grid_thw for p in ours]
    assert grids == [tuple(g) for g in ref["image_grid_thw"].tolist()]
    pixel_err = float(np.abs(pixel_values - ref["pixel_values"].numpy()).max())
    assert pixel_err <= 1e-5, pixel_err

    # merged vision features (and DeepStack's)
    outputs = sess["vision"].run(None, {"pixel_values": pixel_values, "image_grid_thw": np.array(grids)})
    features = outputs[0]
    with torch.no_grad():
        hf = model.model.get_image_features(ref["pixel_values"], ref["image_grid_thw"])
    expected = torch.cat(hf.pooler_output).numpy()
    assert features.shape == expected.shape
    feature_err = float(np.abs(features - expected).max())
    if k:
        ds_expected = np.stack([torch.cat(f).numpy() for f in hf.deepstack_features])
        feature_err = max(feature_err, float(np.abs(outputs[1] - ds_expected).max()))
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

    def embed(token_ids, feats, deepstack):
        feeds = {"input_ids": token_ids, "image_features": feats}
        if k:
            feeds["deepstack_features"] = deepstack
        result = sess["embedding"].run(None, feeds)
        return {"inputs_embeds": result[0], **({"deepstack_embeds": result[1]} if k else {})}

    past = {f"past_key_values.{i}.{kind}": np.zeros((1, spec.num_kv_heads, 0, spec.head_dim), np.float32)
            for i in range(spec.num_layers) for kind in ("key", "value")}
    names = [o.name for o in sess["decoder"].get_outputs()]
    got, length = [], len(ids)
    feed = {**embed(ids[None], features, outputs[1] if k else None), "position_ids": positions,
            "attention_mask": np.ones((1, length), np.int64)}
    empty = np.zeros((0, spec.hidden_size), np.float32)
    for step in range(DECODE_STEPS + 1):
        result = dict(zip(names, sess["decoder"].run(None, {**feed, **past})))
        got.append(result["logits"][0])
        past = {f"past_key_values.{n[len('present.'):]}": v for n, v in result.items() if n.startswith("present.")}
        if step == DECODE_STEPS:
            break
        token = np.array([[tokens[step]]], np.int64)
        feed = {**embed(token, empty, np.zeros((k, 0, spec.hidden_size), np.float32)),
                "position_ids": np.full((3, 1, 1), length + delta, np.int64),
                "attention_mask": np.ones((1, length + 1), np.int64)}
        length += 1
    worst = max(float(np.abs(a - b).max()) for a, b in zip(got, ref_logits))
    print(f"{spec.architecture} fp32: pixel_values {pixel_err:.2e}, features {feature_err:.2e}, logits {worst:.2e}")
    assert worst <= 1e-3, worst
