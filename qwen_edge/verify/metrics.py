"""Parity and quality metrics between a bundle and a reference: all numpy, no torch.

Both sides are "logits functions": ids (1-D) -> logits [len(ids), vocab].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

LogitsFn = Callable[[np.ndarray], np.ndarray]
Progress = Callable[[str, int, int], None]

# A fixed prompt set: code and prose, ASCII and not, short and longer.
PROMPTS = (
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "import numpy as np\n\nclass Matrix:\n    def __init__(self, rows, cols):\n",
    "The quick brown fox jumps over the lazy dog. Then it",
    "for i in range(10):\n    print(i * i)\n# 日本語のコメント and émojis 🙂\n",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING",
)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass
class ParityReport:
    prompts: int
    positions: int
    max_abs_logits_diff: float
    mean_abs_logits_diff: float
    top1_agreement: float
    kl_divergence_mean: float
    kl_divergence_max: float

    def to_dict(self) -> dict:
        return asdict(self)


def compare_rows(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> ParityReport:
    """Max/mean abs logits difference, top-1 agreement and KL(reference || candidate) per position,
    over (candidate, reference) logits of the same positions, one pair per sequence."""
    max_diff, sum_diff, agree, n_pos, n_seq = 0.0, 0.0, 0, 0, 0
    kls: list[np.ndarray] = []
    for cand, ref in pairs:
        cand, ref = cand.astype(np.float64), ref.astype(np.float64)
        if ref.shape != cand.shape:
            raise ValueError(f"logits shapes differ: candidate {cand.shape}, reference {ref.shape}")
        diff = np.abs(ref - cand)
        max_diff = max(max_diff, float(diff.max()))
        sum_diff += float(diff.mean()) * len(ref)
        agree += int((ref.argmax(-1) == cand.argmax(-1)).sum())
        lp_ref, lp_cand = log_softmax(ref), log_softmax(cand)
        kls.append((np.exp(lp_ref) * (lp_ref - lp_cand)).sum(-1))
        n_pos += len(ref)
        n_seq += 1
    kl = np.concatenate(kls) if kls else np.zeros(1)
    return ParityReport(
        prompts=n_seq, positions=n_pos, max_abs_logits_diff=max_diff,
        mean_abs_logits_diff=sum_diff / max(n_pos, 1), top1_agreement=agree / max(n_pos, 1),
        kl_divergence_mean=float(kl.mean()), kl_divergence_max=float(kl.max()),
    )


def compare_logits(candidate: LogitsFn, reference: LogitsFn, sequences: Iterable[np.ndarray]) -> ParityReport:
    """compare_rows over every position of each sequence, both sides computing the whole sequence."""
    return compare_rows((candidate(ids), reference(ids)) for ids in sequences)


@dataclass
class PerplexityReport:
    tokens_scored: int
    windows: int
    context: int
    perplexity: float
    mean_nll: float

    def to_dict(self) -> dict:
        return asdict(self)


def windows(ids: np.ndarray, context: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Non-overlapping windows of `context` tokens over the first `max_tokens` tokens."""
    if context < 2:
        raise ValueError(f"context must be at least 2 tokens, got {context}")
    ids = np.asarray(ids, dtype=np.int64)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    return [ids[i:i + context] for i in range(0, len(ids) - 1, context) if len(ids[i:i + context]) >= 2]


def perplexity(logits_fn: LogitsFn, ids: np.ndarray, context: int, max_tokens: int | None = None,
               progress: Progress | None = None) -> PerplexityReport:
    """exp(mean next-token NLL), scoring every token but the first of each window."""
    chunks = windows(ids, context, max_tokens)
    total_nll, count = 0.0, 0
    for k, chunk in enumerate(chunks):
        if progress:
            progress("perplexity", k, len(chunks))
        total_nll += _window_nll(log_softmax(logits_fn(chunk)[:-1]), chunk)
        count += len(chunk) - 1
    if progress:
        progress("perplexity", len(chunks), len(chunks))
    return _perplexity_report(total_nll, count, len(chunks), context)


def _window_nll(log_probs: np.ndarray, chunk: np.ndarray) -> float:
    """The summed next-token NLL of one window from its log-probabilities (at least len - 1 rows)."""
    return -float(log_probs[np.arange(len(chunk) - 1), chunk[1:]].sum())


def _perplexity_report(total_nll: float, count: int, n_windows: int, context: int) -> PerplexityReport:
    mean = total_nll / max(count, 1)
    return PerplexityReport(tokens_scored=count, windows=n_windows, context=context,
                            perplexity=math.exp(mean), mean_nll=mean)


def text_parity(candidate: LogitsFn, reference: LogitsFn, ids: np.ndarray, context: int,
                max_tokens: int | None = None, progress: Progress | None = None) -> dict:
    """Perplexity of both sides and top-1 agreement / KL(reference || candidate) over the same windows.

    One forward of each side per window (a slow device is the costly part), accumulated per window,
    so memory holds one window of logits. Returns {"candidate", "reference"}: PerplexityReport dicts,
    and "parity": positions, windows, context, top1_agreement, kl_divergence_mean / _max.
    """
    chunks = windows(ids, context, max_tokens)
    nll = {"candidate": 0.0, "reference": 0.0}
    agree, kl_sum, kl_max, count = 0, 0.0, 0.0, 0
    for k, chunk in enumerate(chunks):
        if progress:
            progress("text parity", k, len(chunks))
        lp_c, lp_r = log_softmax(candidate(chunk)), log_softmax(reference(chunk))
        nll["candidate"] += _window_nll(lp_c, chunk)
        nll["reference"] += _window_nll(lp_r, chunk)
        kl = (np.exp(lp_r) * (lp_r - lp_c)).sum(-1)
        agree += int((lp_c.argmax(-1) == lp_r.argmax(-1)).sum())
        kl_sum += float(kl.sum())
        kl_max = max(kl_max, float(kl.max()))
        count += len(chunk) - 1
    if progress:
        progress("text parity", len(chunks), len(chunks))
    positions = sum(len(c) for c in chunks)
    out = {side: _perplexity_report(total, count, len(chunks), context).to_dict() for side, total in nll.items()}
    out["parity"] = {"positions": positions, "windows": len(chunks), "context": context,
                     "top1_agreement": agree / max(positions, 1), "kl_divergence_mean": kl_sum / max(positions, 1),
                     "kl_divergence_max": kl_max}
    return out


def encode_prompts(encode: Callable[[str], Sequence[int]], prompts: Sequence[str] = PROMPTS) -> list[np.ndarray]:
    return [np.asarray(encode(p), dtype=np.int64) for p in prompts]
