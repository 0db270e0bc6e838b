"""Decode speed of two or more graphs in one plain IO-binding loop, interleaved round by round.

    python benchmarks/decode_ab.py MODEL_DIR MODEL_DIR [...] [--threads 2] [--rounds 6] [--tag NAME]

MODEL_DIR is a folder with model.onnx and genai_config.json (one of our bundles, or the output of
`python -m onnxruntime_genai.models.builder ... -p int4 -e cpu`). All graphs are loaded in one
process with the same session options and run through the same loop (ort_decode.py): a fresh
`--prompt-tokens` random prompt, then `--new-tokens` greedy tokens; decode tokens/s counts the
steps after the first token over their time. After one warm-up generation per graph, every round
runs every graph once, the order rotating each round. Each generation records the load average
before it, its process CPU ms per token (spinning threads count, so it is not a work measure at 2
threads) and the involuntary context switches during it (how often the OS took the CPU away).

Writes benchmarks/results/decode_ab-<tag>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ort_decode  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default=None)
    args = ap.parse_args()

    capacity = args.prompt_tokens + args.new_tokens
    rng = np.random.default_rng(args.seed)
    graphs = [{"label": Path(m).name, "dir": str(Path(m).resolve()),
               "dec": ort_decode.Decoder(m, args.threads, capacity), "rounds": []} for m in args.models]
    for g in graphs:  # warm-up
        g["dec"].generate(rng.integers(100, 16000, size=args.prompt_tokens), args.new_tokens)
    for r in range(args.rounds):
        k = r % len(graphs)
        for g in graphs[k:] + graphs[:k]:
            prompt = rng.integers(100, 16000, size=args.prompt_tokens)
            load = ort_decode.loadavg()
            res = g["dec"].generate(prompt, args.new_tokens)
            row = {"round": r, "position_in_round": (graphs.index(g) - k) % len(graphs), "loadavg_before": load,
                   "decode_tokens_per_s": round(res["decode_tokens_per_s"], 2),
                   "prefill_ms": round(res["prefill_s"] * 1e3, 1),
                   "decode_cpu_ms_per_token": round(res["decode_cpu_ms_per_token"], 2),
                   "involuntary_switches": res["involuntary_switches"]}
            g["rounds"].append(row)
            print(f"round {r} {g['label']:<24} {row['decode_tokens_per_s']:7.2f} tok/s  "
                  f"nivcsw {row['involuntary_switches']:>5}  load {load[0]:.2f}", flush=True)
    summary = {}
    for g in graphs:
        tps = [x["decode_tokens_per_s"] for x in g["rounds"]]
        summary[g["label"]] = {"median_tokens_per_s": statistics.median(tps), "min": min(tps), "max": max(tps)}
    base = graphs[0]["label"]
    for g in graphs[1:]:
        ratios = [a["decode_tokens_per_s"] / b["decode_tokens_per_s"]
                  for a, b in zip(graphs[0]["rounds"], g["rounds"])]
        summary[f"{base} / {g['label']} per round"] = {"median": round(statistics.median(ratios), 3),
                                                       "min": round(min(ratios), 3), "max": round(max(ratios), 3)}
    tag = args.tag or f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
    out = HERE / "results" / f"decode_ab-{tag}.json"
    out.write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "threads": args.threads, "rounds": args.rounds, "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "loop": "benchmarks/ort_decode.py (plain IO binding, shared KV buffer, greedy)",
        "session_options": "intra_op_num_threads=threads, inter_op 1, sequential, ORT_ENABLE_ALL, spinning on",
        "machine": ort_decode.machine(), "summary": summary,
        "graphs": [{k: v for k, v in g.items() if k != "dec"} for g in graphs]}, indent=2) + "\n")
    for label, s in summary.items():
        print(f"{label}: {s}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
