"""Perplexity of our own recipes on a trained checkpoint's held-out text (no peers).

    python benchmarks/recipe_ppl.py CKPT --recipes fp32 fp16 int8 int4 int4:symmetric=0 int4:calibration=gptq \
        [--text FILE] [--tokens 32768] [--context 512] [--name NAME]

A recipe is a precision preset with `:key=value` overrides of its Precision fields (symmetric=0|1,
block_size=N, method=rtn|search) and `calibration=gptq|awq|search` for data-aware quantization on the
built-in calibration text. Perplexity is the mean over non-overlapping windows of `--context` tokens of
the first `--tokens` tokens of the text (heldout.py.txt beside the checkpoint by default), the setting of
the trained checkpoints' READMEs and of tests/verify/test_trained_*quality.py. Writes
benchmarks/results/recipe_ppl-<name>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_recipe(text: str) -> tuple[str, dict, str | None]:
    preset, *pairs = text.split(":")
    overrides, calibration = {}, None
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key == "calibration":
            calibration = value
        elif key == "symmetric":
            overrides[key] = value == "1"
        elif key == "block_size":
            overrides[key] = int(value)
        else:
            overrides[key] = value
    return preset, overrides, calibration


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--recipes", nargs="+", required=True)
    ap.add_argument("--text", type=Path, default=None)
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()

    from tokenizers import Tokenizer

    from qwen_edge.build import BuildRequest, build
    from qwen_edge.precision import Precision
    from qwen_edge.quant.data_aware import CalibrationConfig
    from qwen_edge.runtime import Model
    from qwen_edge.verify.metrics import perplexity

    text_file = args.text or args.checkpoint / "heldout.py.txt"
    ids = Tokenizer.from_file(str(args.checkpoint / "tokenizer.json")).encode(
        text_file.read_text(encoding="utf-8"), add_special_tokens=False).ids
    rows = []
    with tempfile.TemporaryDirectory(prefix="recipe_ppl-") as tmp:
        for recipe in args.recipes:
            preset, overrides, calibration = parse_recipe(recipe)
            out = Path(tmp) / f"b{len(rows)}"
            start = time.perf_counter()
            manifest = build(BuildRequest(args.checkpoint, out, Precision.preset(preset, **overrides),
                                          calibration=CalibrationConfig(method=calibration) if calibration else None))
            built = time.perf_counter() - start
            ppl = perplexity(Model(out).logits, ids, args.context, args.tokens).perplexity
            size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
            rows.append({"recipe": recipe, "precision": manifest["precision"], "perplexity": ppl,
                         "bundle_bytes": size, "build_s": round(built, 1)})
            print(f"{recipe:32s} ppl {ppl:9.4f}  {size / 1e6:7.1f} MB", flush=True)
    base = next((r["perplexity"] for r in rows if r["recipe"] == "fp32"), None)
    for r in rows:
        r["vs_fp32"] = None if base is None else r["perplexity"] / base - 1
    name = args.name or args.checkpoint.name
    out_file = HERE / "results" / f"recipe_ppl-{name}.json"
    out_file.write_text(json.dumps({
        "command": "python benchmarks/recipe_ppl.py " + " ".join(
            [str(args.checkpoint), "--recipes", *args.recipes, "--tokens", str(args.tokens), "--context",
             str(args.context)]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "text": str(text_file),
        "tokens": args.tokens, "context": args.context, "results": rows}, indent=2) + "\n")
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
