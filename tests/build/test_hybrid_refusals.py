"""Malformed Qwen3.5 and Qwen3-Next checkpoints (the hybrid cases of the malformed-checkpoint corpus): each is refused
before the graph builder writes a byte, in one line naming the config key or tensor, exit code 3."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from qwen_edge.cli import main

MM = "model.language_model."


def _copy(request, root: Path, kind: str, layout: str) -> Path:
    """A copy of a tiny Qwen3.5 (`kind` dense or moe) or Qwen3-Next (`kind` next) checkpoint."""
    source = request.getfixturevalue("qwen3_next_ckpt") if kind == "next" else \
        request.getfixturevalue("qwen35_ckpts")(kind, layout)
    shutil.copytree(source, root)
    return root


def _text_config(root: Path, edit) -> None:
    path = root / "config.json"
    config = json.loads(path.read_text())
    edit(config.get("text_config", config))
    path.write_text(json.dumps(config))


def _tensors(root: Path, edit) -> None:
    """Rewrite the weights shard through edit(dict of arrays), keeping the index in step."""
    shard = next(p for p in sorted(root.glob("*.safetensors")) if "mtp" not in p.name)
    tensors = dict(load_file(str(shard)))
    edit(tensors)
    save_file(tensors, str(shard))
    index = root / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data["weight_map"] = {k: v for k, v in data["weight_map"].items() if v != shard.name} | \
            {name: shard.name for name in tensors}
        index.write_text(json.dumps(data))


def _replace(name: str, fn):
    def edit(tensors):
        tensors[name] = np.ascontiguousarray(fn(tensors[name]))
    return edit


def _strip_language_model_prefix(tensors):
    for name in [n for n in tensors if n.startswith(MM)]:
        tensors["model." + name[len(MM):]] = tensors.pop(name)


CASES = [
    # (id, kind, layout, edit(root), culprits)
    ("layer-types-wrong-length", "dense", "causal",
     lambda r: _text_config(r, lambda c: c.update(layer_types=c["layer_types"][:-1])), ["'layer_types'", "4 layers"]),
    ("layer-types-unknown-kind", "dense", "multimodal",
     lambda r: _text_config(r, lambda c: c["layer_types"].__setitem__(1, "sliding_attention")),
     ["'layer_types'", "'sliding_attention'"]),
    ("value-heads-not-a-multiple-of-key-heads", "dense", "causal",
     lambda r: _text_config(r, lambda c: c.update(linear_num_value_heads=3)), ["linear_num_value_heads (3)"]),
    ("conv-kernel-shape", "dense", "causal",
     lambda r: _tensors(r, _replace("model.layers.0.linear_attn.conv1d.weight", lambda w: w[..., :3])),
     ["'model.layers.0.linear_attn.conv1d.weight'", "has shape [96, 1, 3], config.json implies [96, 1, 4]"]),
    ("a-log-shape", "dense", "multimodal",
     lambda r: _tensors(r, _replace(f"{MM}layers.1.linear_attn.A_log", lambda w: w[:-1])),
     [f"'{MM}layers.1.linear_attn.A_log'"]),
    ("query-without-its-gate-rows", "dense", "causal",
     lambda r: _tensors(r, _replace("model.layers.2.self_attn.q_proj.weight", lambda w: w[: len(w) // 2])),
     ["'model.layers.2.self_attn.q_proj.weight'", "config.json implies [128, 64]"]),
    ("shared-expert-gate-shape", "moe", "causal",
     lambda r: _tensors(r, _replace("model.layers.3.mlp.shared_expert_gate.weight", lambda w: w[:, :-1])),
     ["'model.layers.3.mlp.shared_expert_gate.weight'"]),
    ("missing-language-model-prefix", "dense", "multimodal", lambda r: _tensors(r, _strip_language_model_prefix),
     [f"'{MM}embed_tokens.weight' is missing", "'model.embed_tokens.weight'"]),
    ("expert-count-disagrees-with-router", "moe", "multimodal",
     lambda r: _text_config(r, lambda c: c.update(num_experts=c["num_experts"] + 1)),
     [f"'{MM}layers.0.mlp.gate.weight'", "config.json implies [5, 64]"]),
    ("qwen3-next-fused-ba-shape", "next", "causal",
     lambda r: _tensors(r, _replace("model.layers.0.linear_attn.in_proj_ba.weight", lambda w: w[:-2])),
     ["'model.layers.0.linear_attn.in_proj_ba.weight'", "has shape [6, 64], config.json implies [8, 64]"]),
    ("qwen3-next-fused-qkvz-missing", "next", "causal",
     lambda r: _tensors(r, lambda t: t.pop("model.layers.3.linear_attn.in_proj_qkvz.weight")),
     ["'model.layers.3.linear_attn.in_proj_qkvz.weight' is missing"]),
]


@pytest.mark.parametrize("kind,layout,edit,culprits", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_qwen35_is_refused_before_the_graph_is_built(kind, layout, edit, culprits, request, tmp_path,
                                                               capsys, monkeypatch):
    import qwen_edge.build.decoder_stages as stages

    root = _copy(request, tmp_path / "ckpt", kind, layout)
    edit(root)
    capsys.readouterr()  # making the checkpoint printed transformers' progress

    def never(*args, **kwargs):
        raise AssertionError("the graph builder ran")

    monkeypatch.setattr(stages.DecoderStages, "write", never)
    out = tmp_path / "out"
    code = main(["build", str(root), "-o", str(out), "-q"])
    _, err = capsys.readouterr()
    assert code == 3, err
    assert err.startswith("qwen-edge: error: ") and err.count("\n") == 1, err
    for culprit in culprits:
        assert culprit in err, f"{culprit!r} not in {err!r}"
    assert not out.exists()
