"""The quality report a build writes into the manifest: the built graph against the float
reference (the checkpoint's weights in float32, computed in numpy) on a few windows of the
calibration text and of an evaluation text.

Kept cheap on purpose (a couple of windows each) so builds stay fast; the full-length numbers
come from benchmarks/quality.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..closed import from_closed_dict
from ..errors import ConfigError
from ..verify.metrics import log_softmax
from .calibration import BUILTIN, BUILTIN_EVAL_FILES, load_calibration_text, token_windows
from .forward import LayerwiseForward

Feeds = Callable[[int], dict[str, np.ndarray]]  # length -> a first call's inputs


@dataclass(frozen=True)
class QualityConfig:
    calibration: str = BUILTIN
    evaluation: str = BUILTIN  # "builtin" = standard-library files disjoint from the calibration ones
    windows: int = 2
    window: int = 512

    def __post_init__(self) -> None:
        for key in ("windows", "window"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if key == "window" else 1):
                raise ConfigError(f"quality: {key} {value!r} is out of range")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "QualityConfig":
        return from_closed_dict(cls, values, "quality")


def _session(model_path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def graph_logits(session, ids: np.ndarray, feeds: Feeds) -> np.ndarray:
    """Logits [len(ids), vocab] of a full prefill without past."""
    return session.run(["logits"], feeds(len(ids)) | {"input_ids": ids[None].astype(np.int64)})[0][0]


def compare_on_windows(session, fwd: LayerwiseForward, ids: np.ndarray, feeds: Feeds) -> dict[str, Any]:
    """Perplexity of graph and reference, KL(reference || graph) and top-1 agreement over windows."""
    nll_graph = nll_ref = kl_sum = 0.0
    agree = scored = positions = 0
    for row, ref in zip(ids, fwd.logits(ids)):
        lp_ref = log_softmax(ref)
        lp = log_softmax(graph_logits(session, row, feeds))
        kl_sum += float((np.exp(lp_ref) * (lp_ref - lp)).sum())
        agree += int((lp_ref.argmax(-1) == lp.argmax(-1)).sum())
        positions += len(row)
        pos = np.arange(len(row) - 1)
        nll_graph -= float(lp[pos, row[1:]].sum())
        nll_ref -= float(lp_ref[pos, row[1:]].sum())
        scored += len(row) - 1
    ppl, ppl_ref = math.exp(nll_graph / scored), math.exp(nll_ref / scored)
    return {"windows": int(len(ids)), "window": int(ids.shape[1]), "tokens_scored": scored,
            "perplexity": ppl, "reference_perplexity": ppl_ref,
            "ppl_increase_percent": 100.0 * (ppl / ppl_ref - 1.0),
            "kl_divergence_mean": kl_sum / positions, "top1_agreement": agree / positions}


def quality_report(model_path: Path, checkpoint_dir: Path, adapter, spec, config: QualityConfig,
                   weights: dict[str, Any], bundle_bytes: int, context: int | None = None,
                   overlap_check: bool = True, *, feeds: Feeds) -> dict[str, Any]:
    """`context`: the graph's rotary table length; windows are clipped to it. `feeds(n)`: the graph's
    inputs for a first call of n tokens (empty caches)."""
    from tokenizers import Tokenizer

    from ..checkpoint import Checkpoint

    report: dict[str, Any] = {"reference": "float32 numpy forward of the checkpoint's weights",
                              "bits_per_weight": weights.get("bits_per_weight"), "bundle_bytes": bundle_bytes,
                              "size_mb": bundle_bytes / 1e6}
    session = _session(model_path)
    with Checkpoint.open(checkpoint_dir) as ckpt:
        tokenizer = Tokenizer.from_file(str(ckpt.tokenizer_files["tokenizer.json"]))
        fwd = LayerwiseForward(ckpt, adapter, spec)
        texts = {"calibration": load_calibration_text(config.calibration),
                 "evaluation": load_calibration_text(config.evaluation, BUILTIN_EVAL_FILES)}
        for role, text in texts.items():
            ids = np.asarray(tokenizer.encode(text.text).ids, np.int64)
            if len(ids) and ids.max() >= spec.vocab_size:
                report[role] = {"skipped": f"token ids reach {int(ids.max())}, past the model's vocabulary"}
                continue
            window = min(config.window, context or config.window)
            windows = token_windows(ids, window, config.windows * window)
            report[role] = {"text": text.to_dict()} | compare_on_windows(session, fwd, windows, feeds)
    if overlap_check:
        from .calibration import overlapping_lines

        report["calibration_evaluation_line_overlap"] = overlapping_lines(
            texts["calibration"].text, texts["evaluation"].text)
    return report
