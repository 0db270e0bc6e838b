"""Where a decode step's kernel time goes, by operator type, from onnxruntime's own profiler.

    python benchmarks/decode_profile.py MODEL_DIR [MODEL_DIR ...] [--threads 2] [--rounds 3] [--tag NAME]

MODEL_DIR is a folder with model.onnx and genai_config.json: one of our bundles or the output of
onnxruntime-genai's builder. Every model gets a session with `SessionOptions.enable_profiling`
and runs, through the plain IO-binding loop of ort_decode.py, one warm-up generation and then
`--rounds` measured ones (models interleaved): a `--prompt-tokens` random prompt, then
`--decode-steps` greedy one-token steps. Only the measured generations' decode steps are counted
(the prompt passes are not). Kernel time is the sum of the profile's `*_kernel_time` node events
that fall inside those steps' `model_run` events, grouped by the event's `op_name` (the operator
types after onnxruntime's graph optimizations).

Writes benchmarks/results/decode_profile-<tag>.json; the raw profiles go to
benchmarks/work/profiles/.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ort_decode  # noqa: E402


def kernel_time_by_op(profile: Path, runs: list[int]) -> dict:
    """Per op type: kernel microseconds and calls inside the model_run events numbered `runs` (0-based)."""
    events = json.loads(profile.read_text())
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    wanted = [model_runs[i] for i in runs]
    starts = [e["ts"] for e in wanted]
    by_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        k = bisect.bisect_right(starts, e["ts"]) - 1
        if k < 0 or e["ts"] + e["dur"] > wanted[k]["ts"] + wanted[k]["dur"]:
            continue
        slot = by_op[e["args"]["op_name"]]
        slot[0] += e["dur"]
        slot[1] += 1
    return {"run_us": sum(e["dur"] for e in wanted), "run_us_each": [e["dur"] for e in wanted],
            "by_op": {op: {"kernel_us": us, "calls": calls} for op, (us, calls) in by_op.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--decode-steps", type=int, default=60)
    ap.add_argument("--warmup-steps", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default=None)
    args = ap.parse_args()

    tag = args.tag or f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
    prof_dir = HERE / "work" / "profiles"
    prof_dir.mkdir(parents=True, exist_ok=True)
    capacity = args.prompt_tokens + max(args.decode_steps, args.warmup_steps) + 1
    rng = np.random.default_rng(args.seed)
    entries = []
    for m in args.models:
        label = Path(m).name
        dec = ort_decode.Decoder(m, args.threads, capacity, profile_prefix=str(prof_dir / f"{tag}-{label}"))
        vocab_hi = min(dec.vocab, 16000)  # ids every checkpoint here has (the trained tokenizer's 16384)
        entries.append({"label": label, "dir": str(Path(m).resolve()), "dec": dec, "vocab_hi": vocab_hi,
                        "runs": 0, "measured": [], "generations": []})
    for e in entries:  # warm-up
        prompt = rng.integers(100, e["vocab_hi"], size=args.prompt_tokens)
        e["dec"].generate(prompt, args.warmup_steps + 1)
        e["runs"] += 1 + args.warmup_steps
    for r in range(args.rounds):
        for e in entries:
            prompt = rng.integers(100, e["vocab_hi"], size=args.prompt_tokens)
            load = ort_decode.loadavg()
            g = e["dec"].generate(prompt, args.decode_steps + 1)
            first = e["runs"] + 1  # the prompt pass is run number e["runs"]
            e["measured"] += list(range(first, first + args.decode_steps))
            e["runs"] += 1 + args.decode_steps
            e["generations"].append({"round": r, "loadavg_before": load, "loadavg_after": ort_decode.loadavg(),
                                     "decode_tokens_per_s_profiled": round(g["decode_tokens_per_s"], 2),
                                     "involuntary_switches": g["involuntary_switches"]})
    results = []
    for e in entries:
        path = Path(e["dec"].end_profiling())
        k = kernel_time_by_op(path, e["measured"])
        steps = len(e["measured"])
        total = sum(v["kernel_us"] for v in k["by_op"].values())
        ops = sorted(k["by_op"].items(), key=lambda kv: -kv[1]["kernel_us"])
        results.append({
            "model": e["label"], "dir": e["dir"], "profile_file": str(path.relative_to(HERE.parent)),
            "decode_steps_counted": steps,
            "kernel_us_per_step": round(total / steps, 1),
            "model_run_us_per_step": round(k["run_us"] / steps, 1),
            "kernel_share_of_model_run": round(total / k["run_us"], 4),
            "by_op": [{"op": op, "share_of_kernel_time": round(v["kernel_us"] / total, 4),
                       "kernel_us_per_step": round(v["kernel_us"] / steps, 1),
                       "calls_per_step": round(v["calls"] / steps, 2)} for op, v in ops],
            "generations": e["generations"],
        })
        print(f"{e['label']}: {total / steps / 1e3:.2f} ms kernel time per decode step "
              f"({total / k['run_us']:.0%} of model_run), {steps} steps")
        for row in results[-1]["by_op"][:6]:
            print(f"    {row['op']:<36} {row['share_of_kernel_time']:6.1%}  {row['kernel_us_per_step']:9.1f} us/step"
                  f"  {row['calls_per_step']:6.1f} calls/step")
    out = HERE / "results" / f"decode_profile-{tag}.json"
    out.write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "threads": args.threads, "rounds": args.rounds, "prompt_tokens": args.prompt_tokens,
        "decode_steps": args.decode_steps, "warmup_steps": args.warmup_steps,
        "loop": "benchmarks/ort_decode.py (plain IO binding, shared KV buffer, greedy)",
        "machine": ort_decode.machine(), "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
