"""Time to first token and decode speed of a loaded bundle (used by `qwen-edge bench`)."""

from __future__ import annotations

import resource
import statistics

import numpy as np

from .generator import Generator
from .sampling import SamplingParams


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def benchmark(gen: Generator, *, prompt_tokens: int = 128, new_tokens: int = 128, runs: int = 5,
              warmup: int = 1, seed: int = 0) -> dict:
    """Greedy generation of exactly `new_tokens` (stop tokens disabled) after a random prompt."""
    model = gen.model
    rng = np.random.default_rng(seed)
    ttft, tps = [], []
    for k in range(warmup + runs):
        prompt = rng.integers(0, model.vocab_size, size=prompt_tokens, dtype=np.int64)
        g = gen.start(prompt, max_new_tokens=new_tokens, sampling=SamplingParams(), stop_token_ids=())
        for _ in g.tokens():
            pass
        if k >= warmup:
            ttft.append(g.stats.time_to_first_token_s * 1e3)
            tps.append(g.stats.decode_tokens_per_s)
    return {
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "runs": runs,
        "ttft_ms": ttft,
        "decode_tokens_per_s": tps,
        "ttft_ms_median": statistics.median(ttft),
        "decode_tokens_per_s_median": statistics.median(tps),
        "peak_rss_mb": peak_rss_mb(),
    }
