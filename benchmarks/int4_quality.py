"""Perplexity of int4 bundles of the trained checkpoint for block sizes and (a)symmetry: the
quality side of the speed levers. Same protocol as tests/test_trained_quality.py (first 64k
held-out tokens, context 1024).

    python benchmarks/int4_quality.py ../shared/models/qwen2-code-30m [--variants sym32 asym128 ...]

Writes benchmarks/results/int4_quality-<checkpoint>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

FP32_PPL = 8.943  # the fp32 bundle on the same protocol (README)


def parse_variant(name: str) -> dict:
    sym = name.startswith("sym")
    return {"symmetric": sym, "block_size": int(name[3 if sym else 4:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--variants", nargs="+", default=["asym32", "sym32", "asym64", "sym64", "asym128", "sym128"])
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--context", type=int, default=1024)
    args = ap.parse_args()
    from tokenizers import Tokenizer

    from qwen_edge.build import BuildRequest, build
    from qwen_edge.precision import Precision
    from qwen_edge.runtime import Model
    from qwen_edge.verify.metrics import perplexity

    text = (args.checkpoint / "heldout.py.txt").read_text(encoding="utf-8")
    ids = Tokenizer.from_file(str(args.checkpoint / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    rows = []
    for name in args.variants:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "b"
            manifest = build(BuildRequest(args.checkpoint, out, Precision.preset("int4", **parse_variant(name))))
            ppl = perplexity(Model(out).logits, ids, args.context, args.tokens).perplexity
        size = sum(f["bytes"] for f in manifest["files"].values())
        rows.append({"variant": name, **parse_variant(name), "perplexity": round(ppl, 4),
                     "increase_vs_fp32_pct": round(100 * (ppl / FP32_PPL - 1), 2), "bundle_bytes": size})
        print(json.dumps(rows[-1]), flush=True)
        out = HERE / "results" / f"int4_quality-{args.checkpoint.name}.json"  # rewritten after every variant
        out.write_text(json.dumps({"fp32_perplexity": FP32_PPL, "tokens": args.tokens, "context": args.context,
                                   "command": " ".join(sys.argv), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
