"""Where onnxruntime's memory goes when it loads a bundle: peak and resident memory of session
creation plus one 2-token prefill (and optionally a few decode steps), under several session options.

Each option set runs in its own child process and reads its own /proc/self/status (VmHWM, RssAnon,
RssFile) and /proc/self/smaps (what of the external data file is still mapped and resident), so the
numbers are that load's alone. Used to choose the build's smoke-test options (qwen_edge/lean_session.py).

    python benchmarks/ort_load_memory.py BUNDLE_DIR [--options default,no-prepack] [--decode-steps 8] [--tag T]

Writes benchmarks/results/ort_load_memory-<bundle dir name>[-<tag>].json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

# name -> (graph optimization level, disable the CPU arena, session config entries)
OPTIONS: dict[str, tuple[str, bool, dict[str, str]]] = {
    "default": ("all", False, {}),
    "no-prepack": ("all", False, {"session.disable_prepacking": "1"}),
    "no-prepack-no-arena": ("all", True, {"session.disable_prepacking": "1"}),
    "no-prepack-opt-disabled": ("disabled", False, {"session.disable_prepacking": "1"}),
    "opt-disabled": ("disabled", False, {}),
    "opt-basic": ("basic", False, {}),
    "env-allocators": ("all", False, {"session.use_env_allocators": "1"}),
    "no-arena": ("all", True, {}),
    "parallel-prepack": ("all", False, {"session.prepack.enable_parallel": "1"}),
}

CHILD = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort

def status():
    keys = ('VmHWM', 'VmRSS', 'RssAnon', 'RssFile')
    return {l.split(':')[0]: int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(keys)}

def mapped_data():
    # smaps: a mapping's header line, then 'Key: value kB' lines.
    size = rss = count = 0
    current = False
    for line in open('/proc/self/smaps'):
        head = line.split(None, 1)[0]
        if not head.endswith(':'):
            current = line.rstrip().endswith('/model.onnx.data')
            count += current
        elif current and head == 'Size:':
            size += int(line.split()[1]) * 1024
        elif current and head == 'Rss:':
            rss += int(line.split()[1]) * 1024
    return {'mappings': count, 'mapped_bytes': size, 'resident_bytes': rss}

bundle, level, no_arena = sys.argv[1], sys.argv[2], sys.argv[3] == '1'
entries, steps, threads = json.loads(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
io = json.load(open(f'{bundle}/manifest.json'))['io']
so = ort.SessionOptions()
so.log_severity_level = 3
so.intra_op_num_threads = threads
so.graph_optimization_level = {'disabled': ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                               'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                               'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
so.enable_cpu_mem_arena = not no_arena
for key, value in entries.items():
    so.add_session_config_entry(key, value)
out = {'start': status()}
t = time.perf_counter()
session = ort.InferenceSession(f'{bundle}/model.onnx', so, providers=['CPUExecutionProvider'])
out['load_s'] = time.perf_counter() - t
out['after_load'] = status() | {'data_file': mapped_data()}
dtype = np.float16 if io['kv_dtype'] == 'fp16' else np.float32
names = ['logits'] + [f'present.{i}.{k}' for i in range(io['num_layers']) for k in ('key', 'value')]
feeds = {'input_ids': np.array([[1, 2]], np.int64), 'attention_mask': np.ones((1, 2), np.int64)}
for i in range(io['num_layers']):
    for kind in ('key', 'value'):
        feeds[f'past_key_values.{i}.{kind}'] = np.zeros((1, io['num_kv_heads'], 0, io['head_dim']), dtype)
t = time.perf_counter()
res = session.run(names, feeds)
out['prefill_s'] = time.perf_counter() - t
out['after_prefill'] = status() | {'data_file': mapped_data()}
times = []
for j in range(steps):
    step = {'input_ids': np.array([[3 + j]], np.int64), 'attention_mask': np.ones((1, 3 + j), np.int64)}
    for i in range(io['num_layers']):
        step[f'past_key_values.{i}.key'], step[f'past_key_values.{i}.value'] = res[1 + 2 * i], res[2 + 2 * i]
    t = time.perf_counter()
    res = session.run(names, step)
    times.append(time.perf_counter() - t)
if times:
    out['decode_ms_median'] = 1000 * sorted(times)[len(times) // 2]
    out['after_decode'] = status()
print(json.dumps(out))
"""


def measure(bundle: Path, name: str, decode_steps: int, threads: int) -> dict:
    level, no_arena, entries = OPTIONS[name]
    proc = subprocess.run([sys.executable, "-c", CHILD, str(bundle), level, "1" if no_arena else "0",
                           json.dumps(entries), str(decode_steps), str(threads)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: {proc.stderr.strip().splitlines()[-1:]}")
    return {"graph_optimization_level": level, "cpu_mem_arena": not no_arena, "config_entries": entries,
            **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--options", default=",".join(OPTIONS), help=f"comma-separated, from: {', '.join(OPTIONS)}")
    ap.add_argument("--decode-steps", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="")
    ap.add_argument("--note", default="2-core machine shared with other jobs: timings are noisy")
    args = ap.parse_args()
    names = args.options.split(",")
    unknown = [n for n in names if n not in OPTIONS]
    if unknown:
        raise SystemExit(f"unknown option set(s): {', '.join(unknown)}")
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    result = {"bundle": args.bundle.name, "bundle_data_bytes": (args.bundle / "model.onnx.data").stat().st_size,
              "weights": manifest["weights"], "precision": manifest["precision"],
              "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform()},
              "threads": args.threads, "note": args.note, "options": {}}
    import onnxruntime

    result["onnxruntime"] = onnxruntime.__version__
    for name in names:
        result["options"][name] = r = measure(args.bundle, name, args.decode_steps, args.threads)
        print(f"{name:26s} peak {r['after_prefill']['VmHWM'] / 2**20:7.0f} MiB  after load: anon "
              f"{r['after_load']['RssAnon'] / 2**20:6.0f} MiB, file {r['after_load']['RssFile'] / 2**20:6.0f} MiB  "
              f"load {r['load_s']:.2f} s  prefill {r['prefill_s']:.2f} s"
              + (f"  decode {r['decode_ms_median']:.1f} ms" if "decode_ms_median" in r else ""), flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"ort_load_memory-{args.bundle.name}{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
