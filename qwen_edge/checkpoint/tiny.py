"""Tiny random Qwen checkpoints in the Hugging Face layout, made with numpy and tokenizers only.

Used by `qwen-edge demo` (which must run on a machine without torch) and by the tests' fixtures.
Weights are random but not degenerate: biases and norm weights are randomised too, because
all-zero biases or unit norms hide bugs (and some exporters silently drop zero biases).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

CORPUS = """\
def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        return self.items.pop()

print("hello, world")  # déjà vu, naïve café, 日本語, emoji 🙂
"""

QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

TINY_QWEN2: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "vocab_size": 384,
    "torch_dtype": "float32",
    "bos_token_id": 381,
    "eos_token_id": 383,
    "use_sliding_window": False,
}

TINY_QWEN3: dict[str, Any] = {
    **TINY_QWEN2,
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "head_dim": 32,  # != hidden / heads (16)
    "tie_word_embeddings": False,
    "attention_bias": False,
    "rope_theta": 1000000.0,
}

# Mixture-of-experts: a dense layer among sparse ones (mlp_only_layers / decoder_sparse_step), both
# values of norm_topk_prob, and Qwen2-MoE's shared expert.
TINY_QWEN3_MOE: dict[str, Any] = {
    **{k: v for k, v in TINY_QWEN3.items() if k != "use_sliding_window"},
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "num_hidden_layers": 3,
    "intermediate_size": 96,
    "moe_intermediate_size": 32,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "norm_topk_prob": True,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [1],
}

TINY_QWEN2_MOE: dict[str, Any] = {
    **{k: v for k, v in TINY_QWEN2.items() if k != "use_sliding_window"},
    "architectures": ["Qwen2MoeForCausalLM"],
    "model_type": "qwen2_moe",
    "num_hidden_layers": 4,
    "intermediate_size": 96,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 64,
    "num_experts": 8,
    "num_experts_per_tok": 3,
    "norm_topk_prob": False,
    "decoder_sparse_step": 2,
    "mlp_only_layers": [],
    "tie_word_embeddings": False,
}

# Qwen3.5 text configs (the hybrid decoder). Dense: an explicit layer_types with two full-attention
# layers, head_dim 32 (rotary 8: the rotation is written out); MoE: the default interval of 4,
# head_dim 64 (rotary 16: GroupQueryAttention rotates). Inverse GQA in the linear layers (2 key heads,
# 4 value heads). Made into checkpoints by transformers in the tests (tests/conftest.py).
TINY_QWEN35: dict[str, Any] = {
    "architectures": ["Qwen3_5ForCausalLM"],
    "model_type": "qwen3_5_text",
    "vocab_size": 384,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 5,
    "layer_types": ["linear_attention", "linear_attention", "full_attention", "linear_attention",
                    "full_attention"],
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 8,
    "linear_conv_kernel_dim": 4,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    "tie_word_embeddings": False,
}

TINY_QWEN35_MOE: dict[str, Any] = {
    **{k: v for k, v in TINY_QWEN35.items() if k not in ("layer_types",)},
    "architectures": ["Qwen3_5MoeForCausalLM"],
    "model_type": "qwen3_5_moe_text",
    "num_hidden_layers": 4,
    "head_dim": 64,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 48,
    "num_experts": 4,
    "num_experts_per_tok": 2,
}


# Qwen3-Next: TINY_QWEN35's layers with the fused linear-attention projections, MoE with a shared
# expert, and layer 1 kept dense (mlp_only_layers) as the config allows.
TINY_QWEN3_NEXT: dict[str, Any] = {
    **{k: v for k, v in TINY_QWEN35.items()},
    "architectures": ["Qwen3NextForCausalLM"],
    "model_type": "qwen3_next",
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 48,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "norm_topk_prob": True,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [1],
}

# Qwen3's added tokens that are not special (decode keeps them): reasoning and tool-call tags.
REASONING_TOKENS = ("<think>", "</think>", "<tool_call>", "</tool_call>")


def make_tokenizer(vocab_size: int, added_tokens: tuple[str, ...] = ()):
    """A byte-level BPE (Qwen2 style) trained on a small embedded corpus, with Qwen's special tokens, then
    `added_tokens` as non-special added tokens (as Qwen3 has REASONING_TOKENS); vocab_size in all."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS) - len(added_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CORPUS] * 4, trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    if added_tokens:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in added_tokens])
    return tok


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "F32") -> None:
    """A minimal safetensors writer (F32, F16 or BF16 by truncation with rounding)."""
    header: dict[str, Any] = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name], dtype=np.float32)
        if dtype == "F32":
            data = arr.tobytes()
        elif dtype == "F16":
            data = arr.astype(np.float16).tobytes()
        elif dtype == "BF16":
            bits = arr.view(np.uint32)
            rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            data = rounded.astype(np.uint16).tobytes()
        else:
            raise ValueError(f"unsupported dtype {dtype}")
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((-len(raw)) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for blob in blobs:
            fh.write(blob)


def random_weights(config: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h = config["hidden_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = config.get("head_dim", h // heads)
    m, v = config["intermediate_size"], config["vocab_size"]
    qwen3 = config["architectures"][0].startswith("Qwen3")
    bias = config.get("attention_bias", not qwen3)

    def lin(out: int, inp: int) -> np.ndarray:
        return (rng.standard_normal((out, inp)) / np.sqrt(inp)).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": (0.5 * rng.standard_normal((v, h))).astype(np.float32),
         "model.norm.weight": norm(h)}
    if not config.get("tie_word_embeddings", False):
        w["lm_head.weight"] = lin(v, h)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(h)
        w[p + "post_attention_layernorm.weight"] = norm(h)
        w[p + "self_attn.q_proj.weight"] = lin(heads * d, h)
        w[p + "self_attn.k_proj.weight"] = lin(kv * d, h)
        w[p + "self_attn.v_proj.weight"] = lin(kv * d, h)
        w[p + "self_attn.o_proj.weight"] = lin(h, heads * d)
        if bias:
            for name, size in (("q", heads * d), ("k", kv * d), ("v", kv * d)):
                w[p + f"self_attn.{name}_proj.bias"] = (0.1 * rng.standard_normal(size)).astype(np.float32)
        if qwen3:
            w[p + "self_attn.q_norm.weight"] = norm(d)
            w[p + "self_attn.k_norm.weight"] = norm(d)
        w[p + "mlp.gate_proj.weight"] = lin(m, h)
        w[p + "mlp.up_proj.weight"] = lin(m, h)
        w[p + "mlp.down_proj.weight"] = lin(h, m)
    return w


# Qwen2.5-VL (made by transformers in the tests, which also fill the vision token ids from the tokenizer):
# vision depth 4 with full attention in blocks 1 and 3 and 112-px windows, a 2-layer M-RoPE decoder.
TINY_QWEN25_VL: dict[str, Any] = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "model_type": "qwen2_5_vl",
    "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}},
    "vision_config": {"depth": 4, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                      "fullatt_block_indexes": [1, 3], "window_size": 112, "patch_size": 14,
                      "spatial_merge_size": 2, "temporal_patch_size": 2},
}

# Qwen3-VL: patch 16, a learned 8x8 position table, DeepStack from vision blocks 0 and 2 into the
# first two of three decoder layers, interleaved M-RoPE, q/k norms.
TINY_QWEN3_VL: dict[str, Any] = {
    "architectures": ["Qwen3VLForConditionalGeneration"],
    "model_type": "qwen3_vl",
    "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512, "max_position_embeddings": 512,
                    "rms_norm_eps": 1e-6, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                              "mrope_section": [2, 3, 3], "mrope_interleaved": True}},
    "vision_config": {"depth": 4, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                      "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "num_position_embeddings": 64, "deepstack_visual_indexes": [0, 2]},
}


def write_tokenizer_files(directory: Path, vocab_size: int, chat_template: str = QWEN_CHAT_TEMPLATE,
                          added_tokens: tuple[str, ...] = ()):
    tok = make_tokenizer(vocab_size, added_tokens)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer",
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
        "errors": "replace",
        "split_special_tokens": False,
        "chat_template": chat_template,
    }, indent=2))
    return tok


def make_tiny_checkpoint(directory: Path, config: dict[str, Any] | None = None, *, seed: int = 0,
                         dtype: str = "F32") -> Path:
    """Write a complete tiny checkpoint (config, weights, tokenizer, generation config)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = dict(config or TINY_QWEN2)
    tok = write_tokenizer_files(directory, config["vocab_size"])
    if tok.get_vocab_size() > config["vocab_size"]:
        raise ValueError(f"tokenizer has {tok.get_vocab_size()} tokens, config vocab_size {config['vocab_size']}")
    config["bos_token_id"] = tok.token_to_id("<|endoftext|>")
    config["eos_token_id"] = tok.token_to_id("<|im_end|>")
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "generation_config.json").write_text(json.dumps({
        "bos_token_id": config["bos_token_id"],
        "eos_token_id": [config["eos_token_id"], config["bos_token_id"]],
        "pad_token_id": config["bos_token_id"],
    }, indent=2))
    write_safetensors(directory / "model.safetensors", random_weights(config, seed), dtype)
    return directory
