"""A Hugging Face checkpoint directory, validated up front and read lazily.

`Checkpoint.open` checks everything that is cheap (config, tokenizer files, generation config,
the safetensors index and every shard's header, symlinks, remote-code requests) and reads no
tensor data. Pickle weights are refused, never opened; nothing the checkpoint names is imported.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import CheckpointError, UnsafeCheckpointError
from .safetensors_file import SafetensorsFile, TensorInfo, _clean, _DuplicateKey, _is_int, _short, loads_strict

CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
SINGLE_WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
PICKLE_INDEX = "pytorch_model.bin.index.json"
MAX_JSON_BYTES = 64 * 2**20
MAX_TOKENIZER_JSON_BYTES = 1024 * 2**20
HASH_CHUNK = 2**20

# Architecture-independent sanity bounds on config.json integers (inclusive upper limits).
CONFIG_INT_LIMITS = {
    "hidden_size": 65_536,
    "num_hidden_layers": 1_024,
    "num_attention_heads": 4_096,
    "num_key_value_heads": 4_096,
    "intermediate_size": 1_048_576,
    "vocab_size": 4_000_000,
    "max_position_embeddings": 10_000_000,
    "head_dim": 8_192,
}


@dataclass(frozen=True)
class GenerationDefaults:
    """Generation settings from generation_config.json, token ids falling back to config.json."""

    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None


class _Dir:
    """Resolves names inside the checkpoint directory, refusing anything that escapes it."""

    def __init__(self, root: Path):
        self.root = root
        self.allowed = [root]
        # The Hugging Face hub cache links snapshots/<rev>/<file> to ../../blobs/<sha>.
        if root.parent.name == "snapshots" and root.parent.parent.name.startswith("models--"):
            self.allowed.append(root.parent.parent / "blobs")

    def file(self, name: str) -> Path | None:
        """The resolved path of `name`, or None if there is no such entry."""
        path = self.root / name
        if not os.path.lexists(path):
            return None
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise CheckpointError(f"{name}: cannot be resolved (dangling or looping symlink)") from None
        if not any(resolved.is_relative_to(a) for a in self.allowed):
            raise UnsafeCheckpointError(
                f"{name}: resolves to {_clean(str(resolved))}, outside the checkpoint directory")
        if not resolved.is_file():
            raise CheckpointError(f"{name}: is not a regular file")
        return resolved


def _read_json(name: str, path: Path, limit: int = MAX_JSON_BYTES, *, strict: bool = False) -> Any:
    try:
        size = path.stat().st_size
        if size > limit:
            raise CheckpointError(f"{name}: {size} bytes, more than the {limit}-byte limit for a JSON file")
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{name}: not valid UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot read ({exc.strerror or type(exc).__name__})") from None
    try:
        return loads_strict(text) if strict else json.loads(text)
    except _DuplicateKey as exc:
        raise CheckpointError(f"{name}: duplicate key {_short(exc.args[0])}") from None
    except RecursionError:
        raise CheckpointError(f"{name}: JSON nested too deeply") from None
    except ValueError as exc:
        detail = f"{exc.msg} at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) \
            else str(exc).splitlines()[0]
        raise CheckpointError(f"{name}: not valid JSON ({detail})") from None


def _json_object(name: str, path: Path, limit: int = MAX_JSON_BYTES, *, strict: bool = False) -> dict[str, Any]:
    value = _read_json(name, path, limit, strict=strict)
    if not isinstance(value, dict):
        raise CheckpointError(f"{name}: must be a JSON object, got {type(value).__name__}")
    return value


def _find_key(value: Any, key: str) -> str | None:
    """The dotted path of an occurrence of `key` in nested objects, or None (iterative: no recursion limit)."""
    stack = [("", value)]
    while stack:
        prefix, obj = stack.pop()
        if isinstance(obj, dict):
            if key in obj:
                return prefix + key
            stack.extend((f"{prefix}{k}.", v) for k, v in reversed(obj.items()) if isinstance(v, dict))
    return None


def _refuse_remote_code(name: str, obj: dict[str, Any]) -> None:
    where = _find_key(obj, "auto_map")
    if where is not None:
        raise UnsafeCheckpointError(
            f"{name}: key '{_clean(where)}' asks for custom (remote) code, which is refused; "
            f"nothing it names is imported")


def _check_config(config: dict[str, Any]) -> str:
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or not all(isinstance(a, str) and a for a in archs):
        raise CheckpointError(f"{CONFIG}: 'architectures' must be a non-empty list of strings, got {_short(archs)}")
    for key, limit in CONFIG_INT_LIMITS.items():
        value = config.get(key)
        if value is None:
            continue
        if not _is_int(value) or value <= 0:
            raise CheckpointError(f"{CONFIG}: '{key}' must be a positive integer, got {_short(value)}")
        if value > limit:
            raise CheckpointError(f"{CONFIG}: '{key}' is {value}, above the sanity limit of {limit}")
    return archs[0]


def _token_ids(name: str, key: str, value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(_is_int(v) and v >= 0 for v in values):
        raise CheckpointError(f"{name}: '{key}' must be a non-negative integer or a non-empty list of them, "
                              f"got {_short(value)}")
    return tuple(values)


def _generation(config: dict[str, Any], gen: dict[str, Any] | None) -> GenerationDefaults:
    def pick(key: str) -> tuple[str, Any]:
        if gen is not None and gen.get(key) is not None:
            return GENERATION_CONFIG, gen[key]
        return CONFIG, config.get(key)

    src, eos = pick("eos_token_id")
    if eos is None:
        raise CheckpointError(f"{CONFIG}: no 'eos_token_id' here or in {GENERATION_CONFIG}")
    eos_ids = _token_ids(src, "eos_token_id", eos)
    single: dict[str, int | None] = {}
    for key in ("bos_token_id", "pad_token_id"):
        src, value = pick(key)
        single[key] = None if value is None else _token_ids(src, key, value)[0]
    g = gen or {}

    def field(key: str, integer: bool) -> Any:
        v = g.get(key)
        if v is None:
            return None
        ok = _is_int(v) if integer else isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or v < 0:
            kind = "integer" if integer else "number"
            raise CheckpointError(f"{GENERATION_CONFIG}: '{key}' must be a non-negative {kind}, got {_short(v)}")
        return v if integer else float(v)

    do_sample = False if g.get("do_sample") is None else g["do_sample"]
    if not isinstance(do_sample, bool):
        raise CheckpointError(f"{GENERATION_CONFIG}: 'do_sample' must be true or false, got {_short(do_sample)}")
    return GenerationDefaults(
        eos_token_ids=eos_ids, bos_token_id=single["bos_token_id"], pad_token_id=single["pad_token_id"],
        do_sample=do_sample, temperature=field("temperature", False), top_k=field("top_k", True),
        top_p=field("top_p", False), repetition_penalty=field("repetition_penalty", False),
        max_new_tokens=field("max_new_tokens", True))


def _template_value(name: str, key: str, value: Any) -> str | None:
    """A chat template given as a string, or as a list of {name, template} (take "default")."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        for item in value:
            if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                    and isinstance(item.get("template"), str)):
                raise CheckpointError(f"{name}: '{key}' list entries must be objects with string 'name' and "
                                      f"'template', got {_short(item)}")
        named = {item["name"]: item["template"] for item in value}
        return named.get("default")
    raise CheckpointError(f"{name}: '{key}' must be a string or a list of named templates, got {type(value).__name__}")


def _plain_file_name(name: str) -> bool:
    return (bool(name) and name.isprintable() and name not in (".", "..") and "/" not in name and "\\" not in name
            and (os.altsep is None or os.altsep not in name) and Path(name).name == name)


class Checkpoint:
    """A validated checkpoint directory. Use `Checkpoint.open(path)`; close it (or use `with`)."""

    path: Path
    config: dict[str, Any]
    architecture: str
    generation: GenerationDefaults
    tokenizer_files: dict[str, Path]
    chat_template: str | None

    def __init__(self) -> None:
        self._shards: dict[str, SafetensorsFile] = {}
        self._where: dict[str, str] = {}
        self._files: dict[str, Path] = {}
        self._consumed: set[str] = set()
        self._views: dict[str, tuple[str, np.ndarray]] = {}
        self._indices_read: dict[str, set[int]] = {}

    # ----------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | os.PathLike) -> "Checkpoint":
        given = Path(path)
        if not given.exists():
            raise CheckpointError(f"{_clean(str(given))}: checkpoint directory not found")
        if not given.is_dir():
            raise CheckpointError(f"{_clean(str(given))}: not a directory "
                                  f"(a checkpoint is a directory with config.json)")
        self = cls()
        self.path = given.resolve()
        d = _Dir(self.path)
        try:
            self._open(d)
        except BaseException:
            self.close()
            raise
        return self

    def _open(self, d: _Dir) -> None:
        config_path = d.file(CONFIG)
        if config_path is None:
            raise CheckpointError(f"{CONFIG}: not found in {_clean(str(self.path))}")
        self.config = _json_object(CONFIG, config_path)
        self._files[CONFIG] = config_path
        _refuse_remote_code(CONFIG, self.config)

        tok = {name: found for name in TOKENIZER_FILES if (found := d.file(name)) is not None}
        tok_config = _json_object("tokenizer_config.json", tok["tokenizer_config.json"]) \
            if "tokenizer_config.json" in tok else {}
        _refuse_remote_code("tokenizer_config.json", tok_config)

        self.architecture = _check_config(self.config)

        if "tokenizer.json" not in tok:
            raise CheckpointError(f"tokenizer.json: not found in {_clean(str(self.path))} "
                                  f"(a tokenizers-format tokenizer is required)")
        _json_object("tokenizer.json", tok["tokenizer.json"], MAX_TOKENIZER_JSON_BYTES)
        self.tokenizer_files = tok
        self.chat_template = self._chat_template(tok, tok_config)

        gen_path = d.file(GENERATION_CONFIG)
        if gen_path is not None:
            self._files[GENERATION_CONFIG] = gen_path
        self.generation = _generation(self.config, gen_path and _json_object(GENERATION_CONFIG, gen_path))

        self._open_weights(d)
        self._files.update(tok)

    @staticmethod
    def _chat_template(tok: dict[str, Path], tok_config: dict[str, Any]) -> str | None:
        if "chat_template.jinja" in tok:
            try:
                return tok["chat_template.jinja"].read_bytes().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CheckpointError(f"chat_template.jinja: not valid UTF-8 (byte {exc.start})") from None
            except OSError as exc:
                raise CheckpointError(f"chat_template.jinja: cannot read ({exc.strerror})") from None
        if "chat_template.json" in tok:
            obj = _json_object("chat_template.json", tok["chat_template.json"])
            if "chat_template" not in obj:
                raise CheckpointError("chat_template.json: no 'chat_template' key")
            return _template_value("chat_template.json", "chat_template", obj["chat_template"])
        return _template_value("tokenizer_config.json", "chat_template", tok_config.get("chat_template"))

    def _open_weights(self, d: _Dir) -> None:
        single = d.file(SINGLE_WEIGHTS)
        if single is not None:
            self._shards[SINGLE_WEIGHTS], self._files[SINGLE_WEIGHTS] = SafetensorsFile.open(single), single
            self._where = {n: SINGLE_WEIGHTS for n in self._shards[SINGLE_WEIGHTS].names()}
            return
        index_path = d.file(WEIGHTS_INDEX)
        if index_path is None:
            entries = sorted(_clean(e) for e in os.listdir(self.path))
            pickles = [e for e in entries if e.endswith(PICKLE_SUFFIXES) or e == PICKLE_INDEX]
            if pickles:
                more = f" (and {len(pickles) - 1} more)" if len(pickles) > 1 else ""
                raise UnsafeCheckpointError(
                    f"{pickles[0]}{more}: pickle checkpoints are refused (loading one can run arbitrary code); "
                    f"convert the weights to safetensors")
            stray = [e for e in entries if e.endswith(".safetensors")]
            hint = f" (found {stray[0]} without an index)" if stray else ""
            raise CheckpointError(f"{_clean(self.path.name)}: no weights found, expected {SINGLE_WEIGHTS} or "
                                  f"{WEIGHTS_INDEX}{hint}")
        self._files[WEIGHTS_INDEX] = index_path
        self._open_index(d, index_path)

    def _open_index(self, d: _Dir, index_path: Path) -> None:
        ix = WEIGHTS_INDEX
        index = _json_object(ix, index_path, strict=True)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{ix}: 'weight_map' must be an object, got {_short(weight_map)}")
        if not weight_map:
            raise CheckpointError(f"{ix}: 'weight_map' is empty")
        first_tensor: dict[str, str] = {}
        for tensor, shard in weight_map.items():
            if not isinstance(shard, str):
                raise CheckpointError(f"{ix}: tensor {_short(tensor)} maps to {_short(shard)}, not a file name")
            if not _plain_file_name(shard):
                raise UnsafeCheckpointError(
                    f"{ix}: tensor {_short(tensor)} maps to {_short(shard)}, which is not a plain file name "
                    f"inside the checkpoint directory")
            first_tensor.setdefault(shard, tensor)
        for shard in sorted(first_tensor):
            path = d.file(shard)
            if path is None:
                raise CheckpointError(
                    f"{ix}: shard '{shard}' (holding tensor {_short(first_tensor[shard])}) not found")
            self._shards[shard], self._files[shard] = SafetensorsFile.open(path), path
        where: dict[str, str] = {}
        for shard in sorted(self._shards):
            for tensor in self._shards[shard].names():
                if tensor in where:
                    raise CheckpointError(f"{shard}: tensor {_short(tensor)} is also in shard '{where[tensor]}'")
                if tensor not in weight_map:
                    raise CheckpointError(f"{shard}: tensor {_short(tensor)} is not listed in {ix}'s weight_map")
                if weight_map[tensor] != shard:
                    raise CheckpointError(f"{shard}: tensor {_short(tensor)} is listed in {ix} as being in "
                                          f"'{weight_map[tensor]}'")
                where[tensor] = shard
        for tensor, shard in weight_map.items():
            if tensor not in where:
                raise CheckpointError(f"{shard}: tensor {_short(tensor)} named by {ix} is not in this shard")
        self._where = where

    # ----------------------------------------------------------------------------- tensors
    def _shard_of(self, name: str) -> SafetensorsFile:
        shard = self._where.get(name)
        if shard is None:
            raise CheckpointError(f"{_clean(self.path.name)}: no tensor named {_short(name)}")
        return self._shards[shard]

    def tensor_names(self) -> list[str]:
        return sorted(self._where)

    def has(self, name: str) -> bool:
        return name in self._where or name in self._views

    def tensor_info(self, name: str) -> TensorInfo:
        if name in self._views:
            source, rows = self._views[name]
            info = self.tensor_info(source)
            return TensorInfo(name, info.dtype, (len(rows), *info.shape[1:]), info.start, info.end)
        return self._shard_of(name).info(name)

    def expect(self, name: str, shape, missing_hint: Callable[[], str] | None = None) -> None:
        """`name` is present with `shape` (what config.json implies), or one line says which is not;
        `missing_hint` adds to the message of a missing tensor."""
        if not self.has(name):
            raise CheckpointError(f"{self.path.name}: tensor '{name}' is missing{missing_hint() if missing_hint else ''}")
        actual = tuple(self.tensor_info(name).shape)
        if actual != tuple(shape):
            raise CheckpointError(f"{self.path.name}: tensor '{name}' has shape {list(actual)}, "
                                  f"config.json implies {list(shape)}")

    def read_expected(self, name: str, shape, *, dtype: Any = np.float32) -> np.ndarray:
        """read() a tensor that expect() finds with `shape`."""
        self.expect(name, shape)
        return self.read(name, dtype=dtype)

    def add_row_views(self, views: dict[str, tuple[str, np.ndarray]]) -> None:
        """Make each `name: (source, rows)` read as `source[rows]`: an architecture's fused projection
        presented as the separate ones the graphs are built from. Views are not in tensor_names();
        reading one consumes its source."""
        for name, (source, rows) in views.items():
            shape = self.tensor_info(source).shape
            rows = np.asarray(rows, dtype=np.int64)
            if name in self._where or not shape or rows.ndim != 1 or \
                    (rows.size and not 0 <= rows.min() <= rows.max() < shape[0]):
                raise CheckpointError(
                    f"{_clean(self.path.name)}: cannot view rows of {_short(source)} as {_short(name)}")
            self._views[name] = (source, rows)

    def shard_of(self, name: str) -> str:
        """The file name of the shard holding `name`."""
        self._shard_of(name)
        return self._where[name]

    def read(self, name: str, *, dtype: Any = np.float32) -> np.ndarray:
        """Read one tensor (see `SafetensorsFile.read`) and mark it consumed."""
        if name in self._views:
            source, rows = self._views[name]
            return np.ascontiguousarray(self.read(source, dtype=dtype)[rows])
        out = self._shard_of(name).read(name, dtype=dtype)
        self._consumed.add(name)
        return out

    def read_index(self, name: str, index: int, *, dtype: Any = np.float32) -> np.ndarray:
        """Read `tensor[index]` along the first axis; the tensor counts as consumed once every
        index has been read."""
        out = self._shard_of(name).read_index(name, index, dtype=dtype)
        seen = self._indices_read.setdefault(name, set())
        seen.add(index)
        if len(seen) == self.tensor_info(name).shape[0]:
            self._consumed.add(name)
        return out

    def unconsumed(self) -> list[str]:
        return sorted(set(self._where) - self._consumed)

    def weight_bytes(self) -> int:
        return sum(s.info(n).nbytes for s in self._shards.values() for n in s.names())

    @property
    def torch_dtype(self) -> str | None:
        """The checkpoint's declared dtype: `dtype` (transformers 5.x) or `torch_dtype` (4.x)."""
        for key in ("dtype", "torch_dtype"):
            value = self.config.get(key)
            if isinstance(value, str):
                return value
        return None

    def source_files(self) -> dict[str, Path]:
        """The resolved path of every file this checkpoint is made of, by name (what source_fingerprint hashes)."""
        return dict(sorted(self._files.items()))

    def source_fingerprint(self, stop: threading.Event | None = None) -> dict[str, Any] | None:
        """sha256 of every file this checkpoint is made of, keyed by its name in the directory;
        None when `stop` is set before the hashing ends."""
        files = {}
        for name in sorted(self._files):
            h = hashlib.sha256()
            try:
                with open(self._files[name], "rb") as fh:
                    while chunk := fh.read(HASH_CHUNK):
                        if stop is not None and stop.is_set():
                            return None
                        h.update(chunk)
            except OSError as exc:
                raise CheckpointError(f"{name}: cannot read ({exc.strerror or type(exc).__name__})") from None
            files[name] = h.hexdigest()
        return {"files": files}

    # ----------------------------------------------------------------------------- lifetime
    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, {self.architecture!r}, tensors={len(self._where)})"
