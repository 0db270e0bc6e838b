"""genai_config.json, so that a bundle also runs unmodified in onnxruntime-genai.

`spec` is the model's qwen_edge.arch.ArchSpec (read for its sizes only); `generation` the checkpoint's
GenerationDefaults, whose sampling fields become the `search` defaults (as onnxruntime-genai's own builder
does from generation_config.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# The tool-call / reasoning token ids onnxruntime-genai 0.18 reads from `model` (its builder's
# add_special_token_ids, models/builder.py, writes them with these candidate tokens, first found wins).
SPECIAL_TOKEN_KEYS = {
    "bot_token_id": ("<tool_call>", "<|tool_call|>"),
    "eot_token_id": ("</tool_call>", "<|/tool_call|>"),
    "bor_token_id": ("<think>",),
    "eor_token_id": ("</think>",),
}
# transformers' GenerationConfig defaults for the fields a generation_config.json leaves out.
_SAMPLING_DEFAULTS = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0}


def special_token_ids(tokenizer_json: Path) -> dict[str, int]:
    """{genai key: token id} for the reasoning and tool-call tags that tokenizer.json has as added tokens."""
    data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    added = {t.get("content"): t.get("id") for t in data.get("added_tokens") or () if isinstance(t, dict)}
    out = {}
    for key, candidates in SPECIAL_TOKEN_KEYS.items():
        for token in candidates:
            if isinstance(added.get(token), int):
                out[key] = added[token]
                break
    return out


def search_section(generation, context_length: int, share_buffer: bool) -> dict[str, Any]:
    """genai's `search` defaults: the checkpoint's sampling (transformers' defaults for fields it omits),
    greedy (top_k 1) when it does not sample; max_length is always the context length."""
    penalty = generation.repetition_penalty if generation.repetition_penalty is not None else 1.0
    sampling = {"do_sample": False, "temperature": 1.0, "top_k": 1, "top_p": 1.0, "repetition_penalty": penalty}
    if generation.do_sample and generation.temperature != 0:
        sampling = {"do_sample": True, "repetition_penalty": penalty} | {
            key: getattr(generation, key) if getattr(generation, key) is not None else default
            for key, default in _SAMPLING_DEFAULTS.items() if key != "repetition_penalty"}
    return {
        "diversity_penalty": 0.0,
        "early_stopping": True,
        "length_penalty": 1.0,
        "max_length": context_length,
        "min_length": 0,
        "no_repeat_ngram_size": 0,
        "num_beams": 1,
        "num_return_sequences": 1,
        "past_present_share_buffer": share_buffer,
        **sampling,
    }

# onnxruntime-genai picks its model class by type and knows no MoE variants; our MoE graphs have the
# dense decoder's IO, so they run as the dense type.
# Qwen3.5 in every layout is its builder's `qwen3_5_text` (the decoder of the text model), and so is
# Qwen3-Next, whose graph is Qwen3.5-MoE's.
GENAI_MODEL_TYPES = {"qwen3_moe": "qwen3", "qwen2_moe": "qwen2", "qwen3_5": "qwen3_5_text",
                     "qwen3_5_moe": "qwen3_5_text", "qwen3_5_moe_text": "qwen3_5_text", "qwen3_next": "qwen3_5_text"}


# onnxruntime-genai 0.18's top-level `speculative` block (its GeneratorParams speculative options: ngram_size,
# max_draft_tokens, ngram_chained_lookup, min_adaptive_k, cooldown). "ngram" is prompt lookup with the
# settings that decoded fastest in benchmarks/speculative.py (draft 4 tokens; draft 8 with cooldown was slower).
GENAI_SPECULATIVE = {"ngram": {"ngram_size": 3, "max_draft_tokens": 4}}


def speculative_section(kind: str, hybrid: bool) -> dict[str, Any]:
    """genai's `speculative` block for `kind` (a GENAI_SPECULATIVE key)."""
    if kind not in GENAI_SPECULATIVE:
        raise ConfigError(f"genai_speculative must be one of {', '.join(GENAI_SPECULATIVE)}, got {kind!r}")
    if hybrid:
        raise ConfigError("genai_speculative: onnxruntime-genai 0.18 cannot rewind a hybrid model's recurrent "
                          "state (RewindTo needs a snapshot); use qwen-edge run --speculative instead")
    return dict(GENAI_SPECULATIVE[kind])


def genai_config(spec, *, model_type: str, context_length: int, generation, filename: str = "model.onnx",
                 provider_options: list[dict[str, Any]] | None = None, share_buffer: bool = False,
                 special_tokens: dict[str, int] | None = None, speculative: str | None = None) -> dict[str, Any]:
    """special_tokens: special_token_ids() of the bundle's tokenizer, written into `model`; speculative: a
    GENAI_SPECULATIVE key, written as genai's `speculative` block (None: no block, plain decoding)."""
    inputs = {"input_ids": "input_ids", "attention_mask": "attention_mask",
              "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"}
    outputs = {"logits": "logits", "present_key_names": "present.%d.key", "present_value_names": "present.%d.value"}
    if spec.hybrid is not None:  # linear-attention states, named by absolute layer index
        inputs |= {"past_conv_names": "past.%d.conv", "past_recurrent_names": "past.%d.recurrent"}
        outputs |= {"present_conv_names": "present.%d.conv", "present_recurrent_names": "present.%d.recurrent"}
    eos = list(generation.eos_token_ids)
    pad = generation.pad_token_id if generation.pad_token_id is not None else eos[0]
    bos = generation.bos_token_id if generation.bos_token_id is not None else pad
    config = {
        "model": {
            "bos_token_id": bos,
            "context_length": context_length,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": provider_options or []},
                "filename": filename,
                "head_size": spec.head_dim,
                "hidden_size": spec.hidden_size,
                "inputs": inputs,
                "outputs": outputs,
                "num_attention_heads": spec.num_heads,
                "num_hidden_layers": spec.num_layers,
                "num_key_value_heads": spec.num_kv_heads,
            },
            "eos_token_id": eos if len(eos) > 1 else eos[0],
            "pad_token_id": pad,
            "type": GENAI_MODEL_TYPES.get(model_type, model_type),
            "vocab_size": spec.vocab_size,
        },
        "search": search_section(generation, context_length, share_buffer),
    }
    for key in SPECIAL_TOKEN_KEYS:
        if special_tokens and key in special_tokens:
            config["model"][key] = int(special_tokens[key])
    if speculative is not None:
        config["speculative"] = speculative_section(speculative, spec.hybrid is not None)
    return config
