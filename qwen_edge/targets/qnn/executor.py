"""Running a built npu-qnn bundle on the HTP backend (or on CPU, for comparison): for verification
(`QnnExecutor`) and for `qwen-edge run` (`QnnGenerator`, greedy only)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ...bundle import manifest as manifest_mod
from ...errors import BundleError, ConfigError
from ...runtime.bundle_check import check_bundle
from ...runtime.errors import ContextOverflowError
from ...runtime.generator import GenerationStats
from ...runtime.streaming import TextStreamer
from ...verify.executor import BundleExecutor
from ...verify.metrics import LogitsFn
from ..executors import register_executor
from .parity import measure
from .runner import StaticGeometry, StaticRunner, session_runner
from .session import cpu_session, htp_session, placement

# Verification's decode rows: the last tokens of each prompt go through the decode graph, one pass
# per prompt (the emulated HTP takes seconds per call).
VERIFY_DECODE_TOKENS = 4


@dataclass
class QnnBundle:
    path: Path
    manifest: dict
    runner: StaticRunner
    placement: dict
    tokenizer: object

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    @property
    def context_length(self) -> int:
        return self.runner.geo.context

    def logits(self, ids) -> np.ndarray:
        return self.runner.logits(ids)


def load_qnn_bundle(bundle_dir: Path, *, backend: str = "htp", use_context_binaries: bool = True) -> QnnBundle:
    from tokenizers import Tokenizer

    path = Path(bundle_dir)
    manifest = manifest_mod.load(path)
    if manifest["target"].get("builder") != "qnn-static":
        raise BundleError(f"{path}: not an npu-qnn bundle (target '{manifest['target']['name']}')")
    io = manifest["io"]
    files = dict(io["graphs"])
    if use_context_binaries and io.get("context_binaries"):
        files = dict(io["context_binaries"])
    fallback = manifest["target"].get("fallback") == "cpu"
    sessions = {}
    for key, name in files.items():
        if not (path / name).is_file():
            raise BundleError(f"{path / name}: graph file missing")
        sessions[key] = htp_session(path / name, fallback=fallback) if backend == "htp" else cpu_session(path / name)
    if backend == "htp":
        where = {key: placement(s).to_dict() for key, s in sessions.items()}
    else:
        where = {key: {"by_provider": {"CPUExecutionProvider": "all"}} for key in sessions}
    runner = StaticRunner(StaticGeometry.from_manifest(manifest), session_runner(sessions["prefill"]),
                          session_runner(sessions["decode"]))
    try:
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception as exc:
        raise BundleError(f"{path / 'tokenizer.json'}: could not load the tokenizer: {exc}") from exc
    return QnnBundle(path, manifest, runner, where, tokenizer)


class QnnExecutor(BundleExecutor):
    """Verification of an npu-qnn bundle: prompts in one pass each (a prefill of all but the last
    VERIFY_DECODE_TOKENS tokens, then the decode graph), so the slow device runs each prompt once."""

    def __init__(self, bundle: Path, threads: int | None = None, backend: str = "htp"):
        self.qb = load_qnn_bundle(bundle, backend=backend)
        self.backend = backend
        self.manifest = self.qb.manifest
        self.context_length = self.qb.context_length
        self.executed_with = f"onnxruntime {'QNN HTP' if backend == 'htp' else 'CPU'} from the static prefill/decode pair"

    def encode(self, text: str) -> np.ndarray:
        return self.qb.encode(text)

    def logits(self, ids) -> np.ndarray:
        return self.qb.runner.logits(ids)

    def cached_logits(self, ids, prefill: int) -> np.ndarray:
        return self.qb.runner.logits_with_decode(ids, prefill)

    def greedy(self, ids, new_tokens: int) -> list[int]:
        return self.qb.runner.generate(ids, new_tokens)

    def details(self) -> dict[str, Any]:
        return {"backend": self.backend, "placement": self.qb.placement}

    def tolerance_overrides(self) -> dict[str, float]:
        options = self.manifest.get("qnn", {}).get("options", {})
        return {k: float(options[k]) for k in ("min_top1", "max_kl") if options.get(k) is not None}

    def prompt_parity(self, reference: LogitsFn, prompts: list[np.ndarray]) -> dict[str, Any]:
        both = measure(self.qb.runner, _Logits(reference), prompts, decode_tokens=VERIFY_DECODE_TOKENS)
        return {"parity": both["prefill"], "parity_kv_cache": both["decode"], "parity_perplexity": both["perplexity"]}


class _Logits:
    def __init__(self, fn: LogitsFn):
        self.logits = fn


class QnnGenerator:
    """`qwen-edge run` on the HTP: greedy generation from a prompt (sampling and chat stay with the CPU runtime)."""

    def __init__(self, bundle: Path, options=None):
        if options is not None and (options.verify_integrity or options.verify_signature is not None):
            check_bundle(Path(bundle), manifest_mod.load(Path(bundle)), verify_integrity=options.verify_integrity,
                         verify_signature=options.verify_signature)
        self.qb = load_qnn_bundle(bundle)
        self.eos = frozenset(self.qb.manifest["generation"]["eos_token_ids"])

    def render_chat(self, messages, **template_vars) -> str:
        raise ConfigError("npu-qnn bundles run greedy with --prompt only (no --chat or sampling yet)")

    def start(self, prompt: str, *, max_new_tokens: int = 128, sampling=None) -> "_QnnGeneration":
        if sampling is not None and sampling.do_sample:
            raise ConfigError("npu-qnn bundles run greedy with --prompt only (no --chat or sampling yet)")
        return _QnnGeneration(self.qb, self.qb.encode(prompt), max_new_tokens, self.eos)

    def details(self) -> dict[str, Any]:
        return {"placement": self.qb.placement}


class _QnnGeneration:
    def __init__(self, qb: QnnBundle, ids: np.ndarray, max_new_tokens: int, eos: frozenset[int]):
        runner = qb.runner
        self.ids = runner.check_ids(ids)
        if len(self.ids) + max_new_tokens > runner.geo.context:
            raise ContextOverflowError(f"prompt of {len(self.ids)} tokens plus {max_new_tokens} new tokens exceeds "
                                       f"the bundle's static context of {runner.geo.context} tokens",
                                       n_prompt_tokens=len(self.ids), n_ctx=runner.geo.context)
        self.qb, self.max_new_tokens, self.eos = qb, max_new_tokens, eos
        self.token_ids: list[int] = []
        self.stats = GenerationStats(prompt_tokens=len(self.ids))

    def __iter__(self) -> Iterator[str]:
        runner, streamer = self.qb.runner, TextStreamer(self.qb.tokenizer, skip_special_tokens=True)
        cache = runner.new_cache()
        start = time.perf_counter()
        logits = runner.step(cache, self.ids)[-1]
        first = None
        while True:
            token = int(np.argmax(logits))
            if first is None:
                first = time.perf_counter()
                self.stats.time_to_first_token_s = first - start
            if token in self.eos:
                self.stats.finish_reason = "eos"
                break
            self.token_ids.append(token)
            self.stats.new_tokens = len(self.token_ids)
            piece = streamer.push(token)
            if piece:
                yield piece
            if len(self.token_ids) >= self.max_new_tokens:
                self.stats.finish_reason = "length"
                break
            logits = runner.step(cache, [token])[-1]
        self.stats.decode_s = time.perf_counter() - first
        tail = streamer.flush()
        if tail:
            yield tail


register_executor("qnn-static", QnnExecutor, QnnGenerator, "the static QNN pair on the HTP backend (emulated on x86-64)")
