"""Write a random-weight checkpoint with the exact shape of Qwen2.5-0.5B-Instruct (bf16, one shard).

Biases and norm weights are randomised: all-zero biases are dropped by some exporters, which
changes their graph and flatters their speed. The tokenizer is the trained 30M model's when it is
available (its ids are all < 151936), else a small byte-level BPE.

    python benchmarks/make_checkpoint.py benchmarks/work/qwen2.5-0.5b-random
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from qwen_edge.checkpoint.tiny import random_weights, write_safetensors, write_tokenizer_files  # noqa: E402

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

TRAINED = Path(__file__).resolve().parent.parent.parent / "shared" / "models" / "qwen2-code-30m"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("output")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(QWEN25_05B)
    if (TRAINED / "tokenizer.json").is_file():
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
            shutil.copyfile(TRAINED / name, out / name)
        config["bos_token_id"], config["eos_token_id"] = 16381, 16383
    else:
        tok = write_tokenizer_files(out, 1024)
        config["bos_token_id"] = tok.token_to_id("<|endoftext|>")
        config["eos_token_id"] = tok.token_to_id("<|im_end|>")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config["bos_token_id"], "eos_token_id": [config["eos_token_id"], config["bos_token_id"]]}))
    weights = random_weights(config, args.seed)
    # Scale the embedding like a trained one (std ~0.02-0.05) so that logits are not saturated.
    weights["model.embed_tokens.weight"] *= np.float32(0.1)
    write_safetensors(out / "model.safetensors", weights, "BF16")
    print(f"wrote {out} ({sum(w.size for w in weights.values()) / 1e6:.1f} M parameters)")


if __name__ == "__main__":
    main()
