"""Is the runtime's memory flat? RSS over 200 successive generations and one 2,000-token generation.

Warm-up: 3 short generations with prompts of 16, 64 and 128 tokens (the largest prefill used
below: onnxruntime's memory arena grows once to the largest shape it has run) and one 2,000-token
generation (which touches every page of the KV cache that a long generation uses: numpy allocates
it lazily). Baseline RSS is taken after that.
Then 200 generations (random prompts, 32-64 new tokens, sampled and greedy alternating), then one
more 2,000-token generation; RSS (VmRSS, the current resident size, not the peak) is sampled
throughout. The target: final RSS within 5% of the baseline.

    python benchmarks/runtime_memory.py                       # builds the trained 30M model, int4
    python benchmarks/runtime_memory.py --bundle path/to/bundle

Writes benchmarks/results/runtime_memory-<bundle name>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
TRAINED = Path(os.environ.get("QWEN_EDGE_TRAINED_MODEL", REPO.parent / "shared" / "models" / "qwen2-code-30m"))
sys.path.insert(0, str(REPO))

LONG = 2000
MAX_PROMPT = 128


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_bundle(work: Path) -> tuple[Path, str]:
    from qwen_edge.build import BuildRequest, build
    from qwen_edge.precision import Precision
    from qwen_edge.checkpoint.tiny import TINY_QWEN2, make_tiny_checkpoint

    if (TRAINED / "config.json").is_file():
        ckpt, name = TRAINED, "qwen2-code-30m-int4"
    else:
        ckpt = make_tiny_checkpoint(work / "tiny", {**TINY_QWEN2, "max_position_embeddings": 4096})
        name = "tiny-qwen2-int4"
    build(BuildRequest(ckpt, work / "bundle", Precision.preset("int4")))
    return work / "bundle", name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle")
    ap.add_argument("--generations", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import numpy as np

    from qwen_edge.runtime import SamplingParams, load

    with tempfile.TemporaryDirectory(prefix="runtime-memory-") as tmp:
        if args.bundle:
            bundle, name = Path(args.bundle), Path(args.bundle).name
        else:
            bundle, name = make_bundle(Path(tmp))
        gen = load(bundle, intra_op_threads=args.threads)
        vocab, context = gen.model.vocab_size, gen.model.context_length
        if context < LONG + 16:
            raise SystemExit(f"{bundle}: context {context} is too short for a {LONG}-token generation")
        rng = np.random.default_rng(0)

        def prompt(n: int) -> np.ndarray:
            return rng.integers(0, vocab, size=n, dtype=np.int64)

        rss_start = rss_mb()
        for n in (16, 64, MAX_PROMPT):  # onnxruntime's arena grows once to the largest prefill it has run
            gen.generate(prompt(n), max_new_tokens=16, stop_token_ids=())
        rss_before_first_long = rss_mb()
        t = time.perf_counter()
        warm_long = gen.generate(prompt(8), max_new_tokens=LONG, stop_token_ids=())
        warm_long_s = time.perf_counter() - t
        gc.collect()
        baseline = rss_mb()

        samples = []
        t = time.perf_counter()
        for k in range(args.generations):
            sampling = SamplingParams(do_sample=True, temperature=0.8, top_p=0.9, seed=k) if k % 2 else None
            gen.generate(prompt(int(rng.integers(8, MAX_PROMPT + 1))), max_new_tokens=int(rng.integers(32, 65)),
                         sampling=sampling, stop_token_ids=())
            if (k + 1) % 20 == 0:
                samples.append({"generations": k + 1, "rss_mb": round(rss_mb(), 2)})
        many_s = time.perf_counter() - t

        long_samples = []
        g = gen.start(prompt(8), max_new_tokens=LONG, stop_token_ids=())
        for i, _ in enumerate(g.tokens(), start=1):
            if i % 250 == 0:
                long_samples.append({"tokens": i, "rss_mb": round(rss_mb(), 2)})
        gc.collect()
        final = rss_mb()

    peak_during = max([s["rss_mb"] for s in samples + long_samples] + [final])
    result = {
        "bundle": name,
        "machine": {"python": platform.python_version(), "threads": args.threads},
        "rss_mb": {"start": round(rss_start, 2), "before_first_long": round(rss_before_first_long, 2),
                   "baseline": round(baseline, 2), "final": round(final, 2), "max_sampled": round(peak_during, 2)},
        "growth_percent": round(100.0 * (final - baseline) / baseline, 3),
        "max_growth_percent": round(100.0 * (peak_during - baseline) / baseline, 3),
        "generations": args.generations,
        "generations_seconds": round(many_s, 2),
        "warmup_long_tokens": len(warm_long.token_ids),
        "warmup_long_seconds": round(warm_long_s, 2),
        "long_tokens": len(g.token_ids),
        "samples_many": samples,
        "samples_long": long_samples,
        "target": "final RSS within 5% of the baseline",
    }
    result["passed"] = result["growth_percent"] < 5.0 and result["long_tokens"] == LONG
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"runtime_memory-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("samples")}, indent=2))


if __name__ == "__main__":
    main()
