"""Qwen3-MoE and Qwen2-MoE: config rules, parity with transformers, both expert layouts, stats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qwen_edge.arch import adapter_for
from qwen_edge.build import BuildRequest, build
from qwen_edge.errors import CheckpointError, GraphError
from qwen_edge.precision import Precision
from qwen_edge.runtime import Model
from qwen_edge.checkpoint.tiny import TINY_QWEN2_MOE, TINY_QWEN3_MOE
from qwen_edge.verify.executor import cached_path_logits

from tests.conftest import assert_logits_match, hf_logits_incremental

IDS = np.array([5, 17, 42, 99, 3, 250, 7, 8, 120, 64, 33, 301, 2, 77], dtype=np.int64)
PREFILL = 6  # then 8 decode steps through the cache
CONFIGS = {"qwen3_moe": TINY_QWEN3_MOE, "qwen2_moe": TINY_QWEN2_MOE}


@pytest.fixture(scope="module")
def moe_bundles(tmp_path_factory, qwen3_moe_ckpt, qwen2_moe_ckpt):
    ckpts = {"qwen3_moe": qwen3_moe_ckpt, "qwen2_moe": qwen2_moe_ckpt}
    made = {}

    def get(arch: str, precision: str):
        if (arch, precision) not in made:
            out = tmp_path_factory.mktemp(f"{arch}-{precision}") / "bundle"
            build(BuildRequest(ckpts[arch], out, Precision.preset(precision)))
            made[arch, precision] = out
        return ckpts[arch], made[arch, precision]

    return get


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_sparse_layers_follow_transformers(arch):
    import importlib

    import transformers

    config = dict(CONFIGS[arch], num_hidden_layers=6, decoder_sparse_step=2, mlp_only_layers=[3])
    name = config["architectures"][0]
    spec = adapter_for(name).spec(config, name)
    hf_config = getattr(transformers, name.replace("ForCausalLM", "Config"))(
        **{k: v for k, v in config.items() if k not in ("architectures", "model_type", "torch_dtype")})
    modeling = importlib.import_module(f"transformers.models.{config['model_type']}.modeling_{config['model_type']}")
    layer_cls = getattr(modeling, name.replace("ForCausalLM", "DecoderLayer"))
    layers = [layer_cls(hf_config, i) for i in range(6)]
    expected = tuple(i for i, layer in enumerate(layers) if hasattr(layer.mlp, "experts"))
    assert spec.moe.sparse_layers == expected == (1, 5)


def test_moe_config_spellings_and_errors():
    name = "Qwen3MoeForCausalLM"
    hub = adapter_for(name).spec(TINY_QWEN3_MOE, name)
    v5 = {k: v for k, v in TINY_QWEN3_MOE.items() if k != "num_experts"} | {"num_local_experts": 8}
    assert adapter_for(name).spec(v5, name) == hub
    with pytest.raises(CheckpointError, match="num_experts_per_tok"):
        adapter_for(name).spec(dict(TINY_QWEN3_MOE, num_experts_per_tok=9), name)
    with pytest.raises(CheckpointError, match="mlp_only_layers"):
        adapter_for(name).spec(dict(TINY_QWEN3_MOE, mlp_only_layers="1"), name)
    with pytest.raises(CheckpointError, match="shared_expert_intermediate_size"):
        adapter_for("Qwen2MoeForCausalLM").spec(
            {k: v for k, v in TINY_QWEN2_MOE.items() if k != "shared_expert_intermediate_size"},
            "Qwen2MoeForCausalLM")


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_fp32_bundle_matches_transformers_prefill_and_8_decode_steps(arch, moe_bundles):
    ckpt, bundle = moe_bundles(arch, "fp32")
    expected = hf_logits_incremental(ckpt, IDS, PREFILL)
    got = cached_path_logits(Model(bundle), IDS, prefill=PREFILL)
    assert_logits_match(got, expected, PREFILL)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["graph"]["op_counts"]["com.microsoft.MoE"] == len(manifest["architecture"]["moe"]["sparse_layers"])


@pytest.mark.parametrize("precision,min_top1", [("int8", 0.85), ("int4", 0.4)])
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_quantized_experts_run_as_qmoe_and_stay_close(arch, precision, min_top1, moe_bundles):
    from qwen_edge.verify.metrics import compare_logits

    _, reference = moe_bundles(arch, "fp32")
    _, bundle = moe_bundles(arch, precision)
    model, ref = Model(bundle), Model(reference)
    report = compare_logits(lambda ids: cached_path_logits(model, ids, prefill=4), ref.logits,
                            [IDS, IDS[::-1].copy(), (IDS * 7) % 380])
    # Random tiny models are the worst case for low-bit weights (see test_parity); a routing or
    # packing bug gives chance level (1/384). tests/test_moe_quality.py checks a trained model.
    assert report.top1_agreement >= min_top1, report
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["graph"]["op_counts"]["com.microsoft.QMoE"] >= 1


def _stack_experts(src, dst):
    """Rewrite a per-expert checkpoint in transformers 5's stacked in-memory layout."""
    import shutil

    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    for path in dst.glob("*.safetensors"):
        tensors = load_file(path)
        out = {k: v for k, v in tensors.items() if ".experts." not in k}
        layers = sorted({k.split(".")[2] for k in tensors if ".experts." in k}, key=int)
        for i in layers:
            n = 1 + max(int(k.split(".")[5]) for k in tensors if k.startswith(f"model.layers.{i}.mlp.experts."))
            e = [f"model.layers.{i}.mlp.experts.{j}" for j in range(n)]
            out[f"model.layers.{i}.mlp.experts.gate_up_proj"] = np.stack(
                [np.concatenate([tensors[f"{x}.gate_proj.weight"], tensors[f"{x}.up_proj.weight"]]) for x in e])
            out[f"model.layers.{i}.mlp.experts.down_proj"] = np.stack([tensors[f"{x}.down_proj.weight"] for x in e])
        path.unlink()
        save_file(out, path)
    (dst / "model.safetensors.index.json").unlink(missing_ok=True)


def test_stacked_expert_layout_builds_the_same_graph(qwen3_moe_ckpt, moe_bundles, tmp_path):
    stacked = tmp_path / "stacked"
    _stack_experts(qwen3_moe_ckpt, stacked)
    from safetensors import safe_open

    with safe_open(str(stacked / "model.safetensors"), "np") as f:
        assert "model.layers.0.mlp.experts.gate_up_proj" in f.keys()
    for precision in ("fp32", "int4"):
        _, per_expert = moe_bundles("qwen3_moe", precision)
        build(BuildRequest(stacked, tmp_path / precision, Precision.preset(precision)))
        assert (tmp_path / precision / "model.onnx.data").read_bytes() == (per_expert / "model.onnx.data").read_bytes()


def test_sharded_checkpoint_builds_and_missing_expert_is_named(tmp_path):
    from tests.conftest import make_hf_checkpoint

    ckpt = make_hf_checkpoint(tmp_path / "sharded", TINY_QWEN2_MOE, seed=5, max_shard_size="100KB")
    assert len(list(ckpt.glob("*.safetensors"))) > 2
    build(BuildRequest(ckpt, tmp_path / "bundle", Precision.preset("int4")))
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    victim = "model.layers.3.mlp.experts.5.down_proj.weight"
    del index["weight_map"][victim]
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=victim.replace(".", r"\.")):
        build(BuildRequest(ckpt, tmp_path / "bundle2", Precision.preset("int4")))


def test_block_size_must_divide_expert_widths(qwen3_moe_ckpt, tmp_path):
    with pytest.raises(GraphError, match="block size"):
        build(BuildRequest(qwen3_moe_ckpt, tmp_path / "b", Precision.preset("int4", block_size=64)))


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_manifest_counts_active_parameters_and_bytes_per_token(arch, moe_bundles):
    c = CONFIGS[arch]
    name = c["architectures"][0]
    spec = adapter_for(name).spec(c, name)
    h, m, e, k = spec.hidden_size, spec.moe.intermediate_size, spec.moe.num_experts, spec.moe.top_k
    sparse = len(spec.moe.sparse_layers)
    # The stats count projections, biases, embeddings and heads (not norm weights).
    attn = h * (spec.q_size + 2 * spec.kv_size) + spec.q_size * h + (spec.q_size + 2 * spec.kv_size) * \
        spec.attention_bias
    dense_mlp = 3 * h * spec.intermediate_size
    shared = 3 * h * spec.moe.shared_expert_intermediate_size + h if spec.moe.shared_expert_intermediate_size else 0
    per_sparse_fixed = e * h + shared  # router and shared expert
    outer = spec.vocab_size * h * (1 if spec.tie_word_embeddings else 2)
    fixed = spec.num_layers * attn + (spec.num_layers - sparse) * dense_mlp + sparse * per_sparse_fixed + outer
    experts = sparse * e * 3 * h * m
    _, bundle = moe_bundles(arch, "fp32")
    w = json.loads((bundle / "manifest.json").read_text())["weights"]
    assert w["parameters"] == fixed + experts
    assert w["active_parameters"] == fixed + experts * k // e
    # float32: every active weight is read once per token, the embedding only one row.
    assert w["bytes_read_per_token"] == 4 * (fixed + experts * k // e - spec.vocab_size * h + h)


def test_inspect_shows_experts_and_active_parameters(moe_bundles, capsys):
    from qwen_edge.cli import main

    _, bundle = moe_bundles("qwen2_moe", "int4")
    assert main(["inspect", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "8 x 32 wide, top-3, in 2 of 4 layers, shared expert 64" in out
    assert "active of" in out and "MB of weights read" in out


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_int4_moe_bundle_runs_in_onnxruntime_genai_with_same_greedy_tokens(arch, moe_bundles):
    pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is a test dependency; install .[test]")
    from qwen_edge.runtime import load

    from tests.bundle.test_genai_compat import assert_same_greedy

    _, bundle = moe_bundles(arch, "int4")
    gen = load(bundle)
    assert_same_greedy(gen, bundle, gen.model.encode("def fibonacci(n):"), 16)
