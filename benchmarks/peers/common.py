"""What every peer script shares: the workload, the timing loop's summary and the result record.

Peer scripts run in their own process (the suite's driver starts one per tool), so that each
tool's peak RSS is its own. They must not import qwen_edge or each other's libraries at module
level: a peer that is not installed is reported as skipped, not as a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
from pathlib import Path

import numpy as np


def run_parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("model", help="the model directory or file this peer runs")
    ap.add_argument("--out", required=True, help="JSON file to write the measurement to")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--token-high", type=int, default=16000,
                    help="prompt ids are drawn from [100, token-high): ids every tokenizer in the suite knows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--options", default="{}", help="peer-specific settings as a JSON object")
    return ap


def prompts(args) -> list[np.ndarray]:
    """A fresh random prompt per generation, so no runtime can reuse a cached prefix."""
    rng = np.random.default_rng(args.seed)
    return [rng.integers(100, args.token_high, size=args.prompt_tokens, dtype=np.int64)
            for _ in range(args.warmup + args.runs)]


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def summary(args, ttft_s: list[float], decode_tps: list[float], versions: dict, extra: dict | None = None) -> dict:
    """`ttft_s` and `decode_tps` hold the timed runs only (warm-up runs already dropped)."""
    return {
        "workload": {"prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "runs": args.runs,
                     "warmup": args.warmup, "threads": args.threads, "sampling": "greedy", "batch": 1},
        "ttft_ms": [round(t * 1e3, 2) for t in ttft_s],
        "decode_tokens_per_s": [round(t, 2) for t in decode_tps],
        "ttft_ms_median": round(statistics.median(ttft_s) * 1e3, 2),
        "decode_tokens_per_s_median": round(statistics.median(decode_tps), 2),
        "peak_rss_bytes": peak_rss_bytes(),
        "versions": versions,
        **(extra or {}),
    }


def time_generation(step_tokens, new_tokens: int, clock) -> tuple[float, float]:
    """Drive an iterator of generated tokens; returns (time to first token, decode tokens/s).

    Decode speed counts the tokens after the first over the time after the first, as all peers
    report it; `step_tokens` must start its work when first advanced.
    """
    start = clock()
    it = iter(step_tokens)
    next(it)
    first = clock()
    produced = 1
    for _ in it:
        produced += 1
        if produced >= new_tokens:
            break
    end = clock()
    if produced < new_tokens:
        raise RuntimeError(f"generation stopped after {produced} of {new_tokens} tokens")
    return first - start, (produced - 1) / (end - first)


def write(path: str, record: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2) + "\n")


def pin_threads(threads: int) -> None:
    """Caps the OpenMP / BLAS pools some libraries size from the machine instead of their own options."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(2)
