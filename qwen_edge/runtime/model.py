"""Loading a bundle into onnxruntime and running the decoder step by step."""

from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from ..bundle import manifest as manifest_mod
from ..errors import BundleError
from .bundle_check import check_bundle
from .errors import ContextOverflowError, InvalidRequestError
from .kv_cache import CacheLayout, KVCache
from .sampling import SamplingParams

GENERATION_CONFIG = "generation_config.json"
LOGITS_TO_KEEP = "logits_to_keep"  # the decoder graph's optional input (graph/decoder.py)

_DTYPES = {"fp32": np.float32, "fp16": np.float16}
_OPT_LEVELS = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
               "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


@dataclass(frozen=True)
class RuntimeOptions:
    """Session settings. `None` means: what the bundle's manifest recommends, else onnxruntime's default."""

    intra_op_threads: int | None = None
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    verify_integrity: bool = False
    max_cached_sequences: int = 2  # KV caches kept for reuse across generations
    # onnxruntime's pool threads spin after their work (False: they sleep at once; for a session that takes
    # turns with another one, as a speculative draft bundle does)
    spinning: bool | None = None
    # An Ed25519 public key (raw 32 bytes, PEM bytes/str, a PEM file path or a key object): when set,
    # the manifest's signature and every file's sha256 are checked before loading.
    verify_signature: Any = None


def _session_options(opts: RuntimeOptions, recommended: dict[str, Any]) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    threads = opts.intra_op_threads or recommended.get("intra_op_threads")
    if threads:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = recommended.get("graph_optimization_level", "all")
    if level not in _OPT_LEVELS:
        raise BundleError(f"manifest runtime.graph_optimization_level '{level}' is not one of {', '.join(_OPT_LEVELS)}")
    so.graph_optimization_level = _OPT_LEVELS[level]
    entries = dict(recommended.get("config_entries", {}))
    if opts.spinning is not None:
        entries["session.intra_op.allow_spinning"] = "1" if opts.spinning else "0"
    for key, value in sorted(entries.items()):
        so.add_session_config_entry(key, str(value))
    return so


def _default_sampling(bundle: Path, manifest: dict[str, Any]) -> SamplingParams:
    """The checkpoint's recommended sampling: the manifest's `generation.sampling` (bundles record it when
    built), else the bundle's generation_config.json (older bundles), else greedy."""
    recorded = manifest.get("generation", {}).get("sampling")
    if recorded is not None:
        where, config = f"{bundle / manifest_mod.MANIFEST_NAME}: generation.sampling", recorded
    else:
        path = bundle / GENERATION_CONFIG
        if not path.is_file():
            return SamplingParams.greedy()
        where = str(path)
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{where}: not readable JSON ({exc})".splitlines()[0]) from None
    try:
        return SamplingParams.from_generation_config(config)
    except InvalidRequestError as exc:
        raise BundleError(f"{where}: {exc}") from None


class Model:
    """A loaded bundle: session, tokenizer, chat template and a pool of KV caches.

    One Model may be shared by several threads: every generation takes its own cache from the
    pool, and onnxruntime sessions are safe to run concurrently.
    """

    def __init__(self, bundle_dir: str | os.PathLike, options: RuntimeOptions = RuntimeOptions()):
        self.path = Path(bundle_dir)
        self.manifest = manifest_mod.load(self.path)
        check_bundle(self.path, self.manifest, verify_integrity=options.verify_integrity,
                     verify_signature=options.verify_signature)
        io = self.manifest["io"]
        self.num_layers = int(io["num_layers"])
        self.num_kv_heads = int(io["num_kv_heads"])
        self.head_dim = int(io["head_dim"])
        self.vocab_size = int(io["vocab_size"])
        # A bundle built for exact speculation writes one spare key/value position past its tokens
        # (graph/decoder.py _group_query_attention): its buffers keep it, its context is one less.
        self.spare_rows = int(io.get("attention_spare_rows", 0))
        self.context_length = int(io["context_length"]) - self.spare_rows
        self.kv_dtype = _DTYPES[io["kv_dtype"]]
        self.cache_layout = CacheLayout.from_io(io)
        self.eos_token_ids = tuple(self.manifest["generation"]["eos_token_ids"])
        self.default_sampling = _default_sampling(self.path, self.manifest)
        model_path = self.path / io["model_file"]
        try:
            self.session = ort.InferenceSession(
                str(model_path), _session_options(options, self.manifest.get("runtime", {})),
                providers=list(options.providers),
            )
        except Exception as exc:  # onnxruntime raises untyped errors for corrupt files
            raise BundleError(f"{model_path}: onnxruntime could not load the model: {str(exc).splitlines()[0]}") from exc
        self.vision = None
        if "vision" in io:
            from .vision import VisionModels

            self.vision = VisionModels(self.path, io["vision"], _session_options(options, self.manifest.get("runtime", {})),
                                       options.providers, self.kv_dtype)
        # Bundles built before logits_to_keep existed compute logits for every prompt position.
        overridable = {i.name for i in self.session.get_overridable_initializers()}
        self._last_logits_only = np.ones(1, np.int64) if LOGITS_TO_KEEP in overridable else None
        self._empty_past = self.cache_layout.first_call_feeds()
        self._output_names = ["logits"] + [present for _, present in self.cache_layout.pairs()]
        tokenizer_path = self.path / "tokenizer.json"
        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:
            raise BundleError(f"{tokenizer_path}: could not load the tokenizer: {exc}".splitlines()[0]) from exc
        template_path = self.path / "chat_template.jinja"
        try:
            self.chat_template_source = template_path.read_text(encoding="utf-8") if template_path.is_file() else None
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(f"{template_path}: cannot read the chat template ({exc})".splitlines()[0]) from None
        self._chat_template = None
        self._caches: queue.LifoQueue[KVCache] = queue.LifoQueue(maxsize=options.max_cached_sequences)
        self._template_lock = threading.Lock()

    @property
    def exact_speculation(self) -> bool:
        """Whether speculative decoding over this bundle gives plain decoding's tokens bit for bit (built with
        `--exact-speculation`: runtime/speculative.py)."""
        return self.spare_rows > 0

    # KV caches ------------------------------------------------------------------------------
    def acquire_cache(self) -> KVCache:
        try:
            cache = self._caches.get_nowait()
        except queue.Empty:
            cache = KVCache(self.cache_layout, self.context_length, self.spare_rows)
        cache.reset()
        return cache

    def release_cache(self, cache: KVCache) -> None:
        try:
            self._caches.put_nowait(cache)
        except queue.Full:
            pass

    # Forward passes ---------------------------------------------------------------------------
    def check_ids(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.size == 0:
            raise InvalidRequestError("input ids must be a non-empty 1-D sequence")
        if ids.dtype.kind not in "iu":
            raise InvalidRequestError(f"input ids must be integers, got dtype {ids.dtype}")
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise InvalidRequestError(
                f"token id {int(ids[bad][0])} at position {int(np.argmax(bad))} is outside the vocabulary [0, {self.vocab_size})"
            )
        return ids.astype(np.int64, copy=False)

    def decode_binding(self, cache: KVCache, logits_out: ort.OrtValue) -> ort.IOBinding:
        """An IO binding for the one-token steps of one generation: the cache and the logits
        buffer are bound once instead of at every step (50 bindings for a 24-layer model)."""
        binding = self.session.io_binding()
        binding.bind_ortvalue_output("logits", logits_out)
        cache.bind(binding)
        return binding

    def _token_feeds(self, cache: KVCache, ids: np.ndarray, media=None) -> dict[str, np.ndarray]:
        """The decoder's token inputs: ids, or (vision-language bundles) their embeddings and 3-D positions."""
        if self.vision is None:
            return {"input_ids": ids.reshape(1, ids.shape[0])}
        if media is not None and cache.length == 0:
            cache.position_delta = media.delta
        return self.vision.decoder_feeds(ids, cache.length, cache.position_delta, media)

    def step(self, cache: KVCache, ids: np.ndarray, mask: np.ndarray, logits_out: ort.OrtValue | None = None,
             *, last_only: bool = False, binding: ort.IOBinding | None = None, media=None) -> np.ndarray:
        """Run `ids` (1-D) after the cache's current contents; returns logits [len(ids), vocab].

        With `last_only` the result may hold only the last position's row (bundles that support
        it skip the output head for the others), so callers must index it with [-1].
        `binding` is one from decode_binding(cache, logits_out) with the same cache and buffer.
        """
        n = ids.shape[0]
        total = cache.length + n
        if total > cache.capacity:
            raise ContextOverflowError(
                f"sequence of {total} tokens exceeds the bundle's context length {cache.capacity}",
                n_prompt_tokens=total, n_ctx=cache.capacity)
        if last_only and n > 1 and cache.length == 0 and self._last_logits_only is not None:
            return self._prefill_last_only(cache, ids, mask, media)
        if binding is None:
            binding = self.session.io_binding()
            # logits is bound first so that it is get_outputs()[0].
            if logits_out is not None:
                binding.bind_ortvalue_output("logits", logits_out)
            else:
                binding.bind_output("logits", "cpu")
            cache.bind(binding)
        elif logits_out is None:
            raise InvalidRequestError("a reused decode binding needs the logits buffer it was made with")
        for name, value in self._token_feeds(cache, ids, media).items():
            binding.bind_cpu_input(name, value)
        binding.bind_cpu_input("attention_mask", mask[:, :total])
        self.session.run_with_iobinding(binding)
        cache.length = total
        if logits_out is not None:
            return logits_out.numpy()[0]
        return binding.get_outputs()[0].numpy()[0]

    def _prefill_last_only(self, cache: KVCache, ids: np.ndarray, mask: np.ndarray, media=None) -> np.ndarray:
        """A prompt into an empty cache, computing the output head for the last position only.

        onnxruntime's IO binding can not feed an overridable initializer such as logits_to_keep,
        so this pass runs unbound, with empty past tensors, and copies the prompt's keys and
        values into the cache once (the decode steps after it update the cache in place).
        """
        n = ids.shape[0]
        feeds = {**self._token_feeds(cache, ids, media), "attention_mask": mask[:, :n],
                 LOGITS_TO_KEEP: self._last_logits_only}
        feeds.update(self._empty_past)
        outputs = self.session.run(self._output_names, feeds)
        cache.load_prefix(outputs[1:])
        cache.length = n
        return outputs[0][0]

    def logits(self, ids) -> np.ndarray:
        """Logits for every position of one sequence, from an empty cache: [len(ids), vocab]."""
        ids = self.check_ids(ids)
        cache = self.acquire_cache()
        try:
            mask = np.ones((1, cache.capacity), np.int64)
            return self.step(cache, ids, mask)
        finally:
            self.release_cache(cache)

    # Text helpers -----------------------------------------------------------------------------
    def encode(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise InvalidRequestError(f"prompt must be a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequestError(f"prompt is not valid Unicode text (lone surrogate at index {exc.start})") from None
        return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    @property
    def chat_template(self):
        from .chat import ChatTemplate
        from .errors import TemplateError

        with self._template_lock:
            if self._chat_template is None:
                if self.chat_template_source is None:
                    raise TemplateError(f"{self.path}: the bundle has no chat template")
                eos = self.decode([self.eos_token_ids[0]], skip_special_tokens=False) if self.eos_token_ids else None
                self._chat_template = ChatTemplate(self.chat_template_source, eos_token=eos)
            return self._chat_template
