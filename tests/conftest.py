"""Shared fixtures: tiny random Qwen checkpoints made with transformers, and bundles built from them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings


from qwen_edge.checkpoint.tiny import (TINY_QWEN2, TINY_QWEN2_MOE, TINY_QWEN3, TINY_QWEN3_MOE, TINY_QWEN35,
                                       TINY_QWEN35_MOE, TINY_QWEN25_VL, TINY_QWEN3_NEXT, TINY_QWEN3_VL,
                                       write_tokenizer_files)

REPO = Path(__file__).resolve().parent.parent
TRAINED_MODEL = Path(os.environ.get("QWEN_EDGE_TRAINED_MODEL", REPO.parent / "shared" / "models" / "qwen2-code-30m"))
TRAINED_QWEN35 = Path(os.environ.get("QWEN_EDGE_TRAINED_QWEN35",
                                     REPO.parent / "shared" / "models" / "qwen35-code-11m"))

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
    "Qwen3_5ForCausalLM": TINY_QWEN35,
    "Qwen3_5ForConditionalGeneration": TINY_QWEN35,  # the same text model, multimodal layout
    "Qwen3_5MoeForCausalLM": TINY_QWEN35_MOE,
    "Qwen3_5MoeForConditionalGeneration": TINY_QWEN35_MOE,
    "Qwen3NextForCausalLM": TINY_QWEN3_NEXT,
    "Qwen2_5_VLForConditionalGeneration": TINY_QWEN25_VL,
    "Qwen3VLForConditionalGeneration": TINY_QWEN3_VL,
}


def randomize(model, seed: int, zero_centred_norms: bool = False) -> None:
    """Weights that make errors visible: random biases and norms (transformers' zero biases and unit
    norms hide bugs), projections scaled for logits far from flat."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and "dt_bias" not in name:
                p.normal_(0.0, 0.1)
            elif "norm" in name:
                p.normal_(0.0 if zero_centred_norms else 1.0, 0.1)
            elif "embed_tokens" in name:
                p.normal_(0.0, 0.5)
            elif p.ndim == 2:  # the default 0.02 init gives near-flat logits that hide errors
                p.normal_(0.0, p.shape[1] ** -0.5)
            elif p.ndim == 3:  # stacked experts [E, out, in] (transformers 5), a depthwise conv [C, 1, K]
                p.normal_(0.0, p.shape[2] ** -0.5)


def make_hf_checkpoint(directory: Path, config: dict, *, seed: int = 0, dtype: str = "float32",
                       max_shard_size: str | None = None, zero_centred_norms: bool = False,
                       **tokenizer_options) -> Path:
    """A tiny random checkpoint saved by transformers itself, with randomised biases and norms
    (tokenizer_options: write_tokenizer_files' chat_template and added_tokens)."""
    import torch
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    tok = write_tokenizer_files(directory, config["vocab_size"], **tokenizer_options)
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
    randomize(model, seed, zero_centred_norms=zero_centred_norms)
    model = model.to(getattr(torch, dtype))
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, safe_serialization=True, **kwargs)
    _write_generation_config(directory, cfg)
    return directory


def _write_generation_config(directory: Path, cfg: dict) -> None:
    gen = {"bos_token_id": cfg["bos_token_id"], "eos_token_id": [cfg["eos_token_id"], cfg["bos_token_id"]],
           "pad_token_id": cfg["bos_token_id"]}
    (directory / "generation_config.json").write_text(json.dumps(gen))


def make_qwen35_checkpoint(directory: Path, text_config: dict, *, multimodal: bool, tied: bool | None = None,
                           seed: int = 0) -> Path:
    """A tiny random Qwen3.5 (dense or MoE) saved by transformers: as `Qwen3_5[Moe]ForCausalLM`, or in
    the published multimodal layout (`model.language_model.*`, a small vision tower, and an `mtp.*`
    head in a shard of its own, which transformers does not write)."""
    import torch
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    tok = write_tokenizer_files(directory, text_config["vocab_size"])
    cfg = {k: v for k, v in text_config.items() if k not in ("architectures", "model_type")}
    cfg |= {"bos_token_id": tok.token_to_id("<|endoftext|>"), "eos_token_id": tok.token_to_id("<|im_end|>")}
    if tied is not None:
        cfg["tie_word_embeddings"] = tied
    moe = "Moe" in text_config["architectures"][0]
    kind = "Qwen3_5Moe" if moe else "Qwen3_5"
    torch.manual_seed(seed)
    if multimodal:
        vision = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                  "out_hidden_size": cfg["hidden_size"], "num_position_embeddings": 64}
        config = getattr(transformers, f"{kind}Config")(text_config=cfg, vision_config=vision,
                                                        tie_word_embeddings=cfg["tie_word_embeddings"])
        model = getattr(transformers, f"{kind}ForConditionalGeneration")(config).eval()
    else:
        model = getattr(transformers, f"{kind}ForCausalLM")(getattr(transformers, f"{kind}TextConfig")(**cfg)).eval()
    randomize(model, seed, zero_centred_norms=True)
    model.save_pretrained(directory, safe_serialization=True)
    if multimodal:
        from safetensors.numpy import save_file

        h = cfg["hidden_size"]
        rng = np.random.default_rng(seed)
        mtp = {"mtp.fc.weight": rng.normal(size=(h, 2 * h)).astype(np.float32),
               **{f"mtp.{n}.weight": rng.normal(size=h).astype(np.float32)
                  for n in ("norm", "pre_fc_norm_embedding", "pre_fc_norm_hidden")}}
        save_file(mtp, str(directory / "model-mtp.safetensors"))
        index = directory / "model.safetensors.index.json"
        if index.is_file():
            data = json.loads(index.read_text())
        else:  # sharded as published: every shard in the index, no model.safetensors
            from safetensors import safe_open

            single = directory / "model.safetensors"
            with safe_open(str(single), "np") as f:
                data = {"metadata": {}, "weight_map": {n: "model-00001-of-00001.safetensors" for n in f.keys()}}
            single.rename(directory / "model-00001-of-00001.safetensors")
        data["weight_map"] |= {n: "model-mtp.safetensors" for n in mtp}
        index.write_text(json.dumps(data))
    _write_generation_config(directory, cfg)
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
def qwen3_next_ckpt(tmp_path_factory) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("qwen3_next") / "ckpt", TINY_QWEN3_NEXT, seed=21,
                              zero_centred_norms=True)


@pytest.fixture(scope="session")
def qwen35_ckpts(tmp_path_factory):
    """Tiny Qwen3.5 checkpoints by (dense|moe, causal|multimodal, tied|untied), made on first use."""
    made: dict[tuple[str, str, str], Path] = {}

    def get(kind: str = "dense", layout: str = "causal", tie: str = "untied") -> Path:
        key = (kind, layout, tie)
        if key not in made:
            config = TINY_QWEN35_MOE if kind == "moe" else TINY_QWEN35
            made[key] = make_qwen35_checkpoint(tmp_path_factory.mktemp(f"qwen35-{kind}-{layout}-{tie}") / "ckpt",
                                               config, multimodal=layout == "multimodal", tied=tie == "tied",
                                               seed=len(made) + 10)
        return made[key]

    return get


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, request, qwen2_ckpt, qwen3_ckpt, qwen35_ckpts):
    """Lazily built bundles keyed by (architecture, precision name); "qwen35" is the published
    (multimodal, tied) dense layout, "qwen35_causal" Qwen3_5ForCausalLM as transformers saves it (no
    mrope_section), "qwen35_moe" Qwen3_5MoeForCausalLM and "qwen3_next" Qwen3NextForCausalLM; with
    `exact_speculation` built with the spare attention row (graph/decoder.py)."""
    from qwen_edge.build import BuildRequest, build
    from qwen_edge.graph.decoder import DecoderOptions
    from qwen_edge.precision import Precision

    made: dict[tuple[str, str, bool], Path] = {}
    ckpts = {"qwen2": lambda: qwen2_ckpt, "qwen3": lambda: qwen3_ckpt,
             "qwen35": lambda: qwen35_ckpts("dense", "multimodal", "tied"),
             "qwen35_causal": lambda: qwen35_ckpts("dense"), "qwen35_moe": lambda: qwen35_ckpts("moe"),
             "qwen3_next": lambda: request.getfixturevalue("qwen3_next_ckpt")}

    def get(arch: str, precision: str, exact_speculation: bool = False) -> Path:
        key = (arch, precision, exact_speculation)
        if key not in made:
            tag = "-exact" if exact_speculation else ""
            out = tmp_path_factory.mktemp(f"bundle-{arch}-{precision}{tag}") / "bundle"
            build(BuildRequest(ckpts[arch](), out, Precision.preset(precision),
                               options=DecoderOptions(exact_speculation=exact_speculation)))
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


@pytest.fixture
def trained_qwen35() -> Path:
    return trained_checkpoint(TRAINED_QWEN35, "QWEN_EDGE_TRAINED_QWEN35")


def assert_logits_match(got: np.ndarray, expected: np.ndarray, prefill: int, tol: float = 1e-3) -> None:
    """Bundle logits against transformers': the prefill rows and the decode rows each within `tol`, the
    same argmax everywhere, and reference logits far from flat (so that agreement means something)."""
    assert got.shape == expected.shape
    assert expected.std() > 0.5
    diff = np.abs(got - expected)
    assert diff[:prefill].max() <= tol, f"prefill max |diff| {diff[:prefill].max()}"
    assert diff[prefill:].max() <= tol, f"decode max |diff| {diff[prefill:].max()}"
    np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))


def hf_logits_incremental(ckpt: Path, ids: np.ndarray, prefill: int) -> np.ndarray:
    """transformers logits through its own KV cache: prefill, then one token per step."""
    import torch
    from transformers import AutoModelForCausalLM

    config = json.loads((Path(ckpt) / "config.json").read_text())
    if "vision_config" in config and "Qwen3_5" not in config["architectures"][0]:  # a VL model, text-only prompt
        import transformers

        model_cls = getattr(transformers, config["architectures"][0])
    else:
        model_cls = AutoModelForCausalLM
    model = model_cls.from_pretrained(str(ckpt), dtype=torch.float32).eval()
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


VL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>")


def make_vl_checkpoint(directory: Path, tiny: dict | None = None, *, seed: int = 0) -> Path:
    """A tiny random Qwen2.5-VL (TINY_QWEN25_VL) or Qwen3-VL (TINY_QWEN3_VL) saved by transformers, with a
    tokenizer that knows the vision tokens."""
    import torch
    import transformers

    tiny = tiny or TINY_QWEN25_VL
    directory.mkdir(parents=True, exist_ok=True)
    tok = write_tokenizer_files(directory, 512, added_tokens=VL_TOKENS)
    ids = {name: tok.token_to_id(f"<|{name}|>") for name in ("vision_start", "vision_end", "image_pad")}
    text = dict(tiny["text_config"], bos_token_id=tok.token_to_id("<|endoftext|>"),
                eos_token_id=tok.token_to_id("<|im_end|>"))
    arch = tiny["architectures"][0]
    config = getattr(transformers, arch.replace("ForConditionalGeneration", "Config"))(
        text_config=text, vision_config=tiny["vision_config"], image_token_id=ids["image_pad"],
        vision_start_token_id=ids["vision_start"], vision_end_token_id=ids["vision_end"], video_token_id=0,
        tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(config).eval()
    randomize(model, seed)
    model.save_pretrained(directory, safe_serialization=True)
    _write_generation_config(directory, text)
    return directory


@pytest.fixture(scope="session")
def qwen25vl_ckpt(tmp_path_factory) -> Path:
    return make_vl_checkpoint(tmp_path_factory.mktemp("qwen25vl") / "ckpt", seed=5)


@pytest.fixture(scope="session")
def qwen3vl_ckpt(tmp_path_factory) -> Path:
    return make_vl_checkpoint(tmp_path_factory.mktemp("qwen3vl") / "ckpt", TINY_QWEN3_VL, seed=6)


@pytest.fixture(scope="session")
def vl_bundles(request, tmp_path_factory):
    """Vision-language bundles built by `build` for the cpu target: vl_bundles(precision, arch) with arch
    "qwen2_5_vl" (default) or "qwen3_vl" (built once each)."""
    from qwen_edge.build.run import build_targets
    from qwen_edge.targets import get_target

    built: dict[tuple[str, str], Path] = {}
    fixtures = {"qwen2_5_vl": "qwen25vl_ckpt", "qwen3_vl": "qwen3vl_ckpt"}

    def get(precision: str = "fp32", arch: str = "qwen2_5_vl") -> Path:
        if (precision, arch) not in built:
            out = tmp_path_factory.mktemp("vl_bundle") / f"{arch}-{precision}"
            build_targets(request.getfixturevalue(fixtures[arch]), out, [get_target("cpu")], precision=precision)
            built[precision, arch] = out
        return built[precision, arch]

    return get
