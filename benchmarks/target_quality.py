"""Quality of the hardware targets on a real checkpoint: the numbers the issue's Must-show asks for.

    python benchmarks/target_quality.py ../shared/models/qwen2-code-30m --targets openvino
    python benchmarks/target_quality.py ../shared/models/qwen2-code-30m --targets cpu,android --greedy

Builds the targets from one checkpoint load (context 1024), runs each executed target's parity
against the transformers reference (perplexity on the first --max-tokens tokens of the held-out
text at context 1024), and with --greedy compares greedy continuations of the android .ort model
with the int4 CPU bundle. Writes benchmarks/results/target_quality-<checkpoint>-<targets>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = ("def quicksort(xs):\n", "import os\nimport sys\n\n\ndef main():\n", "class Node:\n    def __init__(self",
           "for i in range(10):\n", "# Read a CSV file and print the sum of each column\n")


def main() -> None:
    from qwen_edge.build import build_targets
    from qwen_edge.graph.decoder import DecoderOptions
    from qwen_edge.targets import resolve_targets
    from qwen_edge.targets.catalog import load_executor
    from qwen_edge.verify.parity import ParityRequest

    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--targets", default="openvino")
    ap.add_argument("--text", type=Path, default=None, help="default: CHECKPOINT/heldout.py.txt")
    ap.add_argument("--max-tokens", type=int, default=65536)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--no-perplexity", action="store_true", help="parity on the prompt set only")
    ap.add_argument("--greedy", action="store_true", help="compare android (.ort) and cpu greedy tokens")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    text = args.text or args.checkpoint / "heldout.py.txt"
    result = {"checkpoint": args.checkpoint.name, "machine": platform.platform(), "targets": {},
              "note": "shared 2-core machine: timings are noisy"}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        manifests = build_targets(
            args.checkpoint, Path(tmp), resolve_targets(args.targets), options=DecoderOptions(max_positions=args.context),
            parity=ParityRequest(reference_kind="transformers", text_file=None if args.no_perplexity else text, context=args.context,
                                 max_tokens=args.max_tokens, gate=False, threads=args.threads))
        result["seconds"] = round(time.perf_counter() - start, 1)
        for name, m in manifests.items():
            size = sum(f["bytes"] for f in m["files"].values())
            result["targets"][name] = {"precision": m["precision"]["name"], "bundle_bytes": size,
                                       "model_file": m["io"]["model_file"], "passes": m["passes"],
                                       "parity": m.get("parity")}
        if args.greedy:
            cpu, android = load_executor(Path(tmp) / "cpu"), load_executor(Path(tmp) / "android")
            rows = []
            for prompt in PROMPTS:
                ids = cpu.encode(prompt)
                a = android.greedy(ids, args.new_tokens)
                c = cpu.greedy(ids, args.new_tokens)
                rows.append({"prompt": prompt, "identical": a == c, "tokens": len(c),
                             "first_difference": next((k for k, (x, y) in enumerate(zip(a, c)) if x != y), None)})
            result["greedy_android_vs_cpu_int4"] = rows
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"target_quality-{args.checkpoint.name}-{args.targets.replace(',', '_')}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    for name, t in result["targets"].items():
        p = t["parity"] or {}
        ppl = p.get("perplexity", {})
        print(f"{name}: {t['precision']} {t['bundle_bytes'] / 1e6:.1f} MB, top-1 "
              f"{p.get('parity', {}).get('top1_agreement', float('nan')):.4f}, perplexity "
              f"{ppl.get('bundle', {}).get('perplexity', float('nan')):.4f} vs reference "
              f"{ppl.get('reference', {}).get('perplexity', float('nan')):.4f} "
              f"({ppl.get('increase_percent', float('nan')):+.2f}%)")
    for row in result.get("greedy_android_vs_cpu_int4", []):
        print(f"greedy {row['tokens']} tokens identical={row['identical']} {row['prompt']!r}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
