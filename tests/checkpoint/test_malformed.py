"""A corpus of malformed and hostile checkpoints: each fails with one line naming its culprit."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file as save_numpy

from qwen_edge.checkpoint import Checkpoint, SafetensorsFile
from qwen_edge.errors import CheckpointError, UnsafeCheckpointError

CONFIG = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 8, "num_hidden_layers": 1,
          "num_attention_heads": 2, "vocab_size": 12, "eos_token_id": 2}
UP = "model.layers.3.mlp.up_proj.weight"
NORM = "model.norm.weight"
TENSORS = {UP: np.ones((4, 2), np.float32), NORM: np.ones(2, np.float32), "model.embed.weight": np.ones(3, np.float32)}
TOKENIZER = json.dumps({"version": "1.0", "model": {"type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"}})


def base(root: Path, *, shards: int = 1, config: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(CONFIG if config is None else config))
    (root / "tokenizer.json").write_text(TOKENIZER)
    if shards == 1:
        save_numpy(TENSORS, str(root / "model.safetensors"))
        return root
    names = sorted(TENSORS)
    weight_map = {}
    for k in range(shards):
        shard = f"model-{k + 1:05d}.safetensors"
        save_numpy({n: TENSORS[n] for n in names[k::shards]}, str(root / shard))
        weight_map.update({n: shard for n in names[k::shards]})
    write_index(root, weight_map)
    return root


def write_index(root: Path, weight_map: dict) -> None:
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def raw_shard(root: Path, header, data: bytes = b"", *, name: str = "model.safetensors",
              hlen: int | None = None) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    (root / name).write_bytes(struct.pack("<Q", len(raw) if hlen is None else hlen) + raw + data)


def entry(dtype: str, shape: list, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def edit_json(path: Path, fn: Callable[[dict], None]) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


class Evil:
    """Unpickling this writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def pickle_only(root: Path, name: str) -> None:
    base(root)
    (root / "model.safetensors").unlink()
    (root / name).write_bytes(pickle.dumps(Evil(root.parent / "marker")))


def truncate(root: Path) -> None:
    base(root)
    p = root / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-5])


def link_outside(root: Path, name: str) -> None:
    base(root)
    outside = root.parent / "outside"
    outside.mkdir()
    target = outside / name
    os.replace(root / name, target)
    (root / name).symlink_to(target)


def shard_not_in_index(root: Path) -> None:
    base(root, shards=2)
    edit_json(root / "model.safetensors.index.json", lambda o: o["weight_map"].pop(NORM))


def tensor_in_two_shards(root: Path) -> None:
    base(root, shards=2)
    save_numpy({NORM: np.ones(2, np.float32), "x": np.ones(1, np.float32)}, str(root / "model-00003.safetensors"))
    write_index(root, {**json.loads((root / "model.safetensors.index.json").read_text())["weight_map"],
                       "x": "model-00003.safetensors"})


def wrong_shard_in_index(root: Path) -> None:
    base(root, shards=2)
    edit_json(root / "model.safetensors.index.json",
              lambda o: o["weight_map"].update({NORM: "model-00002.safetensors"}))


# (id, build(root), exception type, culprit substrings, tensor to read or None for failure at open)
CASES = [
    # --- safetensors shards
    ("truncated-shard", truncate, CheckpointError, ["model.safetensors", f"'{NORM}'",  # the last in the file
                                                    "past the end"], None),
    ("shorter-than-8-bytes", lambda r: (base(r), (r / "model.safetensors").write_bytes(b"\x10\0\0")),
     CheckpointError, ["model.safetensors", "3 bytes"], None),
    ("header-length-past-end", lambda r: (base(r), raw_shard(r, {}, hlen=10_000)), CheckpointError,
     ["model.safetensors", "10000", "past the end"], None),
    ("header-length-zero", lambda r: (base(r), raw_shard(r, b"", hlen=0)), CheckpointError,
     ["model.safetensors", "length is 0"], None),
    ("header-length-huge", lambda r: (base(r), raw_shard(r, b"{}", hlen=2**63)), CheckpointError,
     ["model.safetensors", str(2**63), "exceeds"], None),
    ("garbage-header", lambda r: (base(r), raw_shard(r, b"\x00\x01garbage!")), CheckpointError,
     ["model.safetensors", "not valid JSON"], None),
    ("non-utf8-header", lambda r: (base(r), raw_shard(r, b"{\"\xff\xfe\": 1}")), CheckpointError,
     ["model.safetensors", "UTF-8"], None),
    ("header-not-object", lambda r: (base(r), raw_shard(r, [1, 2, 3])), CheckpointError,
     ["model.safetensors", "JSON object", "list"], None),
    ("entry-not-object", lambda r: (base(r), raw_shard(r, {UP: "F32"})), CheckpointError,
     ["model.safetensors", f"'{UP}'", "object"], None),
    ("missing-data-offsets", lambda r: (base(r), raw_shard(r, {UP: {"dtype": "F32", "shape": [1]}}, bytes(4))),
     CheckpointError, ["model.safetensors", f"'{UP}'", "data_offsets"], None),
    ("unknown-dtype", lambda r: (base(r), raw_shard(r, {UP: entry("Q7", [2], 0, 2)}, bytes(2))), CheckpointError,
     ["model.safetensors", f"'{UP}'", "'Q7'"], None),
    ("negative-dim", lambda r: (base(r), raw_shard(r, {UP: entry("F32", [-1], 0, 4)}, bytes(4))),
     CheckpointError, ["model.safetensors", f"'{UP}'", "shape"], None),
    ("bool-dim", lambda r: (base(r), raw_shard(r, {UP: entry("F32", [True], 0, 4)}, bytes(4))),
     CheckpointError, ["model.safetensors", f"'{UP}'", "shape"], None),
    ("float-offset", lambda r: (base(r), raw_shard(r, {UP: entry("F32", [1], 0.0, 4)}, bytes(4))),
     CheckpointError, ["model.safetensors", f"'{UP}'", "data_offsets"], None),
    ("shape-offset-mismatch", lambda r: (base(r), raw_shard(r, {UP: entry("F32", [4, 2], 0, 16)}, bytes(16))),
     CheckpointError, ["model.safetensors", f"'{UP}'", "[4, 2]", "32", "16"], None),
    ("absurd-shape", lambda r: (base(r), raw_shard(r, {UP: entry("F32", [2**40, 2**40, 2**40], 0, 16)}, bytes(16))),
     CheckpointError, ["model.safetensors", f"'{UP}'", "more than 16"], None),
    ("reversed-offsets", lambda r: (base(r), raw_shard(r, {UP: entry("U8", [0], 8, 4)}, bytes(16))),
     CheckpointError, ["model.safetensors", f"'{UP}'", "[8, 4]"], None),
    ("overlapping-ranges",
     lambda r: (base(r), raw_shard(r, {UP: entry("F32", [2], 0, 8), NORM: entry("F32", [2], 4, 12)}, bytes(12))),
     CheckpointError, ["model.safetensors", f"'{UP}'", f"'{NORM}'", "overlaps"], None),
    ("offsets-past-end", lambda r: (base(r), raw_shard(r, {UP: entry("F32", [4], 0, 16)}, bytes(8))),
     CheckpointError, ["model.safetensors", f"'{UP}'", "[0, 16)", "past the end"], None),
    ("duplicate-tensor", lambda r: (base(r), raw_shard(
        r, b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
           b'"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}', bytes(2))),
     CheckpointError, ["model.safetensors", "duplicate", "'a'"], None),
    ("bad-metadata", lambda r: (base(r), raw_shard(r, {"__metadata__": {"format": 1}})), CheckpointError,
     ["model.safetensors", "__metadata__", "'format'"], None),
    ("nan-weight", lambda r: (base(r), raw_shard(r, {UP: entry("F32", [2], 0, 8)}, np.array([1, np.nan], np.float32)
                                                 .tobytes())),
     CheckpointError, ["model.safetensors", f"'{UP}'", "NaN"], UP),
    ("inf-bf16-weight", lambda r: (base(r), raw_shard(r, {UP: entry("BF16", [2], 0, 4)}, b"\x80\x7f\x80\x3f")),
     CheckpointError, ["model.safetensors", f"'{UP}'", "NaN or Inf"], UP),
    # --- sharded index
    ("missing-shard", lambda r: (base(r, shards=2), (r / "model-00002.safetensors").unlink()), CheckpointError,
     ["model.safetensors.index.json", "'model-00002.safetensors'", "not found"], None),
    ("index-names-absent-tensor", lambda r: (base(r, shards=2), edit_json(
        r / "model.safetensors.index.json",
        lambda o: o["weight_map"].update({"lm_head.weight": "model-00001.safetensors"}))),
     CheckpointError, ["model-00001.safetensors", "'lm_head.weight'", "not in this shard"], None),
    ("tensor-missing-from-index", shard_not_in_index, CheckpointError,
     ["model-00001.safetensors", f"'{NORM}'", "not listed"], None),
    ("tensor-in-two-shards", tensor_in_two_shards, CheckpointError,
     [f"'{NORM}'", "model-00001.safetensors", "model-00003.safetensors"], None),
    ("index-points-to-wrong-shard", wrong_shard_in_index, CheckpointError,
     ["model-00001.safetensors", f"'{NORM}'", "'model-00002.safetensors'"], None),
    ("index-corrupt-json", lambda r: (base(r, shards=2), (r / "model.safetensors.index.json").write_text("{oops")),
     CheckpointError, ["model.safetensors.index.json", "not valid JSON"], None),
    ("index-weight-map-not-object", lambda r: (base(r, shards=2), edit_json(
        r / "model.safetensors.index.json", lambda o: o.update(weight_map=["a"]))),
     CheckpointError, ["model.safetensors.index.json", "weight_map"], None),
    ("index-shard-path-traversal", lambda r: (base(r, shards=2), edit_json(
        r / "model.safetensors.index.json", lambda o: o["weight_map"].update({NORM: "../evil.safetensors"}))),
     UnsafeCheckpointError, ["model.safetensors.index.json", f"'{NORM}'", "'../evil.safetensors'"], None),
    ("index-shard-absolute-path", lambda r: (base(r, shards=2), edit_json(
        r / "model.safetensors.index.json", lambda o: o["weight_map"].update({NORM: "/etc/passwd"}))),
     UnsafeCheckpointError, ["model.safetensors.index.json", "'/etc/passwd'"], None),
    ("index-shard-control-chars", lambda r: (base(r, shards=2), edit_json(
        r / "model.safetensors.index.json", lambda o: o["weight_map"].update({NORM: "a\nb.safetensors"}))),
     UnsafeCheckpointError, ["model.safetensors.index.json", f"'{NORM}'", "not a plain file name"], None),
    ("no-weights", lambda r: (base(r), (r / "model.safetensors").unlink()), CheckpointError,
     ["no weights", "model.safetensors"], None),
    ("shards-without-index", lambda r: (base(r, shards=2), (r / "model.safetensors.index.json").unlink()),
     CheckpointError, ["no weights", "model-00001.safetensors", "without an index"], None),
    # --- config.json
    ("missing-config", lambda r: (base(r), (r / "config.json").unlink()), CheckpointError,
     ["config.json", "not found"], None),
    ("config-is-directory", lambda r: (base(r), (r / "config.json").unlink(), (r / "config.json").mkdir()),
     CheckpointError, ["config.json", "not a regular file"], None),
    ("corrupt-config", lambda r: (base(r), (r / "config.json").write_text('{"architectures": [')), CheckpointError,
     ["config.json", "not valid JSON"], None),
    ("config-not-object", lambda r: (base(r), (r / "config.json").write_text("[1]")), CheckpointError,
     ["config.json", "JSON object"], None),
    ("missing-architectures", lambda r: base(r, config={"hidden_size": 8, "eos_token_id": 1}), CheckpointError,
     ["config.json", "'architectures'"], None),
    ("empty-architectures", lambda r: base(r, config={**CONFIG, "architectures": []}), CheckpointError,
     ["config.json", "'architectures'"], None),
    ("non-string-architecture", lambda r: base(r, config={**CONFIG, "architectures": [7]}), CheckpointError,
     ["config.json", "'architectures'"], None),
    ("absurd-hidden-size", lambda r: base(r, config={**CONFIG, "hidden_size": 10**9}), CheckpointError,
     ["config.json", "'hidden_size'", "1000000000"], None),
    ("negative-layers", lambda r: base(r, config={**CONFIG, "num_hidden_layers": -2}), CheckpointError,
     ["config.json", "'num_hidden_layers'"], None),
    ("float-vocab", lambda r: base(r, config={**CONFIG, "vocab_size": 12.5}), CheckpointError,
     ["config.json", "'vocab_size'"], None),
    ("bool-heads", lambda r: base(r, config={**CONFIG, "num_attention_heads": True}), CheckpointError,
     ["config.json", "'num_attention_heads'"], None),
    ("absurd-context", lambda r: base(r, config={**CONFIG, "max_position_embeddings": 10**12}), CheckpointError,
     ["config.json", "'max_position_embeddings'"], None),
    ("no-eos-anywhere", lambda r: base(r, config={k: v for k, v in CONFIG.items() if k != "eos_token_id"}),
     CheckpointError, ["config.json", "eos_token_id"], None),
    # --- tokenizer / generation config
    ("missing-tokenizer", lambda r: (base(r), (r / "tokenizer.json").unlink()), CheckpointError,
     ["tokenizer.json", "not found"], None),
    ("corrupt-tokenizer", lambda r: (base(r), (r / "tokenizer.json").write_text("{\"model\": ")), CheckpointError,
     ["tokenizer.json", "not valid JSON"], None),
    ("corrupt-tokenizer-config", lambda r: (base(r), (r / "tokenizer_config.json").write_text("nope")),
     CheckpointError, ["tokenizer_config.json", "not valid JSON"], None),
    ("bad-chat-template-type", lambda r: (base(r), (r / "tokenizer_config.json").write_text('{"chat_template": 5}')),
     CheckpointError, ["tokenizer_config.json", "'chat_template'"], None),
    ("chat-template-json-without-key", lambda r: (base(r), (r / "chat_template.json").write_text("{}")),
     CheckpointError, ["chat_template.json", "'chat_template'"], None),
    ("chat-template-not-utf8", lambda r: (base(r), (r / "chat_template.jinja").write_bytes(b"{{ '\xff' }}")),
     CheckpointError, ["chat_template.jinja", "UTF-8"], None),
    ("corrupt-generation-config", lambda r: (base(r), (r / "generation_config.json").write_text("{,}")),
     CheckpointError, ["generation_config.json", "not valid JSON"], None),
    ("bad-eos-type", lambda r: (base(r), (r / "generation_config.json").write_text('{"eos_token_id": "</s>"}')),
     CheckpointError, ["generation_config.json", "'eos_token_id'"], None),
    ("bad-temperature", lambda r: (base(r), (r / "generation_config.json").write_text('{"temperature": "hot"}')),
     CheckpointError, ["generation_config.json", "'temperature'"], None),
    # --- refusals
    ("pickle-only-bin", lambda r: pickle_only(r, "pytorch_model.bin"), UnsafeCheckpointError,
     ["pytorch_model.bin", "pickle checkpoints are refused"], None),
    ("pickle-only-pt", lambda r: pickle_only(r, "model.pt"), UnsafeCheckpointError,
     ["model.pt", "pickle checkpoints are refused"], None),
    ("pickle-only-pth", lambda r: pickle_only(r, "consolidated.pth"), UnsafeCheckpointError,
     ["consolidated.pth", "pickle checkpoints are refused"], None),
    ("pickle-only-ckpt", lambda r: pickle_only(r, "last.ckpt"), UnsafeCheckpointError,
     ["last.ckpt", "pickle checkpoints are refused"], None),
    ("pickle-index-only", lambda r: (pickle_only(r, "pytorch_model-00001-of-00002.bin"),
                                     (r / "pytorch_model.bin.index.json").write_text('{"weight_map": {}}')),
     UnsafeCheckpointError, ["pytorch_model", "pickle checkpoints are refused"], None),
    ("auto-map-config", lambda r: base(r, config={**CONFIG, "auto_map": {"AutoModel": "evil.Model"}}),
     UnsafeCheckpointError, ["config.json", "'auto_map'", "refused"], None),
    ("auto-map-nested-config", lambda r: base(r, config={**CONFIG, "text_config": {"auto_map": {"A": "x.B"}}}),
     UnsafeCheckpointError, ["config.json", "'text_config.auto_map'"], None),
    ("auto-map-tokenizer-config", lambda r: (base(r), (r / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["evil.Tok", None]}}))),
     UnsafeCheckpointError, ["tokenizer_config.json", "'auto_map'"], None),
    ("symlink-config-outside", lambda r: link_outside(r, "config.json"), UnsafeCheckpointError,
     ["config.json", "outside the checkpoint directory"], None),
    ("symlink-shard-outside", lambda r: link_outside(r, "model.safetensors"), UnsafeCheckpointError,
     ["model.safetensors", "outside the checkpoint directory"], None),
    ("symlink-tokenizer-outside", lambda r: link_outside(r, "tokenizer.json"), UnsafeCheckpointError,
     ["tokenizer.json", "outside the checkpoint directory"], None),
    ("symlink-generation-config-outside", lambda r: (base(r), (r.parent / "g.json").write_text("{}"),
                                                     (r / "generation_config.json").symlink_to(r.parent / "g.json")),
     UnsafeCheckpointError, ["generation_config.json", "outside the checkpoint directory"], None),
    ("symlink-to-etc-passwd", lambda r: (base(r), (r / "merges.txt").symlink_to("/etc/passwd")),
     UnsafeCheckpointError, ["merges.txt", "outside the checkpoint directory"], None),
    ("dangling-symlink", lambda r: (base(r), (r / "vocab.json").symlink_to(r / "nowhere.json")), CheckpointError,
     ["vocab.json", "dangling"], None),
]


@pytest.mark.parametrize("build,exc_type,culprits,read", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_checkpoint(tmp_path, build, exc_type, culprits, read):
    root = tmp_path / "ckpt"
    build(root)
    if read is None:
        with pytest.raises(CheckpointError) as err:
            Checkpoint.open(root)
    else:
        with Checkpoint.open(root) as ckpt, pytest.raises(CheckpointError) as err:
            ckpt.read(read)
    assert type(err.value) is exc_type, err.value
    message = str(err.value)
    assert "\n" not in message and message.strip() == message
    for culprit in culprits:
        assert culprit in message, f"{culprit!r} not in {message!r}"
    assert not (tmp_path / "marker").exists()


def test_pickle_payload_is_real_but_never_runs(tmp_path):
    """The payload used above does write its marker when unpickled; the loader never unpickles it."""
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Evil(probe)))
    assert probe.read_text() == "pwned"
    root = tmp_path / "ckpt"
    pickle_only(root, "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError):
        Checkpoint.open(root)
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("path_kind", ["missing", "file"])
def test_checkpoint_path_must_be_a_directory(tmp_path, path_kind):
    target = tmp_path / "ckpt"
    if path_kind == "file":
        target.write_text("x")
    with pytest.raises(CheckpointError, match="ckpt"):
        Checkpoint.open(target)


def test_shard_errors_same_through_safetensors_file(tmp_path):
    base(tmp_path)
    raw_shard(tmp_path, {UP: entry("F32", [4], 0, 16)}, bytes(8), name="model-00002.safetensors")
    with pytest.raises(CheckpointError,
                       match=r"^model-00002\.safetensors: tensor 'model\.layers\.3\.mlp\.up_proj\.weight': byte range "
                             r"\[0, 16\) lies past the end"):
        SafetensorsFile.open(tmp_path / "model-00002.safetensors")


# ------------------------------------------------------------------------------------------ property tests
def _valid_file() -> bytes:
    header = {"__metadata__": {"format": "pt"}, "a": entry("F32", [2, 2], 0, 16), "b": entry("BF16", [3], 16, 22),
              "c": entry("I64", [1], 24, 32), "d": entry("F8_E4M3", [2], 32, 34)}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + np.arange(4, dtype=np.float32).tobytes() + bytes(18)


VALID = _valid_file()
HEADER_END = 8 + struct.unpack("<Q", VALID[:8])[0]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _only_checkpoint_errors(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        f = SafetensorsFile.open(path)
    except CheckpointError as exc:
        assert "\n" not in str(exc)
        return
    with f:
        for name in f.names():
            try:
                f.read(name)
            except CheckpointError:
                pass


@PROPERTY
@given(data=st.binary(max_size=300))
def test_random_bytes_only_raise_checkpoint_error(tmp_path, data):
    _only_checkpoint_errors(tmp_path / "x.safetensors", data)


@PROPERTY
@given(flips=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.none() | st.integers(0, len(VALID)))
def test_byte_mutations_only_raise_checkpoint_error(tmp_path, flips, cut):
    data = bytearray(VALID)
    for pos, value in flips:
        data[pos] = value
    _only_checkpoint_errors(tmp_path / "x.safetensors", bytes(data[:cut]))


@PROPERTY
@given(tensor=st.sampled_from(["a", "b", "c", "d"]), field=st.sampled_from(["dtype", "shape", "data_offsets"]),
       value=json_values | st.lists(st.integers(-2**65, 2**65), max_size=4), tail=st.integers(0, 64))
def test_header_field_mutations_only_raise_checkpoint_error(tmp_path, tensor, field, value, tail):
    header = json.loads(VALID[8:HEADER_END])
    header[tensor][field] = value
    raw = json.dumps(header).encode()
    data = struct.pack("<Q", len(raw)) + raw + VALID[HEADER_END:HEADER_END + tail]
    _only_checkpoint_errors(tmp_path / "x.safetensors", data)


@PROPERTY
@given(header=json_values, hlen_delta=st.integers(-4, 4))
def test_arbitrary_json_headers_only_raise_checkpoint_error(tmp_path, header, hlen_delta):
    raw = json.dumps(header).encode()
    data = struct.pack("<Q", max(0, len(raw) + hlen_delta)) + raw + bytes(16)
    _only_checkpoint_errors(tmp_path / "x.safetensors", data)


def test_deeply_nested_and_huge_number_headers(tmp_path):
    for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], '
                                                   b'"data_offsets": [0, 4]}}'):
        path = tmp_path / "x.safetensors"
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(4))
        with pytest.raises(CheckpointError, match="x.safetensors"):
            SafetensorsFile.open(path)
