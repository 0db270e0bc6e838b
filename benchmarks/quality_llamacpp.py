"""llama.cpp side of benchmarks/quality.py; runs in a venv with llama-cpp-python and gguf.

Converts the checkpoint with llama.cpp's own converter (convert_hf_to_gguf.py from the
llama-cpp-python sdist), quantizes with the llama_model_quantize binding, and scores the SAME
token windows as the ONNX side (token ids are fed directly, so tokenization cannot differ).
Prints one JSON object per quant type on stdout.

    python quality_llamacpp.py --checkpoint CKPT --converter convert_hf_to_gguf.py \
        --ids windows.npy --workdir DIR --types F32 Q4_0 Q4_K_M Q5_K_M
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--converter", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--types", nargs="+", default=["F32", "Q4_0", "Q4_K_M", "Q5_K_M"])
    ap.add_argument("--threads", type=int, default=2)
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
                          "file": path.name, "seconds": time.perf_counter() - start} | result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
