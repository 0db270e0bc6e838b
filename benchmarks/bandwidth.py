"""Memory bandwidth probe and the bandwidth-bound ceiling of decode speed.

Decode reads every weight once per token, so tokens/s can not exceed
    read bandwidth / bytes of weights read per token.
Bandwidth is measured with numpy on arrays far larger than any cache, split across the same
number of threads the runtimes use (numpy and BLAS release the GIL on these calls).

    python benchmarks/bandwidth.py --threads 2 [--bundle DIR]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np


def _parallel(fn, parts: list, threads: int) -> float:
    workers = [threading.Thread(target=fn, args=(p,)) for p in parts]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def measure(threads: int = 2, mib: int = 512, repeats: int = 7) -> dict:
    """Best of `repeats` for a read (dot product) and a copy over `mib` MiB arrays, in GB/s."""
    n = mib * 2**20 // 4
    a = np.ones(n, np.float32)
    b = np.ones(n, np.float32)
    dst = np.empty_like(a)
    chunks = lambda x: np.array_split(x, threads)  # noqa: E731
    reads, copies = [], []
    for _ in range(repeats):
        t = _parallel(lambda ab: np.dot(*ab), list(zip(chunks(a), chunks(b))), threads)
        reads.append(2 * a.nbytes / t / 1e9)
        t = _parallel(lambda sd: np.copyto(sd[1], sd[0]), list(zip(chunks(a), chunks(dst))), threads)
        copies.append(2 * a.nbytes / t / 1e9)  # read + write
    return {"threads": threads, "array_mib": mib, "read_gb_s": round(max(reads), 2),
            "copy_gb_s": round(max(copies), 2), "method": "numpy dot (read) and copyto (read+write), best of "
            f"{repeats}, {threads} threads"}


_MATMUL_OPS = {"MatMulNBits", "MatMul", "FusedMatMul", "Gemm"}


def weight_bytes_per_token(model_path: Path) -> dict:
    """Bytes of initializers feeding matmuls (incl. scales and zero points); embeddings read one row."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    sizes = {}
    for init in model.graph.initializer:
        ext = {e.key: e.value for e in init.external_data}
        if "length" in ext:
            sizes[init.name] = int(ext["length"])
        else:
            sizes[init.name] = len(init.raw_data) or onnx.numpy_helper.to_array(init).nbytes
    counted, total = set(), 0
    for node in model.graph.node:
        if node.op_type in _MATMUL_OPS:
            for name in node.input[1:]:
                if name in sizes and name not in counted:
                    counted.add(name)
                    total += sizes[name]
    return {"bytes": total, "tensors": len(counted)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bundle", type=Path, help="also count the bundle's weight bytes read per token")
    ap.add_argument("--weights-only", action="store_true", help="only count --bundle's bytes, no probe")
    args = ap.parse_args()
    result = {} if args.weights_only else measure(args.threads)
    if args.bundle:
        per_token = weight_bytes_per_token(args.bundle / "model.onnx")
        result["weight_bytes_per_token"] = per_token["bytes"]
        if "read_gb_s" in result:
            result["ceiling_tokens_per_s"] = round(result["read_gb_s"] * 1e9 / per_token["bytes"], 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
