"""Running an OpenVINO IR bundle on CPU: prefill and decode with an explicit KV cache.

Not part of qwen_edge.runtime (which imports only onnxruntime); openvino is imported lazily. It is
the executor that verification runs OpenVINO bundles through.
The IR comes from the standard-op decoder, so each step feeds the cached keys/values of exactly
the cached length and gets `present` back with the new positions appended.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...bundle import manifest as manifest_mod
from ...errors import BundleError, ConfigError
from ...verify.executor import BundleExecutor


class OpenVINOModel(BundleExecutor):
    executed_with = "openvino (CPU)"

    def __init__(self, bundle_dir: Path, device: str | None = None, threads: int | None = None):
        try:
            import openvino as ov
        except ImportError:
            raise ConfigError("running an OpenVINO bundle needs the openvino package (pip install 'qwen-edge[targets]')") from None
        from tokenizers import Tokenizer

        self.path = Path(bundle_dir)
        self.manifest = manifest_mod.load(self.path)
        io = self.manifest["io"]
        self.num_layers = int(io["num_layers"])
        self.num_kv_heads = int(io["num_kv_heads"])
        self.head_dim = int(io["head_dim"])
        self.vocab_size = int(io["vocab_size"])
        self.context_length = int(io["context_length"])
        model_path = self.path / io["model_file"]
        # The target's provider options: the device and OpenVINO properties the bundle was verified with.
        options = {str(k): str(v) for k, v in self.manifest["target"].get("provider_options", {}).items()}
        device = device or options.pop("device", "CPU")
        options.pop("device", None)
        config = {"INFERENCE_PRECISION_HINT": "f32", **options}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = ov.Core().compile_model(str(model_path), device, config)
        except RuntimeError as exc:
            raise BundleError(f"{model_path}: openvino could not compile the model: {str(exc).splitlines()[0]}") from exc
        self.request = self.compiled.create_infer_request()
        self._outputs = {name: port for port in self.compiled.outputs for name in port.get_names()}
        self.tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def empty_cache(self) -> dict[str, np.ndarray]:
        shape = (1, self.num_kv_heads, 0, self.head_dim)
        return {f"past_key_values.{i}.{k}": np.zeros(shape, np.float32)
                for i in range(self.num_layers) for k in ("key", "value")}

    def step(self, cache: dict[str, np.ndarray], ids: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits [len(ids), vocab] for `ids` after `cache`; returns the grown cache too."""
        ids = np.asarray(ids, dtype=np.int64)
        total = cache["past_key_values.0.key"].shape[2] + len(ids)
        if total > self.context_length:
            raise ConfigError(f"sequence of {total} tokens exceeds the bundle's context length {self.context_length}")
        feeds = {"input_ids": ids.reshape(1, -1), "attention_mask": np.ones((1, total), np.int64), **cache}
        result = self.request.infer(feeds)
        grown = {f"past_key_values.{i}.{k}": result[self._outputs[f"present.{i}.{k}"]]
                 for i in range(self.num_layers) for k in ("key", "value")}
        return np.array(result[self._outputs["logits"]][0]), grown

    def logits(self, ids) -> np.ndarray:
        return self.step(self.empty_cache(), ids)[0]

    def cached_logits(self, ids, prefill: int) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        rows, cache = [], self.empty_cache()
        logits, cache = self.step(cache, ids[:prefill])
        rows.append(logits)
        for k in range(prefill, len(ids)):
            logits, cache = self.step(cache, ids[k:k + 1])
            rows.append(logits)
        return np.concatenate(rows, axis=0)

    def greedy(self, ids, new_tokens: int) -> list[int]:
        cache, out = self.empty_cache(), []
        logits, cache = self.step(cache, np.asarray(ids, np.int64))
        for _ in range(new_tokens):
            token = int(logits[-1].argmax())
            out.append(token)
            logits, cache = self.step(cache, np.array([token], np.int64))
        return out
