"""The model files of a vision-language bundle (a spec with M-RoPE): vision.onnx, embedding.onnx and
the decoder, a smoke run of the three, and the manifest sections the runtime reads (`io.vision`).

Called by DecoderStages.write in place of its one-graph path; a target's passes, data-aware plans and
the quality report are not applied to these bundles yet (refused by name, not skipped).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle.genai_config import genai_config, special_token_ids
from ..errors import CheckpointError, ConfigError
from ..graph.decoder_io import cache_io
from ..graph.vision_language import write_vision_language


def check_vision_language_request(request, target) -> None:
    if target.passes:
        raise ConfigError(f"target '{target.name}': vision-language bundles take no passes yet "
                          f"(the target runs {target.passes[0].name})")
    if request.calibration is not None or request.budget is not None or request.quality is not None:
        raise ConfigError("vision-language bundles: data-aware quantization, budgets and the quality report "
                          "are not supported yet")
    if target.graph.weights == "passes":
        raise ConfigError(f"target '{target.name}': vision-language bundles need weights made by the builder")
    if request.options.exact_speculation:
        raise ConfigError("vision-language bundles: exact speculation is not supported yet (the spare attention "
                          "row needs genai's shared buffers, untested with its vision pipeline)")


def smoke_run(stage: Path, spec, vision, files: dict[str, str]) -> None:
    """One 56x56 image through the three graphs: they load and agree on their shapes."""
    import onnxruntime as ort

    from ..runtime.vision_inputs import rope_positions

    def session(role):
        return ort.InferenceSession(str(stage / files[role]), providers=["CPUExecutionProvider"])

    m = vision.merge_size
    grid = (1, 2 * m, 2 * m)
    feeds = {"pixel_values": np.zeros((grid[1] * grid[2], vision.patch_dim), np.float32),
             "image_grid_thw": np.array([grid], np.int64)}
    features = dict(zip(("image_features", "deepstack_features"), session("vision").run(None, feeds)))
    ids = np.array([vision.vision_start_token_id] + [vision.image_token_id] * 4 + [vision.vision_end_token_id],
                   np.int64)
    embedded = session("embedding").run(None, {"input_ids": ids[None], **features})
    embeds = embedded[0]
    positions, _ = rope_positions(ids, vision.image_token_id, [grid], m)
    dtype = np.float16 if embeds.dtype == np.float16 else np.float32
    dec = session("decoder")
    want = {i.name: i.type for i in dec.get_inputs()}
    feeds = {"inputs_embeds": embeds.astype(_elem(want["inputs_embeds"], dtype)), "position_ids": positions,
             "attention_mask": np.ones((1, len(ids)), np.int64)}
    if spec.mrope.deepstack:
        feeds["deepstack_embeds"] = embedded[1].astype(feeds["inputs_embeds"].dtype)
    empty = np.zeros((1, spec.num_kv_heads, 0, spec.head_dim), _elem(want["past_key_values.0.key"], dtype))
    feeds |= {f"past_key_values.{i}.{k}": empty for i in spec.kv_layers for k in ("key", "value")}
    logits = dec.run(["logits"], feeds)[0]
    if logits.shape[-1] != spec.vocab_size or not np.isfinite(logits).all():
        raise CheckpointError(f"smoke test: the decoder gave logits of shape {list(logits.shape)} "
                              "or non-finite values")


def _merged(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for per_model in counts.values():
        for op, n in per_model.items():
            out[op] = out.get(op, 0) + n
    return out


def _elem(onnx_type: str, default):
    return np.float16 if onnx_type == "tensor(float16)" else np.float32 if "float" in onnx_type else default


def genai_files(stage: Path, gen: dict[str, Any], spec, vision, files: dict[str, str], session: dict) -> None:
    """genai_config.json (onnxruntime-genai 0.18's qwen2_5_vl type: vision + embedding + decoder) and
    the processor_config.json its ort-extensions image processor reads."""
    model = gen["model"]
    model["type"] = "qwen2_5_vl"
    model["image_token_id"] = vision.image_token_id
    model["vision_start_token_id"] = vision.vision_start_token_id
    model["video_token_id"] = vision.video_token_id
    decoder = model["decoder"]
    decoder["inputs"] = {"inputs_embeds": "inputs_embeds", "attention_mask": "attention_mask",
                         "position_ids": "position_ids"} | {k: v for k, v in decoder["inputs"].items()
                                                            if k.startswith("past_")}
    model["embedding"] = {"filename": files["embedding"], "session_options": session,
                          "inputs": {"input_ids": "input_ids", "image_features": "image_features"},
                          "outputs": {"inputs_embeds": "inputs_embeds"}}
    model["vision"] = {"filename": files["vision"], "session_options": session,
                       "spatial_merge_size": vision.merge_size, "patch_size": vision.patch_size,
                       "window_size": vision.window_size, "tokens_per_second": float(vision.tokens_per_second),
                       "inputs": {"pixel_values": "pixel_values", "image_grid_thw": "image_grid_thw"},
                       "outputs": {"image_features": "image_features"}}
    (stage / "genai_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")
    factor = vision.patch_size * vision.merge_size
    processor = {"processor": {"name": "qwen2_5_image_processor", "transforms": [
        {"operation": {"name": "decode_image", "type": "DecodeImage", "attrs": {"color_space": "RGB"}}},
        {"operation": {"name": "convert_to_rgb", "type": "ConvertRGB"}},
        {"operation": {"name": "resize", "type": "Resize", "attrs": {
            "width": 16 * factor, "height": 16 * factor, "smart_resize": 1,
            "min_pixels": vision.processor["min_pixels"], "max_pixels": vision.processor["max_pixels"],
            "patch_size": vision.patch_size, "merge_size": vision.merge_size}}},
        {"operation": {"name": "rescale", "type": "Rescale", "attrs": {"rescale_factor": 1 / 255}}},
        {"operation": {"name": "normalize", "type": "Normalize", "attrs": {
            "mean": vision.processor["image_mean"], "std": vision.processor["image_std"], "qwen2_5_vl": 1}}},
        {"operation": {"name": "patch_image", "type": "PatchImage", "attrs": {
            "patch_size": vision.patch_size, "temporal_patch_size": vision.temporal_patch_size,
            "merge_size": vision.merge_size}}},
    ]}}
    (stage / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")


def write_stages(stages, stage: Path) -> dict[str, Any]:
    ckpt, spec, request, adapter = stages.ckpt, stages.spec, stages.request, stages.adapter
    vision = adapter.vision_spec(ckpt.config)
    models = write_vision_language(ckpt, adapter, spec, vision, stages.graph_precision, stage, request.options,
                                   stages.progress)
    left_out, leftover = adapter.split_unused(ckpt.unconsumed())
    if leftover:
        raise CheckpointError(f"{Path(request.checkpoint).name}: {len(leftover)} tensor(s) not used by the "
                              f"{spec.architecture} adapter, first '{leftover[0]}'")
    if request.smoke_test:
        smoke_run(stage, spec, vision, models.files)
    tokenizer = stage / "tokenizer.json"
    gen = genai_config(spec, model_type="qwen2_5_vl", context_length=stages.context, generation=ckpt.generation,
                       filename=models.files["decoder"], provider_options=stages.genai_provider_options(),
                       special_tokens=special_token_ids(tokenizer) if tokenizer.is_file() else None)
    # Qwen3-VL gets no genai_config: onnxruntime-genai 0.18's qwen3_vl pipeline has no DeepStack path (its
    # config parser rejects a decoder input 'deepstack_embeds', and its embedding stage does not feed
    # 'deepstack_features'), and dropping DeepStack would change the model's answers.
    if vision.kind == "qwen2_5_vl":
        genai_files(stage, gen, spec, vision, models.files, gen["model"]["decoder"]["session_options"])
    io = cache_io(spec, request.precision.dtype)
    extra = ["deepstack_embeds"] if spec.mrope.deepstack else []
    io["inputs"] = ["inputs_embeds", "attention_mask", "position_ids", *extra, *io["inputs"][2:]]
    return {
        "precision": stages.precision.to_dict() | {"name": stages.precision.name},
        "passes": [],
        "io": {
            **io,
            "model_file": models.files["decoder"],
            "context_length": stages.context,
            "kv_dtype": request.precision.dtype,
            "num_layers": spec.num_layers,
            "num_kv_heads": spec.num_kv_heads,
            "head_dim": spec.head_dim,
            "vocab_size": spec.vocab_size,
            "vision": {
                "vision_file": models.files["vision"], "embedding_file": models.files["embedding"],
                "image_token_id": vision.image_token_id, "hidden_size": spec.hidden_size,
                "patch_size": vision.patch_size, "merge_size": vision.merge_size,
                "temporal_patch_size": vision.temporal_patch_size, "window_size": vision.window_size,
                "deepstack": spec.mrope.deepstack, **vision.processor,
                "spec": vision.to_dict(), "parameters": models.vision_parameters, "dtype": "fp32",
            },
        },
        "weights": models.decoder_stats.to_dict(),
        "graph": {"nodes": sum(sum(c.values()) for c in models.op_counts.values()),
                  "op_counts": dict(sorted(_merged(models.op_counts).items())),
                  "op_counts_by_model": {role: dict(sorted(c.items())) for role, c in models.op_counts.items()}},
    }


__all__ = ["check_vision_language_request", "smoke_run", "write_stages"]
