"""A tiny Qwen3 checkpoint whose greedy answer is written in advance: reasoning, then a tool call.

A random tiny model never writes `<think>` or `<tool_call>` blocks, so the end-to-end tests of reasoning
and tool calls use a model made to: every decoder block's output projections are zero, so the residual
stream is the current token's embedding alone and the model is a bigram table (next token = f(this
token)); the output head is set so that f follows a chain:

    "\n" (the end of "<|im_start|>assistant\n") -> <think> -> REASONING -> </think> -> "\n\n"
        -> <tool_call> -> CALL -> </tool_call> -> <|im_end|>

The tags, the reasoning text, the call and "\n\n" are added tokens (as Qwen's tags are), so every token of
the chain is distinct. "\n\n" also ends Qwen3's prompt with enable_thinking=false and the thinking budget's
closing text, so those continue with the tool call. Everything else is the production path: transformers
saves it, `qwen_edge.build` makes the bundle, the runtime runs the ONNX graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from qwen_edge.checkpoint.tiny import TINY_QWEN3, make_tokenizer

TEMPLATE = Path(__file__).resolve().parents[1] / "runtime" / "templates" / "qwen3.jinja"
REASONING = "The user asks for the weather in Paris, so I call get_weather."
CALL_ARGUMENTS = {"city": "Paris"}
CALL = "\n" + json.dumps({"name": "get_weather", "arguments": CALL_ARGUMENTS}) + "\n"
ADDED = ["<think>", "</think>", "<tool_call>", "</tool_call>", REASONING, CALL, "\n\n"]
CONFIG = {**TINY_QWEN3, "max_position_embeddings": 1024}  # Qwen3's tool prompt is long in a tiny vocabulary
ALPHA = 30.0


def make_scripted_checkpoint(directory: Path) -> Path:
    from safetensors.numpy import load_file, save_file

    from tests.conftest import make_hf_checkpoint

    make_hf_checkpoint(directory, CONFIG, seed=7)
    tok = make_tokenizer(CONFIG["vocab_size"] - len(ADDED))
    tok.add_tokens(ADDED)
    assert tok.get_vocab_size() <= CONFIG["vocab_size"]
    tok.save(str(directory / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in ADDED + ["<|endoftext|>", "<|im_end|>"]}
    newline = tok.encode("<|im_start|>assistant\n").ids[-1]
    chain = [newline, ids["<think>"], ids[REASONING], ids["</think>"], ids["\n\n"], ids["<tool_call>"], ids[CALL],
             ids["</tool_call>"], ids["<|im_end|>"]]
    assert len(set(chain)) == len(chain)

    config_path = directory / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text())
    tok_config |= {"chat_template": TEMPLATE.read_text(encoding="utf-8"), "eos_token": "<|im_end|>"}
    config_path.write_text(json.dumps(tok_config))
    config = json.loads((directory / "config.json").read_text())
    config |= {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
         "pad_token_id": ids["<|endoftext|>"]}))

    weights_path = directory / "model.safetensors"
    weights = load_file(str(weights_path))
    for name in weights:
        if name.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
            weights[name] = np.zeros_like(weights[name])
    embed, norm = weights["model.embed_tokens.weight"], weights["model.norm.weight"]

    def final_hidden(token: int) -> np.ndarray:
        e = embed[token].astype(np.float64)
        return e / np.sqrt(np.mean(e * e) + CONFIG["rms_norm_eps"]) * norm

    head = np.zeros_like(weights["lm_head.weight"], dtype=np.float64)
    for this, following in zip(chain, chain[1:]):
        h = final_hidden(this)
        head[following] += ALPHA * h / (h @ h)
    for this, following in zip(chain, chain[1:]):
        logits = head @ final_hidden(this)
        assert logits.argmax() == following and np.sort(logits)[-2] < ALPHA - 10  # a wide greedy margin
    weights["lm_head.weight"] = head.astype(np.float32)
    save_file(weights, str(weights_path), metadata={"format": "pt"})
    return directory
