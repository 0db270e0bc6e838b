"""Quantization quality against the peers, on the same text, token windows and context.

    python benchmarks/quality.py CKPT --text CKPT/heldout.py.txt --max-tokens 65536 --context 1024 \
        --peers-python /work/venvs/peers/bin/python --converter .../vendor/llama.cpp/convert_hf_to_gguf.py \
        --llama-bin .../build/bin

Entries (each: bundle/file bytes, perplexity, increase over our fp32 bundle):
  * ours: fp32; int4 without calibration (default, --symmetric, --quant-method rtn); data-aware
    int4 (GPTQ); mixed precision under size budgets;
  * onnxruntime-genai's model builder, int4 with algo_config default / rtn / k_quant;
  * llama.cpp Q4_0, Q4_K_M, Q5_K_M from its own converter and quantizer (quality_llamacpp.py, run
    in a venv with llama-cpp-python; the same token ids are fed, so tokenization cannot differ),
    without calibration and, with --llama-bin (llama-imatrix and llama-quantize built from the same
    llama.cpp sources, see benchmarks/README.md), with an importance matrix computed on the same
    calibration text as our GPTQ (the text of the very windows GPTQ reads: --imatrix-tokens tokens
    in windows of 512, default --calibration-tokens);
  * optimum-intel int4 is not installed in these venvs (see the results' "skipped").
Calibration uses the built-in corpus (standard-library Python), which shares no file with the text.
Results are appended to the JSON after every entry; a chart (SVG, no plotting dependency) shows
perplexity increase against size. `--table RESULTS.json [MORE.json]` prints the README's table
from results files measured on the same windows (one row per entry, in the files' order; the
increase is over the "ours fp32" entry among them) and measures nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qwen_edge.build import BuildRequest, build  # noqa: E402
from qwen_edge.quant.mixed_precision import Budget  # noqa: E402
from qwen_edge.precision import Precision  # noqa: E402
from qwen_edge.quant.quality import QualityConfig  # noqa: E402
from qwen_edge.quant.calibration import load_calibration_text, overlapping_lines, token_windows  # noqa: E402
from qwen_edge.quant.data_aware import CalibrationConfig  # noqa: E402
from qwen_edge.verify.metrics import log_softmax  # noqa: E402

GENAI_ALGOS = ("default", "rtn", "k_quant")


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and p.name != "manifest.json")


def onnx_perplexity(model_dir: Path, windows: np.ndarray, threads: int) -> dict:
    """Perplexity of a genai-layout decoder (ours or the genai builder's) over full-window prefills."""
    import onnxruntime as ort

    model = next(p for p in sorted(Path(model_dir).glob("*.onnx")))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    decoder = json.loads((Path(model_dir) / "genai_config.json").read_text())["model"]["decoder"]
    kv_heads, head_dim = int(decoder["num_key_value_heads"]), int(decoder["head_size"])
    nll, count = 0.0, 0
    for row in windows:
        n = len(row)
        feeds = {}
        for name, info in inputs.items():
            if name == "input_ids":
                feeds[name] = row[None].astype(np.int64)
            elif name == "attention_mask":
                feeds[name] = np.ones((1, n), np.int64)
            elif name == "position_ids":
                feeds[name] = np.arange(n, dtype=np.int64)[None]
            elif name.startswith("past_key_values"):
                dtype = np.float16 if "float16" in info.type else np.float32
                feeds[name] = np.zeros((1, kv_heads, 0, head_dim), dtype)
            else:
                raise RuntimeError(f"{model}: unexpected input '{name}'")
        logits = sess.run(["logits"], feeds)[0][0].astype(np.float32)
        lp = log_softmax(logits[:-1])
        nll -= float(lp[np.arange(n - 1), row[1:]].sum())
        count += n - 1
    return {"perplexity": math.exp(nll / count), "tokens_scored": count, "windows": int(len(windows))}


def our_recipes(args) -> list[tuple[str, dict]]:
    cal = CalibrationConfig(method="gptq", source="builtin", tokens=args.calibration_tokens)
    cal32k = CalibrationConfig(method="gptq", source="builtin", tokens=32768)
    int4 = Precision.preset("int4")  # block 32, asymmetric, fp16 scales
    return [
        ("ours fp32", dict(precision=Precision.preset("fp32"))),
        ("ours int4 search b32 (no calibration)", dict(precision=int4)),
        # The CLI's --symmetric and --quant-method rtn (no zero points; plain round-to-nearest scales).
        ("ours int4 symmetric b32 (no calibration)", dict(precision=Precision.preset("int4", symmetric=True))),
        ("ours int4 rtn b32 (no calibration)", dict(precision=Precision.preset("int4", method="rtn"))),
        ("ours int4 gptq b32", dict(precision=int4, calibration=cal)),
        ("ours mixed gptq <=20.0MB", dict(precision=int4, calibration=cal, budget=Budget(max_size_mb=20.0))),
        ("ours mixed gptq 32k <=20.0MB", dict(precision=int4, calibration=cal32k, budget=Budget(max_size_mb=20.0))),
        ("ours mixed gptq <=20.6MB", dict(precision=int4, calibration=cal, budget=Budget(max_size_mb=20.6))),
        ("ours mixed gptq <=25.7MB", dict(precision=int4, calibration=cal, budget=Budget(max_size_mb=25.7))),
    ]


def imatrix_calibration(ckpt: Path, calibration, tokens: int, window: int, path: Path) -> dict:
    """Writes the text llama-imatrix reads: the windows our GPTQ calibrates on (the same
    `token_windows` of the same tokenization of the same corpus), decoded back to text and joined.
    llama-imatrix tokenizes it again; it reads `tokens // window` chunks of `window`."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    ids = tokenizer.encode(calibration.text).ids
    picked = token_windows(ids, window, tokens)
    text = "".join(tokenizer.decode(row.tolist(), skip_special_tokens=False) for row in picked)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    data = path.read_bytes()
    return {"source": calibration.source, "selection": "token_windows of the corpus, as our GPTQ picks them",
            "windows": int(picked.shape[0]), "window": window, "tokens": int(picked.size),
            "tokens_on_retokenizing_with_checkpoint_tokenizer": len(tokenizer.encode(text).ids),
            "file": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def genai_build(ckpt: Path, out: Path, algo: str, work: Path) -> None:
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(ckpt), "-m", ckpt.name,
           "-o", str(out), "-p", "int4", "-e", "cpu", "-c", str(work / "genai-cache")]
    if algo != "default":
        cmd += ["--extra_options", f"algo_config={algo}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=1800)


def svg_chart(entries: list[dict], path: Path) -> None:
    """Perplexity increase (%) against size (MB), one labelled point per entry."""
    pts = [e for e in entries if "ppl_increase_percent" in e and e["name"] != "ours fp32" and e["size_mb"] < 60]
    if not pts:
        return
    w, h, pad = 760, 480, 60
    xs, ys = [p["size_mb"] for p in pts], [p["ppl_increase_percent"] for p in pts]
    x0, x1 = min(xs) - 0.5, max(xs) + 0.5
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.1 + 0.1

    def sx(v):
        return pad + (v - x0) / (x1 - x0) * (w - 2 * pad)

    def sy(v):
        return h - pad - (v - y0) / (y1 - y0) * (h - 2 * pad)

    colors = {"ours": "#d62728", "onnxruntime-genai": "#1f77b4", "llama.cpp": "#2ca02c",
              "llama.cpp imatrix": "#8c564b"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
           f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">bundle / file size (MB)</text>',
           f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle">'
           f'perplexity increase over fp32 (%)</text>']
    for k in range(6):
        xv, yv = x0 + k * (x1 - x0) / 5, y0 + k * (y1 - y0) / 5
        out.append(f'<text x="{sx(xv)}" y="{h - pad + 15}" text-anchor="middle">{xv:.1f}</text>')
        out.append(f'<text x="{pad - 5}" y="{sy(yv) + 4}" text-anchor="end">{yv:.2f}</text>')
    for p in pts:
        c = colors.get(p["family"] + (" imatrix" if p["name"].endswith("imatrix") else ""), "black")
        out.append(f'<circle cx="{sx(p["size_mb"]):.1f}" cy="{sy(p["ppl_increase_percent"]):.1f}" r="4" fill="{c}"/>')
        out.append(f'<text x="{sx(p["size_mb"]) + 6:.1f}" y="{sy(p["ppl_increase_percent"]) - 4:.1f}" fill="{c}">'
                   f'{p["name"]}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def combined_entries(files: list[Path]) -> list[dict]:
    """The entries of results files measured on the same windows, each with its file's name and
    its increase over the one "ours fp32" entry among them."""
    results = [json.loads(Path(f).read_text()) for f in files]
    if len({r["windows_sha256"] for r in results}) != 1:
        raise SystemExit("--table: the files were measured on different token windows")
    entries = [e | {"file": Path(f).name} for f, r in zip(files, results) for e in r["entries"]]
    fp32 = next(e for e in entries if e["name"] == "ours fp32")["perplexity"]
    for e in entries:
        if "perplexity" in e:
            e["ppl_increase_percent"] = 100.0 * (e["perplexity"] / fp32 - 1.0)
    return entries


def markdown_table(files: list[Path]) -> str:
    """One row per entry of results files: its name, size, perplexity and increase over fp32."""
    entries = combined_entries(files)
    many = len(files) > 1
    rows = ["| entry (`name` in the results JSON) | bytes | perplexity | vs fp32 |" + (" file |" if many else ""),
            "|---|---|---|---|" + ("---|" if many else "")]
    for e in entries:
        tail = f" {e['file']} |" if many else ""
        if "perplexity" not in e:
            rows.append(f"| `{e['name']}` | failed: {e.get('error', '?')[:80]} | | |{tail}")
            continue
        rows.append(f"| `{e['name']}` | {e['bytes'] / 1e6:.2f} MB | {e['perplexity']:.4f} | "
                    f"{e['ppl_increase_percent']:+.2f}% |{tail}")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?")
    ap.add_argument("--text")
    ap.add_argument("--table", nargs="+", default=None, metavar="RESULTS_JSON",
                    help="print the markdown table of results files measured on the same windows")
    ap.add_argument("--chart", default=None, help="with --table: also draw their entries into this SVG")
    ap.add_argument("--max-tokens", type=int, default=65536)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--calibration-tokens", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=str(REPO / "benchmarks" / "work" / "quality"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "quality-qwen2-code-30m.json"))
    ap.add_argument("--only", nargs="*", default=None, help="substrings of entry names to run")
    ap.add_argument("--peers-python", default=None, help="python of a venv with llama-cpp-python and gguf")
    ap.add_argument("--converter", default=None, help="llama.cpp's convert_hf_to_gguf.py")
    ap.add_argument("--llama-bin", default=None,
                    help="folder with llama-imatrix and llama-quantize (adds the 'llama.cpp TYPE imatrix' entries)")
    ap.add_argument("--imatrix-tokens", type=int, default=None,
                    help="calibration tokens for llama-imatrix (default: --calibration-tokens, as our GPTQ)")
    ap.add_argument("--llamacpp-types", nargs="*", default=["Q4_0", "Q4_K_M", "Q5_K_M"])
    ap.add_argument("--merge", nargs="*", default=[],
                    help="results JSONs of earlier runs on the same windows whose entries to include")
    ap.add_argument("--llamacpp-jsonl", default=None,
                    help="merge llama.cpp results that quality_llamacpp.py measured on the same windows.npy")
    args = ap.parse_args()
    if args.table:
        print(markdown_table(args.table))
        if args.chart:
            svg_chart(combined_entries(args.table), Path(args.chart))
        return 0
    if not args.checkpoint or not args.text:
        ap.error("CHECKPOINT and --text are required to measure")

    ckpt, work, out = Path(args.checkpoint), Path(args.workdir), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    from tokenizers import Tokenizer

    text = Path(args.text).read_text(encoding="utf-8")
    ids = np.asarray(Tokenizer.from_file(str(ckpt / "tokenizer.json")).encode(text).ids[: args.max_tokens], np.int64)
    n_win = len(ids) // args.context
    windows = ids[: n_win * args.context].reshape(n_win, args.context)
    np.save(work / "windows.npy", windows)
    calibration = load_calibration_text("builtin")
    results = {
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "checkpoint": ckpt.name, "text": Path(args.text).name, "context": args.context,
        "tokens": int(windows.size), "windows": n_win,
        "windows_sha256": hashlib.sha256(windows.tobytes()).hexdigest(),
        "calibration": calibration.to_dict(),
        "calibration_text_line_overlap_with_eval_text": overlapping_lines(calibration.text, text),
        "machine": {"cpus": os.cpu_count(), "note": "2-core machine shared with other jobs: timings are noisy"},
        "entries": [], "skipped": {"optimum-intel int4": "optimum-intel is not installed in these venvs"},
    }

    def wanted(name: str) -> bool:
        return args.only is None or any(s in name for s in args.only)

    def record(entry: dict) -> None:
        fp32 = next((e for e in results["entries"] if e["name"] == "ours fp32"), None)
        if fp32 is not None and "perplexity" in entry:
            entry["ppl_increase_percent"] = 100.0 * (entry["perplexity"] / fp32["perplexity"] - 1.0)
        if "bytes" in entry:
            entry["size_mb"] = entry["bytes"] / 1e6
        results["entries"].append(entry)
        for e in results["entries"]:
            if fp32 is not None and "perplexity" in e:
                e["ppl_increase_percent"] = 100.0 * (e["perplexity"] / fp32["perplexity"] - 1.0)
        out.write_text(json.dumps(results, indent=2) + "\n")
        svg_chart(results["entries"], out.with_suffix(".svg"))
        print(json.dumps({k: entry.get(k) for k in ("name", "size_mb", "perplexity", "ppl_increase_percent")}),
              flush=True)

    for path in args.merge:
        other = json.loads(Path(path).read_text())
        if other["windows_sha256"] != results["windows_sha256"]:
            raise SystemExit(f"{path}: measured on different token windows")
        for entry in other["entries"]:
            if "ours fp32" in [e["name"] for e in results["entries"]] and entry["name"] == "ours fp32":
                continue
            record(entry | {"merged_from": Path(path).name})

    for name, kwargs in our_recipes(args):
        if not wanted(name):
            continue
        bundle = work / name.replace(" ", "_").replace("<=", "le").replace("(", "").replace(")", "")
        shutil.rmtree(bundle, ignore_errors=True)
        start = time.perf_counter()
        manifest = build(BuildRequest(ckpt, bundle, quality=QualityConfig(), **kwargs))
        seconds = time.perf_counter() - start
        entry = {"name": name, "family": "ours", "bytes": dir_bytes(bundle) + (bundle / "manifest.json").stat().st_size,
                 "build_seconds": seconds, "precision": manifest["precision"],
                 "weights": manifest["weights"], "build_quality_report": manifest.get("quality"),
                 "mixed_precision": manifest.get("quantization", {}).get("mixed_precision", {}).get("chosen")}
        entry |= onnx_perplexity(bundle, windows, args.threads)
        record(entry)

    for algo in GENAI_ALGOS:
        name = f"onnxruntime-genai int4 {algo}"
        if not wanted(name):
            continue
        target = work / f"genai-int4-{algo}"
        try:
            if not (target / "model.onnx").exists():
                shutil.rmtree(target, ignore_errors=True)
                genai_build(ckpt, target, algo, work)
            entry = {"name": name, "family": "onnxruntime-genai", "bytes": dir_bytes(target)}
            entry |= onnx_perplexity(target, windows, args.threads)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            entry = {"name": name, "family": "onnxruntime-genai",
                     "error": (str(exc) + " " + detail.decode(errors="replace")[-400:]).strip()}
        record(entry)

    if args.llamacpp_jsonl:
        for line in Path(args.llamacpp_jsonl).read_text().splitlines():
            if line.startswith("{"):
                record(json.loads(line) | {"measured": f"by quality_llamacpp.py on the same windows ({args.llamacpp_jsonl})"})
    elif args.peers_python and args.converter and wanted("llama.cpp"):
        cmd = [args.peers_python, str(REPO / "benchmarks" / "quality_llamacpp.py"),
               "--checkpoint", str(ckpt), "--converter", args.converter,
               "--ids", str(work / "windows.npy"), "--workdir", str(work / "llama.cpp"),
               "--threads", str(args.threads), "--types", *args.llamacpp_types]
        if args.llama_bin:
            window = CalibrationConfig().window
            tokens = args.imatrix_tokens or args.calibration_tokens
            text_file = work / "llama.cpp" / "imatrix-calibration.txt"
            results["llama.cpp_imatrix_calibration"] = imatrix_calibration(ckpt, calibration, tokens, window, text_file)
            cmd += ["--imatrix-text", str(text_file), "--llama-bin", args.llama_bin,
                    "--imatrix-ctx", str(window), "--imatrix-chunks", str(tokens // window),
                    "--imatrix-types", *args.llamacpp_types]
        else:
            results["skipped"]["llama.cpp imatrix"] = "pass --llama-bin (llama-imatrix, llama-quantize)"
        stderr_log = work / "quality_llamacpp.stderr.log"
        with open(stderr_log, "w") as err, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True) as proc:
            for line in proc.stdout:  # one entry at a time, so the results file grows as they finish
                if not line.startswith("{"):
                    continue
                item = json.loads(line)
                if "llama.cpp" in item:
                    results["llama.cpp"] = item["llama.cpp"]
                    out.write_text(json.dumps(results, indent=2) + "\n")
                else:
                    record(item)
        if proc.returncode != 0:
            record({"name": "llama.cpp", "family": "llama.cpp",
                    "error": f"quality_llamacpp.py exited {proc.returncode}: " + stderr_log.read_text()[-600:]})
    elif wanted("llama.cpp"):
        results["skipped"]["llama.cpp"] = "pass --peers-python and --converter"
        out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
