"""genai_config.json, so that a bundle also runs unmodified in onnxruntime-genai.

`spec` is the model's qwen_edge.arch.ArchSpec (read for its sizes only).
"""

from __future__ import annotations

from typing import Any

# onnxruntime-genai picks its model class by type and knows no MoE variants; our MoE graphs have the
# dense decoder's IO, so they run as the dense type.
# Qwen3.5 in every layout is its builder's `qwen3_5_text` (the decoder of the text model).
GENAI_MODEL_TYPES = {"qwen3_moe": "qwen3", "qwen2_moe": "qwen2", "qwen3_5": "qwen3_5_text",
                     "qwen3_5_moe": "qwen3_5_text", "qwen3_5_moe_text": "qwen3_5_text"}


def genai_config(spec, *, model_type: str, context_length: int, generation, filename: str = "model.onnx",
                 provider_options: list[dict[str, Any]] | None = None, share_buffer: bool = False) -> dict[str, Any]:
    inputs = {"input_ids": "input_ids", "attention_mask": "attention_mask",
              "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"}
    outputs = {"logits": "logits", "present_key_names": "present.%d.key", "present_value_names": "present.%d.value"}
    if spec.hybrid is not None:  # linear-attention states, named by absolute layer index
        inputs |= {"past_conv_names": "past.%d.conv", "past_recurrent_names": "past.%d.recurrent"}
        outputs |= {"present_conv_names": "present.%d.conv", "present_recurrent_names": "present.%d.recurrent"}
    eos = list(generation.eos_token_ids)
    pad = generation.pad_token_id if generation.pad_token_id is not None else eos[0]
    bos = generation.bos_token_id if generation.bos_token_id is not None else pad
    return {
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
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": context_length,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": share_buffer,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }
