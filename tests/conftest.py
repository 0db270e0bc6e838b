"""Shared fixtures: tiny random Qwen checkpoints made with transformers, and bundles built from them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings


from qwen_edge.checkpoint.tiny import TINY_QWEN2, TINY_QWEN2_MOE, TINY_QWEN3, TINY_QWEN3_MOE, write_tokenizer_files

REPO = Path(__file__).resolve().parent.parent
TRAINED_MODEL = Path(os.environ.get("QWEN_EDGE_TRAINED_MODEL", REPO.parent / "shared" / "models" / "qwen2-code-30m"))

# CI must give the same verdict on every run: property tests draw a fixed sequence of examples unless
# QWEN_EDGE_HYPOTHESIS=explore asks for fresh ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("QWEN_EDGE_HYPOTHESIS") == "explore" else "ci")

# Every registered architecture must have a tiny config here (tests/test_arch.py checks).
TINY_CONFIGS = {
    "Qwen2ForCausalLM": TINY_QWEN2,
    "Qwen3ForCausalLM": TINY_QWEN3,
    "Qwen2MoeForCausalLM": TINY_QWEN2_MOE,
    "Qwen3MoeForCausalLM": TINY_QWEN3_MOE,
}


def make_hf_checkpoint(directory: Path, config: dict, *, seed: int = 0, dtype: str = "float32",
                       max_shard_size: str | None = None) -> Path:
    """A tiny random checkpoint saved by transformers itself, with randomised biases and norms."""
    import torch
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    tok = write_tokenizer_files(directory, config["vocab_size"])
    cfg = dict(config)
    cfg["bos_token_id"] = tok.token_to_id("<|endoftext|>")
    cfg["eos_token_id"] = tok.token_to_id("<|im_end|>")
    arch = cfg.pop("architectures")[0]
    cfg.pop("model_type", None)
    cfg.pop("torch_dtype", None)
    config_cls = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    model_cls = getattr(transformers, arch)
    torch.manual_seed(seed)
    model = model_cls(config_cls(**cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
            elif "norm" in name:
                p.normal_(1.0, 0.1)
            elif "embed_tokens" in name:
                p.normal_(0.0, 0.5)
            elif p.ndim == 2:  # the default 0.02 init gives near-flat logits that hide errors
                p.normal_(0.0, p.shape[1] ** -0.5)
            elif p.ndim == 3:  # stacked experts [E, out, in] (transformers 5)
                p.normal_(0.0, p.shape[2] ** -0.5)
    model = model.to(getattr(torch, dtype))
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, safe_serialization=True, **kwargs)
    gen = {"bos_token_id": cfg["bos_token_id"], "eos_token_id": [cfg["eos_token_id"], cfg["bos_token_id"]],
           "pad_token_id": cfg["bos_token_id"]}
    (directory / "generation_config.json").write_text(json.dumps(gen))
    return directory


@pytest.fixture(scope="session")
def qwen2_ckpt(tmp_path_factory) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("qwen2") / "ckpt", TINY_QWEN2)


@pytest.fixture(scope="session")
def qwen3_ckpt(tmp_path_factory) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("qwen3") / "ckpt", TINY_QWEN3, seed=1)


@pytest.fixture(scope="session")
def qwen3_moe_ckpt(tmp_path_factory) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("qwen3_moe") / "ckpt", TINY_QWEN3_MOE, seed=2)


@pytest.fixture(scope="session")
def qwen2_moe_ckpt(tmp_path_factory) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("qwen2_moe") / "ckpt", TINY_QWEN2_MOE, seed=4)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, qwen2_ckpt, qwen3_ckpt):
    """Lazily built bundles keyed by (architecture, precision name)."""
    from qwen_edge.build import BuildRequest, build
    from qwen_edge.precision import Precision

    made: dict[tuple[str, str], Path] = {}
    ckpts = {"qwen2": qwen2_ckpt, "qwen3": qwen3_ckpt}

    def get(arch: str, precision: str) -> Path:
        key = (arch, precision)
        if key not in made:
            out = tmp_path_factory.mktemp(f"bundle-{arch}-{precision}") / "bundle"
            build(BuildRequest(ckpts[arch], out, Precision.preset(precision)))
            made[key] = out
        return made[key]

    return get


# CI sets this: a test that needs a trained checkpoint then fails instead of skipping when it is
# missing, so the quality gates can never pass by not running (.ci/run).
REQUIRE_TRAINED = "QWEN_EDGE_REQUIRE_TRAINED_MODELS"


def trained_checkpoint(path: Path, setting: str) -> Path:
    """`path` when it holds a checkpoint; otherwise skip the test, or fail it under REQUIRE_TRAINED=1."""
    if (path / "config.json").is_file():
        return path
    message = f"trained checkpoint not found at {path} (set {setting})"
    if os.environ.get(REQUIRE_TRAINED) == "1":
        pytest.fail(f"{message}; {REQUIRE_TRAINED}=1 requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def trained_model() -> Path:
    return trained_checkpoint(TRAINED_MODEL, "QWEN_EDGE_TRAINED_MODEL")


def hf_logits_incremental(ckpt: Path, ids: np.ndarray, prefill: int) -> np.ndarray:
    """transformers logits through its own KV cache: prefill, then one token per step."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32).eval()
    rows = []
    with torch.no_grad():
        out = model(torch.as_tensor(ids[None, :prefill]), use_cache=True)
        rows.append(out.logits[0])
        past = out.past_key_values
        for k in range(prefill, len(ids)):
            out = model(torch.as_tensor(ids[None, k:k + 1]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            rows.append(out.logits[0])
    return torch.cat(rows).float().numpy()
