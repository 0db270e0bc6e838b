"""The one parity check every built bundle goes through, whatever runs it.

A bundle's executor against a float reference on the fixed prompt set (a full prefill, and the
cache path), then, when a text is given, perplexity of both and their agreement over windows of
it. The tolerance (top-1 agreement, mean KL, perplexity increase) decides `passed`; the report
lists every failure. `qwen-edge verify` and the build's `--verify` both call `check_parity`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .executor import BundleExecutor
from .metrics import encode_prompts, text_parity
from .tolerances import Tolerance

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ParityRequest:
    """What a build's `--verify` runs for every target executed here."""

    reference_kind: str = "numpy"     # numpy needs no torch; transformers is the real reference
    text_file: Path | None = None     # perplexity text; None = top-1 / KL only
    context: int = 1024
    max_tokens: int | None = 65536
    gate: bool = True                 # False: record the numbers, never fail the build
    threads: int | None = None


# The prompt sections a tolerance applies to, and how failures name them.
_SECTIONS = (("parity", "prefill"), ("parity_kv_cache", "KV-cache"))


def check_parity(executor: BundleExecutor, reference, tolerance: Tolerance, *, text_file: Path | None = None,
                 context: int = 1024, max_tokens: int | None = 65536,
                 progress: Progress | None = None) -> dict[str, Any]:
    """`reference` has `name` and `logits(ids)`. Returns the report (see the module docstring)."""
    prompts = [p[:executor.context_length] for p in encode_prompts(executor.encode) if len(p) >= 2]
    if progress:
        progress("parity", 0, 2)
    report: dict[str, Any] = {"reference": reference.name, "executed_with": executor.executed_with,
                              **executor.details(), **executor.prompt_parity(reference.logits, prompts),
                              "tolerance": tolerance.to_dict()}
    if progress:
        progress("parity", 2, 2)
    failures = []
    for key, label in _SECTIONS:
        r = report[key]
        if r["positions"] and (r["top1_agreement"] < tolerance.min_top1 or r["kl_divergence_mean"] > tolerance.max_kl):
            failures.append(f"{label} top-1 {r['top1_agreement']:.4f} / KL {r['kl_divergence_mean']:.3g} outside "
                            f"min_top1 {tolerance.min_top1} / max_kl {tolerance.max_kl}")
    if text_file is not None:
        text_file = Path(text_file)
        if not text_file.is_file():
            raise ConfigError(f"{text_file}: text file not found")
        ids = executor.encode(text_file.read_text(encoding="utf-8", errors="replace"))
        measured = text_parity(executor.logits, reference.logits, ids, min(context, executor.context_length),
                               max_tokens, progress)
        mine, theirs = measured["candidate"], measured["reference"]
        increase = 100.0 * (mine["perplexity"] / theirs["perplexity"] - 1.0)
        report["perplexity"] = {"text": text_file.name, "bundle": mine, "reference": theirs,
                                "increase_percent": increase}
        report["text_parity"] = {"text": text_file.name, **measured["parity"]}
        limit = tolerance.max_ppl_increase_percent
        if limit is not None and increase > limit:
            failures.append(f"perplexity {mine['perplexity']:.4f} is {increase:.2f}% above the reference "
                            f"{theirs['perplexity']:.4f} (limit {limit}%)")
    report["passed"] = not failures
    report["failures"] = failures
    report["failure"] = failures[0] if failures else None
    return report
