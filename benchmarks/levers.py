"""A/B of runtime levers on one or more bundles, interleaved so that machine load hits all alike.

    python benchmarks/levers.py BUNDLE [BUNDLE ...] [--threads 1] [--rounds 5] [--session KEY=VALUE ...]

Each round runs every variant once (a prompt then `--new-tokens` greedy steps) and records wall
and process CPU time per decoded token. With one thread and spinning off, CPU time per token is
a load-insensitive measure of the work a variant does; wall time is what users see.
Writes benchmarks/results/levers-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _variants(args):
    """(label, bundle, session config entries) for every bundle x session setting."""
    sessions = [("default", {})]
    for item in args.session or []:
        key, _, value = item.partition("=")
        sessions.append((item, {key: value}))
    return [(f"{Path(b).name} [{label}]", b, cfg) for b in args.bundles for label, cfg in sessions]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--session", nargs="*", help="session config entries to try as extra variants, KEY=VALUE")
    ap.add_argument("--no-spin", action="store_true", help="turn off thread spinning in every variant")
    ap.add_argument("--all-prefill-logits", action="store_true",
                    help="add, per bundle, a variant whose prefill computes logits for every prompt position")
    args = ap.parse_args()

    import numpy as np

    from qwen_edge.runtime import Generator, Model
    from qwen_edge.runtime.model import RuntimeOptions
    from qwen_edge.runtime.sampling import SamplingParams

    variants = []
    for label, bundle, cfg in _variants(args):
        model = Model(bundle, RuntimeOptions(intra_op_threads=args.threads))
        if cfg or args.no_spin:
            import onnxruntime as ort

            from qwen_edge.runtime.model import _session_options

            recommended = dict(model.manifest.get("runtime", {}))
            entries = dict(recommended.get("config_entries", {}))
            if args.no_spin:
                entries["session.intra_op.allow_spinning"] = "0"
            entries.update(cfg)
            recommended["config_entries"] = entries
            so = _session_options(RuntimeOptions(intra_op_threads=args.threads), recommended)
            model.session = ort.InferenceSession(str(model.path / model.manifest["io"]["model_file"]), so,
                                                 providers=["CPUExecutionProvider"])
        variants.append({"label": label, "gen": Generator(model), "ttft": [], "wall": [], "cpu": []})
        if args.all_prefill_logits and not cfg:
            full = Model(bundle, RuntimeOptions(intra_op_threads=args.threads))
            full.session = model.session
            full._last_logits_only = None  # the path bundles without logits_to_keep take
            variants.append({"label": f"{Path(bundle).name} [all prefill logits]", "gen": Generator(full),
                             "ttft": [], "wall": [], "cpu": []})
    rng = np.random.default_rng(0)
    for r in range(args.rounds + 1):
        for v in variants:
            prompt = rng.integers(100, 16000, size=args.prompt_tokens, dtype=np.int64)
            g = v["gen"].start(prompt, max_new_tokens=args.new_tokens, sampling=SamplingParams(), stop_token_ids=())
            it = g.tokens()
            t0 = time.perf_counter()
            next(it)
            t1, c1 = time.perf_counter(), time.process_time()
            for _ in it:
                pass
            t2, c2 = time.perf_counter(), time.process_time()
            if r:  # round 0 warms up
                v["ttft"].append((t1 - t0) * 1e3)
                v["wall"].append((t2 - t1) * 1e3 / (args.new_tokens - 1))
                v["cpu"].append((c2 - c1) * 1e3 / (args.new_tokens - 1))
    rows = []
    for v in variants:
        rows.append({"variant": v["label"], "ttft_ms": round(statistics.median(v["ttft"]), 1),
                     "decode_ms_per_token_wall": round(statistics.median(v["wall"]), 2),
                     "decode_ms_per_token_cpu": round(statistics.median(v["cpu"]), 2),
                     "decode_tokens_per_s": round(1e3 / statistics.median(v["wall"]), 2)})
        print(f"{v['label']:<60} ttft {rows[-1]['ttft_ms']:8.1f} ms  decode {rows[-1]['decode_ms_per_token_wall']:6.2f} "
              f"ms/tok wall  {rows[-1]['decode_ms_per_token_cpu']:6.2f} ms/tok cpu")
    out = HERE / "results" / f"levers-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "threads": args.threads, "rounds": args.rounds,
                               "no_spin": args.no_spin, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
