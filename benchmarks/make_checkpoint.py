"""Write a random-weight checkpoint with the exact shape of Qwen2.5-0.5B-Instruct, Qwen3.5-0.8B or
Qwen2.5-VL-3B-Instruct (bf16, one shard).

Biases and norm weights are randomised: all-zero biases are dropped by some exporters, which
changes their graph and flatters their speed. The tokenizer is the trained 30M model's when it is
available (its ids are all < 151936), else a small byte-level BPE. Qwen3.5-0.8B is written in the
published layout (`Qwen3_5ForConditionalGeneration`, text weights under `model.language_model.`,
`mrope_section` in its rope parameters) without the vision tower, which text-only builds skip.

    python benchmarks/make_checkpoint.py benchmarks/work/qwen2.5-0.5b-random
    python benchmarks/make_checkpoint.py benchmarks/work/qwen3.5-0.8b-random --shape qwen3.5-0.8b
    python benchmarks/make_checkpoint.py benchmarks/work/qwen2.5-vl-3b-random --shape qwen2.5-vl-3b

Qwen2.5-VL-3B takes its tensor names and shapes from transformers' own module (built on the meta
device, so nothing is allocated) and a small tokenizer that knows the vision tokens; it needs torch and
transformers, the other shapes do not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from qwen_edge.checkpoint.tiny import random_weights, write_safetensors  # noqa: E402

QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "vocab_size": 151936,
    "torch_dtype": "bfloat16",
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "use_sliding_window": False,
    "sliding_window": 32768,
    "max_window_layers": 21,
}

# Qwen3.5-0.8B's text model: 24 layers (3 Gated DeltaNet + 1 gated full attention, six times).
QWEN35_08B_TEXT = {
    "model_type": "qwen3_5_text",
    "hidden_size": 1024,
    "intermediate_size": 3584,
    "num_hidden_layers": 24,
    "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 6,
    "full_attention_interval": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 256,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 16,
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "linear_conv_kernel_dim": 4,
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "attn_output_gate": True,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                        "mrope_section": [11, 11, 10], "mrope_interleaved": True},
    "tie_word_embeddings": True,
    "vocab_size": 248320,
    "dtype": "bfloat16",
}
QWEN35_08B = {"architectures": ["Qwen3_5ForConditionalGeneration"], "model_type": "qwen3_5",
              "tie_word_embeddings": True, "text_config": QWEN35_08B_TEXT}

REPO = Path(__file__).resolve().parent.parent
TRAINED = REPO.parent / "shared" / "models" / "qwen2-code-30m"


def _tokenizer(out: Path, source: Path) -> tuple[int, int]:
    """Copy the trained tokenizer; returns its (bos, eos) ids."""
    if not (source / "tokenizer.json").is_file():
        sys.exit(f"make_checkpoint: no tokenizer.json in {source} (pass --tokenizer-from)")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    return 16381, 16383


def _write_config(out: Path, config: dict, bos: int, eos: int) -> None:
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": bos, "eos_token_id": [eos, bos]}))


def qwen25(out: Path, seed: int, tokenizer: Path) -> int:
    config = dict(QWEN25_05B)
    config["bos_token_id"], config["eos_token_id"] = bos, eos = _tokenizer(out, tokenizer)
    _write_config(out, config, bos, eos)
    weights = random_weights(config, seed)
    # Scale the embedding like a trained one (std ~0.02-0.05) so that logits are not saturated.
    weights["model.embed_tokens.weight"] *= np.float32(0.1)
    write_safetensors(out / "model.safetensors", weights, "BF16")
    return sum(w.size for w in weights.values())


def qwen35(out: Path, seed: int, tokenizer: Path) -> int:
    """Every tensor the adapter expects, by its shape: projections ~ N(0, 1/fan_in), zero-centred
    norms and gates small, A_log and dt_bias in their trained ranges. Streamed tensor by tensor."""
    from qwen_edge.arch import adapter_for

    config = json.loads(json.dumps(QWEN35_08B))
    bos, eos = _tokenizer(out, tokenizer)
    config["text_config"].update(bos_token_id=bos, eos_token_id=eos)
    _write_config(out, config, bos, eos)
    name = config["architectures"][0]
    adapter = adapter_for(name)
    shapes = adapter.expected_tensors(adapter.spec(config, name), lambda _: False)
    rng = np.random.default_rng(seed)

    def tensor(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key.endswith("A_log"):
            return np.log(rng.uniform(1, 16, shape)).astype(np.float32)
        if key.endswith("dt_bias"):
            return rng.uniform(-1, 1, shape).astype(np.float32)
        if len(shape) == 1:  # zero-centred norms (and the gated norm's plain weight, near 1)
            return ((1.0 if key.endswith("linear_attn.norm.weight") else 0.0)
                    + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        if key.endswith("embed_tokens.weight"):
            return (0.02 * rng.standard_normal(shape, np.float32)).astype(np.float32)
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape, np.float32) / np.float32(np.sqrt(fan_in))).astype(np.float32)

    stream_safetensors_bf16(out / "model.safetensors", shapes, tensor)
    return sum(int(np.prod(s)) for s in shapes.values())


def stream_safetensors_bf16(path: Path, shapes: dict[str, tuple[int, ...]], make) -> None:
    """A bf16 safetensors file written one tensor at a time (the header first, from the shapes)."""
    header, offset = {}, 0
    for key in sorted(shapes):
        size = int(np.prod(shapes[key])) * 2
        header[key] = {"dtype": "BF16", "shape": list(shapes[key]), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((-len(raw)) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        for key in sorted(shapes):
            bits = np.ascontiguousarray(make(key, shapes[key]), np.float32).view(np.uint32)
            fh.write(((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16).tobytes())


# Qwen2.5-VL-3B-Instruct's published config (text and vision), less the token ids, which come from the
# small tokenizer written beside it.
QWEN25_VL_3B_TEXT = {
    "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
    "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
    "hidden_act": "silu", "tie_word_embeddings": True,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
}
QWEN25_VL_3B_VISION = {
    "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 2048,
    "fullatt_block_indexes": [7, 15, 23, 31], "window_size": 112, "patch_size": 14, "spatial_merge_size": 2,
    "temporal_patch_size": 2, "hidden_act": "silu", "in_chans": 3, "tokens_per_second": 2,
}
VL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>")


def qwen25_vl(out: Path, seed: int, tokenizer: Path, text: dict | None = None, vision: dict | None = None) -> int:
    """Every tensor of transformers' Qwen2_5_VLForConditionalGeneration at the given shape (default the
    3B's): matrices ~ N(0, 1/fan_in), norms near 1, biases small and non-zero, the embedding ~ N(0, 0.02).
    `tokenizer` is unused: the vision tokens need a tokenizer that has them."""
    import torch
    import transformers

    from qwen_edge.checkpoint.tiny import write_tokenizer_files

    tok = write_tokenizer_files(out, 512, added_tokens=VL_TOKENS)
    ids = {n: tok.token_to_id(f"<|{n}|>") for n in ("vision_start", "vision_end", "image_pad")}
    bos, eos = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")
    text = dict(text or QWEN25_VL_3B_TEXT, bos_token_id=bos, eos_token_id=eos)
    config = transformers.Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(vision or QWEN25_VL_3B_VISION), image_token_id=ids["image_pad"],
        vision_start_token_id=ids["vision_start"], vision_end_token_id=ids["vision_end"], video_token_id=0,
        tie_word_embeddings=text["tie_word_embeddings"], dtype="bfloat16",
        architectures=["Qwen2_5_VLForConditionalGeneration"])
    config.save_pretrained(out)
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": bos, "eos_token_id": [eos, bos]}))
    with torch.device("meta"):
        model = transformers.Qwen2_5_VLForConditionalGeneration(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()
              if not (k == "lm_head.weight" and config.tie_word_embeddings)}
    rng = np.random.default_rng(seed)

    def tensor(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key.endswith("embed_tokens.weight"):
            return 0.02 * rng.standard_normal(shape, np.float32)
        if len(shape) == 1:
            base = 1.0 if "norm" in key else 0.0
            return (base + 0.02 * rng.standard_normal(shape, np.float32)).astype(np.float32)
        fan_in = int(np.prod(shape[1:]))
        return rng.standard_normal(shape, np.float32) / np.float32(np.sqrt(fan_in))

    stream_safetensors_bf16(out / "model.safetensors", shapes, tensor)
    return sum(int(np.prod(s)) for s in shapes.values())


SHAPES = {"qwen2.5-0.5b": qwen25, "qwen3.5-0.8b": qwen35, "qwen2.5-vl-3b": qwen25_vl}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("output")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer-from", type=Path, default=TRAINED,
                    help="checkpoint whose tokenizer to copy (default: ../shared/models/qwen2-code-30m)")
    args = ap.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    params = SHAPES[args.shape](out, args.seed, args.tokenizer_from)
    print(f"wrote {out} ({params / 1e6:.1f} M parameters)")


if __name__ == "__main__":
    main()
