"""Where a bundle's runtime memory goes: resident memory after each phase, split into file-backed pages
(the weights file as mapped) and anonymous memory (pre-packed weight copies, caches, onnxruntime's arena).

    python benchmarks/runtime_memory_breakdown.py BUNDLE [--context 4096] [--threads 2]

Phases: the Python process with the runtime imported; the bundle loaded (onnxruntime session made: weights
mapped and pre-packed); one cache of `--context` positions allocated and touched; a prefill of
`--context` - 1 random tokens (the arena grows to the largest activations); one decode step. Alongside,
the sizes the bundle's shapes imply: key/value caches of the full-attention layers, the linear-attention
layers' fixed states, one row of logits. Reads /proc/self/smaps_rollup (Linux).
Writes benchmarks/results/runtime_memory_breakdown-<bundle name>-<context>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def resident() -> dict:
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        if value.strip().endswith("kB"):
            fields[key] = int(value.split()[0]) * 1024
    return {"rss": fields["Rss"], "file_backed": fields.get("Rss", 0) - fields.get("Anonymous", 0),
            "anonymous": fields.get("Anonymous", 0),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from qwen_edge.runtime import Model, RuntimeOptions

    phases = {"imported": resident()}
    model = Model(args.bundle, RuntimeOptions(intra_op_threads=args.threads))
    phases["loaded"] = resident()
    cache = model.acquire_cache()
    if cache.capacity < args.context:
        raise SystemExit(f"the model's cache holds {cache.capacity} positions, fewer than --context {args.context}")
    for k, array in enumerate(cache._arrays):  # numpy allocates lazily: touch the pages `--context` uses
        if k < cache._num_kv:
            array[:, :, :args.context] = 0
        else:
            array.fill(0)
    phases["cache allocated"] = resident()
    ids = np.random.default_rng(0).integers(100, 16000, args.context - 1)
    mask = np.ones((1, cache.capacity), np.int64)
    logits = model.step(cache, ids, mask, last_only=True)[-1]
    phases["prefilled"] = resident()
    model.step(cache, np.array([int(np.argmax(logits))]), mask)
    phases["one decode step"] = resident()
    model.release_cache(cache)

    manifest = json.loads((args.bundle / "manifest.json").read_text())
    io = manifest["io"]
    itemsize = {"fp32": 4, "fp16": 2}
    kv_layers = io.get("kv_layers", list(range(int(io["num_layers"]))))
    implied = {
        "weights_file_bytes": sum(f.stat().st_size for f in args.bundle.iterdir() if f.suffix in (".onnx", ".data")),
        "kv_cache_bytes": 2 * len(kv_layers) * int(io["num_kv_heads"]) * args.context * int(io["head_dim"])
        * itemsize[io["kv_dtype"]],
        "linear_state_bytes": len(io.get("state_layers", [])) * sum(
            int(np.prod(s["shape"])) * itemsize[s["dtype"]] for s in io.get("states", {}).values()),
        "logits_row_bytes": int(io["vocab_size"]) * 4,
    }
    out = HERE / "results" / f"runtime_memory_breakdown-{args.bundle.name}-{args.context}.json"
    out.write_text(json.dumps({"bundle": str(args.bundle), "context": args.context, "threads": args.threads,
                               "phases": phases, "implied_by_shapes": implied}, indent=2) + "\n")
    for name, r in phases.items():
        print(f"{name:16s} rss {r['rss'] / 1e6:8.1f} MB  file-backed {r['file_backed'] / 1e6:8.1f}  "
              f"anonymous {r['anonymous'] / 1e6:8.1f}  peak {r['peak_rss'] / 1e6:8.1f}")
    print({k: (None if v is None else round(v / 1e6, 1)) for k, v in implied.items()}, "MB")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
