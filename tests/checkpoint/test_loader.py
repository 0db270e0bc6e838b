"""Checkpoint: a validated Hugging Face checkpoint directory with lazy, tracked tensor reads."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy

from qwen_edge.checkpoint import Checkpoint, GenerationDefaults, SafetensorsFile
from qwen_edge.errors import CheckpointError

CONFIG = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 8, "num_hidden_layers": 2,
          "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 16, "vocab_size": 12,
          "max_position_embeddings": 64, "eos_token_id": 2, "bos_token_id": 1, "dtype": "bfloat16"}


def tokenizer_json() -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, **{c: 3 + i for i, c in enumerate("abcdefghi")}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok.to_str()


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {"model.embed_tokens.weight": rng.standard_normal((12, 8)).astype(np.float32),
         "model.norm.weight": rng.standard_normal(8).astype(np.float32)}
    for i in range(2):
        w[f"model.layers.{i}.mlp.up_proj.weight"] = rng.standard_normal((16, 8)).astype(np.float32)
        w[f"model.layers.{i}.input_layernorm.weight"] = rng.standard_normal(8).astype(np.float32)
    return w


def make_checkpoint(root: Path, *, shards: int = 1, config: dict | None = None, tensors=None,
                    generation: dict | None = None, tokenizer_config: dict | None = None) -> Path:
    """A tiny checkpoint: config, tokenizer, generation config and model.safetensors (or N shards + index)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(CONFIG if config is None else config))
    (root / "tokenizer.json").write_text(tokenizer_json())
    if tokenizer_config is not None:
        (root / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    if generation is not None:
        (root / "generation_config.json").write_text(json.dumps(generation))
    tensors = weights() if tensors is None else tensors
    if shards == 1:
        save_numpy(tensors, str(root / "model.safetensors"))
        return root
    names = sorted(tensors)
    weight_map = {}
    for k in range(shards):
        shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[k::shards]}
        save_numpy(part, str(root / shard))
        weight_map.update({n: shard for n in part})
    index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    return root


@pytest.fixture
def ckpt_dir(tmp_path) -> Path:
    return make_checkpoint(tmp_path / "ckpt", generation={"eos_token_id": [2, 1], "bos_token_id": 1,
                                                          "do_sample": True, "temperature": 0.7, "top_k": 20,
                                                          "top_p": 0.8, "repetition_penalty": 1.05,
                                                          "max_new_tokens": 128})


def test_single_file_checkpoint(ckpt_dir):
    w = weights()
    with Checkpoint.open(ckpt_dir) as ckpt:
        assert ckpt.path == ckpt_dir.resolve()
        assert ckpt.architecture == "Qwen2ForCausalLM" and ckpt.config["hidden_size"] == 8
        assert ckpt.tensor_names() == sorted(w)
        assert ckpt.has("model.norm.weight") and not ckpt.has("lm_head.weight")
        info = ckpt.tensor_info("model.layers.1.mlp.up_proj.weight")
        assert (info.dtype, info.shape) == ("F32", (16, 8))
        assert ckpt.weight_bytes() == sum(a.nbytes for a in w.values())
        for name, arr in w.items():
            np.testing.assert_array_equal(ckpt.read(name), arr)
        assert ckpt.torch_dtype == "bfloat16"
        assert set(ckpt.tokenizer_files) == {"tokenizer.json"}
        assert ckpt.chat_template is None
        with pytest.raises(CheckpointError, match="ckpt: no tensor named 'lm_head.weight'"):
            ckpt.read("lm_head.weight")


def test_row_views_read_rows_of_their_source_and_consume_it(ckpt_dir):
    up = "model.layers.0.mlp.up_proj.weight"
    w = weights()[up]
    rows = np.array([15, 0, 3, 3])
    with Checkpoint.open(ckpt_dir) as ckpt:
        ckpt.add_row_views({"view.weight": (up, rows)})
        assert ckpt.has("view.weight") and "view.weight" not in ckpt.tensor_names()
        assert ckpt.tensor_info("view.weight").shape == (4, 8)
        np.testing.assert_array_equal(ckpt.read("view.weight"), w[rows])
        assert up not in ckpt.unconsumed()
        for bad in ({"view2": (up, np.array([16]))}, {"view2": (up, np.array([-1]))},
                    {"model.norm.weight": (up, np.array([0]))}, {"view2": (up, np.zeros((2, 2), int))}):
            with pytest.raises(CheckpointError, match="cannot view rows of"):
                ckpt.add_row_views(bad)
        with pytest.raises(CheckpointError, match="no tensor named 'absent'"):
            ckpt.add_row_views({"view3": ("absent", np.array([0]))})


def test_read_expected_checks_presence_and_shape_in_one_line(ckpt_dir):
    up = "model.layers.0.mlp.up_proj.weight"
    with Checkpoint.open(ckpt_dir) as ckpt:
        np.testing.assert_array_equal(ckpt.read_expected(up, (16, 8)), weights()[up])
        with pytest.raises(CheckpointError, match=r"ckpt: tensor 'model.layers.0.mlp.up_proj.weight' has shape "
                                                  r"\[16, 8\], config.json implies \[8, 16\]$"):
            ckpt.read_expected(up, (8, 16))
        with pytest.raises(CheckpointError, match=r"ckpt: tensor 'lm_head.weight' is missing \(hint\)$"):
            ckpt.expect("lm_head.weight", (8, 8), lambda: " (hint)")
        with pytest.raises(CheckpointError, match=r"ckpt: tensor 'lm_head.weight' is missing$"):
            ckpt.read_expected("lm_head.weight", (8, 8))


@pytest.mark.parametrize("shards", [2, 3])
def test_sharded_checkpoint(tmp_path, shards):
    w = weights(1)
    root = make_checkpoint(tmp_path / "sharded", shards=shards, tensors=w)
    with Checkpoint.open(root) as ckpt:
        assert ckpt.tensor_names() == sorted(w)
        assert len({ckpt.shard_of(n) for n in w}) == shards
        for name in reversed(sorted(w)):
            np.testing.assert_array_equal(ckpt.read(name), w[name])
        assert ckpt.unconsumed() == []
        files = ckpt.source_fingerprint()["files"]
        assert "model.safetensors.index.json" in files
        assert sum(n.endswith(f"-of-{shards:05d}.safetensors") for n in files) == shards


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_transformers_sharded_save_reads_like_torch(tmp_path, dtype):
    """A checkpoint written by transformers' save_pretrained (sharded), read back value-for-value."""
    from tests.conftest import make_hf_checkpoint
    from qwen_edge.checkpoint.tiny import TINY_QWEN2

    root = make_hf_checkpoint(tmp_path / "hf", TINY_QWEN2, dtype=dtype, max_shard_size="60KB")
    assert (root / "model.safetensors.index.json").is_file() and len(list(root.glob("*.safetensors"))) >= 2
    from safetensors.torch import load_file

    expected = {}
    for shard in sorted(root.glob("*.safetensors")):
        expected.update(load_file(str(shard)))
    with Checkpoint.open(root) as ckpt:
        assert ckpt.tensor_names() == sorted(expected)
        assert ckpt.torch_dtype == dtype
        for name, t in expected.items():
            got = ckpt.read(name)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, t.float().numpy(), err_msg=name)
        written = json.loads((root / "generation_config.json").read_text())
        assert ckpt.generation.eos_token_ids == tuple(written["eos_token_id"])
        assert ckpt.generation.pad_token_id == ckpt.generation.bos_token_id == written["bos_token_id"]


def test_generation_defaults_from_generation_config(ckpt_dir):
    with Checkpoint.open(ckpt_dir) as ckpt:
        assert ckpt.generation == GenerationDefaults(
            eos_token_ids=(2, 1), bos_token_id=1, pad_token_id=None, do_sample=True, temperature=0.7,
            top_k=20, top_p=0.8, repetition_penalty=1.05, max_new_tokens=128)


@pytest.mark.parametrize("gen,expected_eos,expected_bos", [
    ({"eos_token_id": 5}, (5,), 1),                       # int, bos falls back to config.json
    ({"eos_token_id": [7, 2, 9], "bos_token_id": 3}, (7, 2, 9), 3),  # list
    ({"eos_token_id": None}, (2,), 1),                    # null falls back to config.json
    (None, (2,), 1),                                      # no generation_config.json at all
])
def test_eos_int_list_and_fallback(tmp_path, gen, expected_eos, expected_bos):
    root = make_checkpoint(tmp_path / "c", generation=gen)
    with Checkpoint.open(root) as ckpt:
        assert ckpt.generation.eos_token_ids == expected_eos
        assert ckpt.generation.bos_token_id == expected_bos
        assert ckpt.generation.do_sample is False and ckpt.generation.temperature is None


def test_eos_list_in_config_json(tmp_path):
    root = make_checkpoint(tmp_path / "c", config={**CONFIG, "eos_token_id": [4, 2], "pad_token_id": 0})
    with Checkpoint.open(root) as ckpt:
        assert ckpt.generation.eos_token_ids == (4, 2) and ckpt.generation.pad_token_id == 0


JINJA = "{{ 'jinja' }}"
JSON_T = "{{ 'json' }}"
TOKCFG = "{{ 'tokenizer_config' }}"


@pytest.mark.parametrize("files,expected", [
    ({"chat_template.jinja": JINJA, "chat_template.json": {"chat_template": JSON_T},
      "tokenizer_config.json": {"chat_template": TOKCFG}}, JINJA),
    ({"chat_template.json": {"chat_template": JSON_T}, "tokenizer_config.json": {"chat_template": TOKCFG}}, JSON_T),
    ({"tokenizer_config.json": {"chat_template": TOKCFG}}, TOKCFG),
    ({"tokenizer_config.json": {"chat_template": [{"name": "tool_use", "template": "{{ 'tools' }}"},
                                                  {"name": "default", "template": TOKCFG}]}}, TOKCFG),
    ({"tokenizer_config.json": {"chat_template": [{"name": "rag", "template": "x"}]}}, None),
    ({"tokenizer_config.json": {"model_max_length": 10}}, None),
])
def test_chat_template_sources(tmp_path, files, expected):
    root = make_checkpoint(tmp_path / "c")
    for name, content in files.items():
        (root / name).write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    with Checkpoint.open(root) as ckpt:
        assert ckpt.chat_template == expected
        assert set(ckpt.tokenizer_files) == {"tokenizer.json", *files}
        for name, path in ckpt.tokenizer_files.items():
            assert path == (root / name).resolve()


def test_all_tokenizer_files_are_found(tmp_path):
    root = make_checkpoint(tmp_path / "c", tokenizer_config={})
    for name in ("vocab.json", "special_tokens_map.json", "added_tokens.json"):
        (root / name).write_text("{}")
    (root / "merges.txt").write_text("#version: 0.2\n")
    with Checkpoint.open(root) as ckpt:
        assert set(ckpt.tokenizer_files) == {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                                             "special_tokens_map.json", "added_tokens.json"}


def test_torch_dtype_dialects(tmp_path):
    cfg = {k: v for k, v in CONFIG.items() if k != "dtype"}
    for extra, expected in (({"torch_dtype": "float16"}, "float16"), ({"dtype": "bfloat16"}, "bfloat16"),
                            ({}, None), ({"dtype": "float32", "torch_dtype": "float16"}, "float32")):
        root = make_checkpoint(tmp_path / f"c{len(extra)}{expected}", config={**cfg, **extra})
        with Checkpoint.open(root) as ckpt:
            assert ckpt.torch_dtype == expected


def test_open_reads_no_tensor_data(ckpt_dir, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("Checkpoint.open must not read tensor data")

    monkeypatch.setattr(np, "memmap", boom)
    monkeypatch.setattr(SafetensorsFile, "read", boom)
    with Checkpoint.open(ckpt_dir) as ckpt:
        assert len(ckpt.tensor_names()) == 6 and ckpt.weight_bytes() > 0


def test_lazy_read_when_another_tensor_is_garbage(tmp_path):
    w = weights()
    root = make_checkpoint(tmp_path / "c", tensors=w)
    path = root / "model.safetensors"
    with SafetensorsFile.open(path) as f:
        bad = f.info("model.layers.0.mlp.up_proj.weight")
    data = bytearray(path.read_bytes())
    data[bad.start:bad.end] = b"\xff" * bad.nbytes  # NaN everywhere
    path.write_bytes(bytes(data))
    with Checkpoint.open(root) as ckpt:
        for name in w:
            if name != bad.name:
                np.testing.assert_array_equal(ckpt.read(name), w[name])
        with pytest.raises(CheckpointError, match="model.safetensors: tensor 'model.layers.0.mlp.up_proj.weight'"):
            ckpt.read(bad.name)
        assert ckpt.unconsumed() == [bad.name]  # a failed read does not count as consumed


def test_unconsumed_tracking(ckpt_dir):
    with Checkpoint.open(ckpt_dir) as ckpt:
        all_names = ckpt.tensor_names()
        assert ckpt.unconsumed() == all_names
        ckpt.tensor_info("model.norm.weight")  # looking is not consuming
        assert ckpt.has("model.norm.weight") and ckpt.unconsumed() == all_names
        ckpt.read("model.norm.weight")
        ckpt.read("model.norm.weight", dtype=np.float16)
        assert ckpt.unconsumed() == [n for n in all_names if n != "model.norm.weight"]
        for n in all_names:
            ckpt.read(n)
        assert ckpt.unconsumed() == []


def test_fingerprint_is_stable_and_sensitive(tmp_path):
    root = make_checkpoint(tmp_path / "c", shards=2, generation={"eos_token_id": 2}, tokenizer_config={})
    with Checkpoint.open(root) as ckpt:
        first = ckpt.source_fingerprint()
        assert ckpt.source_fingerprint() == first
    files = first["files"]
    assert set(files) == {"config.json", "generation_config.json", "model.safetensors.index.json",
                          "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                          "tokenizer.json", "tokenizer_config.json"}
    for name, digest in files.items():
        assert digest == hashlib.sha256((root / name).read_bytes()).hexdigest()
    with Checkpoint.open(root) as again:
        assert again.source_fingerprint() == first
    # A copy elsewhere has the same fingerprint; one flipped tensor byte changes exactly one entry.
    import shutil

    copy = Path(shutil.copytree(root, tmp_path / "copy"))
    shard = copy / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01
    with Checkpoint.open(copy) as ckpt:
        assert ckpt.source_fingerprint() == first
        shard.write_bytes(bytes(data))
        changed = ckpt.source_fingerprint()["files"]
    assert {k for k in files if files[k] != changed[k]} == {"model-00002-of-00002.safetensors"}


def test_fingerprint_stops_when_asked(tmp_path):
    import threading

    root = make_checkpoint(tmp_path / "c", shards=2, generation={"eos_token_id": 2}, tokenizer_config={})
    stop = threading.Event()
    stop.set()
    with Checkpoint.open(root) as ckpt:
        assert ckpt.source_fingerprint(stop) is None
        assert ckpt.source_fingerprint(threading.Event()) == ckpt.source_fingerprint()


def test_symlinks_inside_the_directory_are_fine(tmp_path):
    root = make_checkpoint(tmp_path / "c")
    (root / "real").mkdir()
    os.replace(root / "model.safetensors", root / "real" / "weights.safetensors")
    (root / "model.safetensors").symlink_to(Path("real") / "weights.safetensors")
    link = tmp_path / "link-to-ckpt"
    link.symlink_to(root)
    with Checkpoint.open(link) as ckpt:
        assert ckpt.path == root.resolve()
        np.testing.assert_array_equal(ckpt.read("model.norm.weight"), weights()["model.norm.weight"])


def test_hugging_face_cache_layout_is_allowed(tmp_path):
    """snapshots/<rev>/file -> ../../blobs/<sha> is how the hub cache stores every file."""
    src = make_checkpoint(tmp_path / "src", shards=2)
    repo = tmp_path / "hub" / "models--Qwen--Tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    for f in src.iterdir():
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        (repo / "blobs" / digest).write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / digest)
    with Checkpoint.open(snap) as ckpt:
        assert len(ckpt.tensor_names()) == 6
        assert set(ckpt.source_fingerprint()["files"]) >= {"config.json", "model-00001-of-00002.safetensors"}


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_safetensors_preferred_and_pickles_never_opened(tmp_path):
    root = make_checkpoint(tmp_path / "c")
    marker = tmp_path / "marker"
    (root / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    torch.save({"x": torch.zeros(1)}, root / "training_args.bin")
    with Checkpoint.open(root) as ckpt:
        assert "pytorch_model.bin" not in ckpt.source_fingerprint()["files"]
        for n in ckpt.tensor_names():
            ckpt.read(n)
    assert not marker.exists()


def test_checkpoint_is_usable_without_context_manager(ckpt_dir):
    ckpt = Checkpoint.open(str(ckpt_dir))
    assert "Qwen2ForCausalLM" in repr(ckpt)
    ckpt.read("model.norm.weight")
    ckpt.close()
    with pytest.raises(CheckpointError, match="closed"):
        ckpt.read("model.norm.weight")
