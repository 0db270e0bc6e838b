"""llama.cpp side of benchmarks/quality.py; runs in a venv with llama-cpp-python and gguf.

Converts the checkpoint with llama.cpp's own converter (convert_hf_to_gguf.py from the
llama-cpp-python sdist), quantizes with the llama_model_quantize binding, and scores the SAME
token windows as the ONNX side (token ids are fed directly, so tokenization cannot differ).
Prints one JSON object per quant type on stdout.

With --imatrix-text and --llama-bin it also quantizes with an importance matrix, the data-aware
mode llama.cpp recommends for low-bit types: llama.cpp's own `llama-imatrix` (built from the same
sources as the installed llama-cpp-python, see benchmarks/README.md) computes it on the f32 GGUF
over that text (the calibration text our data-aware recipes use, written by quality.py), then
`llama-quantize --imatrix` writes each type. Those entries are named "llama.cpp TYPE imatrix".
One line {"llama.cpp": {...}} carries the versions and the exact command lines.

    python quality_llamacpp.py --checkpoint CKPT --converter convert_hf_to_gguf.py \
        --ids windows.npy --workdir DIR --types F32 Q4_0 Q4_K_M Q5_K_M \
        [--imatrix-text calibration.txt --llama-bin build/bin --imatrix-chunks 16]
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FTYPES = {"Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
          "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def score(gguf: Path, windows: np.ndarray, threads: int) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=windows.shape[1], n_batch=windows.shape[1],
                          logits_all=True, n_threads=threads, verbose=False)
    nll, count = 0.0, 0
    for row in windows:
        llm.reset()
        llm.eval(row.tolist())
        logits = np.asarray(llm.scores[: len(row)], dtype=np.float32)
        lp = log_softmax(logits[:-1])
        nll -= float(lp[np.arange(len(row) - 1), row[1:]].sum())
        count += len(row) - 1
    return {"perplexity": math.exp(nll / count), "tokens_scored": count, "windows": int(len(windows))}


def run_logged(cmd: list[str], log: Path) -> str:
    """Runs a llama.cpp tool, keeps its whole output in `log`, raises with the tail on failure."""
    proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    log.write_text(" ".join(cmd) + "\n\n" + proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} exited {proc.returncode}: {proc.stdout[-600:]}")
    return proc.stdout


def tool_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], check=False, capture_output=True, text=True, errors="replace")
    lines = [ln.strip() for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    return "; ".join(lines[:2])


def imatrix_summary(log: str) -> dict:
    """What llama-imatrix says it read: tokens after tokenizing, chunks, context, its own perplexity."""
    found = {}
    m = re.search(r"computing over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+)", log)
    if m:
        found |= {"chunks": int(m[1]), "n_ctx": int(m[2]), "batch_size": int(m[3]),
                  "tokens_used": int(m[1]) * int(m[2])}
    m = re.findall(r"Final estimate: PPL = ([0-9.]+)", log)
    if m:
        found["calibration_ppl_reported"] = float(m[-1])
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--converter", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--types", nargs="+", default=["F32", "Q4_0", "Q4_K_M", "Q5_K_M"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--imatrix-text", default=None, help="calibration text for llama-imatrix")
    ap.add_argument("--llama-bin", default=None, help="folder with llama-imatrix and llama-quantize")
    ap.add_argument("--imatrix-ctx", type=int, default=512, help="llama-imatrix -c (our GPTQ windows: 512)")
    ap.add_argument("--imatrix-chunks", type=int, default=16, help="llama-imatrix --chunks")
    ap.add_argument("--imatrix-types", nargs="*", default=["Q4_0", "Q4_K_M", "Q5_K_M"])
    args = ap.parse_args()
    import llama_cpp

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    windows = np.load(args.ids)
    f32 = work / "model-f32.gguf"
    if not f32.exists():
        shim = Path(__file__).with_name("llamacpp_convert.py")
        subprocess.run([sys.executable, str(shim), str(Path(args.converter).parent), args.checkpoint,
                        "--outtype", "f32", "--outfile", str(f32)], check=True, stdout=subprocess.DEVNULL)
    # The importance-matrix entries first (the new ones), then the plain ones.
    info = {"llama_cpp_python": llama_cpp.__version__}
    log = None
    if args.imatrix_text and args.llama_bin:
        imatrix_bin, quantize_bin = Path(args.llama_bin) / "llama-imatrix", Path(args.llama_bin) / "llama-quantize"
        text = Path(args.imatrix_text)
        info |= {"llama-imatrix --version": tool_version(imatrix_bin),
                 "imatrix_text": {"file": text.name, "bytes": text.stat().st_size,
                                  "sha256": hashlib.sha256(text.read_bytes()).hexdigest()}}
        imatrix = work / "imatrix.gguf"
        cmd = [str(imatrix_bin), "-m", str(f32), "-f", str(text), "-o", str(imatrix), "-c", str(args.imatrix_ctx),
               "--chunks", str(args.imatrix_chunks), "-t", str(args.threads)]
        start = time.perf_counter()
        try:
            log = run_logged(cmd, work / "imatrix.log")
        except RuntimeError as exc:
            info["imatrix_error"] = str(exc)
            log = None
    if log is not None:
        info["imatrix"] = {"command": cmd, "seconds": time.perf_counter() - start,
                           "bytes": imatrix.stat().st_size, "log": "imatrix.log in the workdir"} | imatrix_summary(log)
        info["quantize_commands"] = {}
        for qtype in args.imatrix_types:
            path = work / f"model-{qtype}-imatrix.gguf"
            cmd = [str(quantize_bin), "--imatrix", str(imatrix), str(f32), str(path), qtype, str(args.threads)]
            info["quantize_commands"][qtype] = cmd
            try:
                qlog = run_logged(cmd, work / f"quantize-{qtype}-imatrix.log")
                # llama-quantize has no --version; it prints "version: ..." when it runs.
                build = re.search(r"^version: (.+)$", qlog, re.MULTILINE)
                info.setdefault("llama-quantize build", build[1].strip() if build else "not printed")
            except RuntimeError as exc:
                print(json.dumps({"name": f"llama.cpp {qtype} imatrix", "family": "llama.cpp", "error": str(exc)}))
                continue
            start = time.perf_counter()
            result = score(path, windows, args.threads)
            print(json.dumps({"name": f"llama.cpp {qtype} imatrix", "family": "llama.cpp",
                              "bytes": path.stat().st_size, "file": path.name,
                              "quantized_by": "llama-quantize --imatrix", "imatrix_tokens": info["imatrix"].get("tokens_used"),
                              "seconds": time.perf_counter() - start} | result), flush=True)
    print(json.dumps({"llama.cpp": info}), flush=True)  # again at the end, with the plain entries done
    for qtype in args.types:
        path = f32 if qtype == "F32" else work / f"model-{qtype}.gguf"
        if qtype != "F32" and not path.exists():
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = getattr(llama_cpp, FTYPES[qtype])
            params.nthread = args.threads
            rc = llama_cpp.llama_model_quantize(str(f32).encode(), str(path).encode(), ctypes.byref(params))
            if rc != 0:
                print(json.dumps({"name": f"llama.cpp {qtype}", "error": f"llama_model_quantize returned {rc}"}))
                continue
        start = time.perf_counter()
        result = score(path, windows, args.threads)
        print(json.dumps({"name": f"llama.cpp {qtype}", "family": "llama.cpp", "bytes": path.stat().st_size,
                          "file": path.name, "quantized_by": "llama_model_quantize (llama-cpp-python binding)",
                          "seconds": time.perf_counter() - start} | result), flush=True)

    print(json.dumps({"llama.cpp": info}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
