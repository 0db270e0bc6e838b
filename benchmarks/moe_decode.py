"""Decode speed of an int4 Qwen3-MoE with the Qwen3-30B-A3B layout against a dense Qwen3 of the same
active size, and the MoE build's peak RSS against its largest shard.

The MoE has the real layer shape (hidden 2048, 32/4 heads of 128, 128 experts of width 768, top-8,
vocab 151936) but only `--layers` layers so that it fits a small machine; the dense model has the
same attention and a 6144-wide MLP (= 8 x 768), so both read the same number of parameters per token.
Weights are random (bf16), written shard by shard without holding a shard in memory; each layer is
one shard, the embedding and the head another. Builds run in child processes so that the child's
VmHWM is the build's own peak (not ru_maxrss: Linux carries that across exec, so a child would
inherit this script's peak). The build is the real one, smoke test included, in one process; its
peak is split at the smoke test by resetting VmHWM there (/proc/self/clear_refs). The smoke test's
load is also measured alone, with the session options the build uses and with onnxruntime's
defaults (pre-packing on), for comparison.

    python benchmarks/moe_decode.py --layers 8 --tag <where-measured>

Writes benchmarks/results/moe_decode-<layers>l-<precision>[-<tag>].json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from qwen_edge.checkpoint.tiny import write_tokenizer_files  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work"

QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
    "hidden_size": 2048, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
    "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
    "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 151936,
    "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "hidden_act": "silu",
    "tie_word_embeddings": False, "attention_bias": False, "torch_dtype": "bfloat16",
}
DENSE_SAME_ACTIVE = {
    **{k: v for k, v in QWEN3_30B_A3B.items() if k not in ("moe_intermediate_size", "num_experts",
                                                            "num_experts_per_tok", "norm_topk_prob",
                                                            "decoder_sparse_step", "mlp_only_layers")},
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
    "intermediate_size": 8 * 768,
}


def _bf16(x: np.ndarray) -> bytes:
    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def _layer_shapes(c: dict, i: int) -> dict[str, tuple[int, ...]]:
    h, d = c["hidden_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    p = f"model.layers.{i}"
    shapes = {f"{p}.input_layernorm.weight": (h,), f"{p}.post_attention_layernorm.weight": (h,),
              f"{p}.self_attn.q_proj.weight": (q, h), f"{p}.self_attn.k_proj.weight": (kv, h),
              f"{p}.self_attn.v_proj.weight": (kv, h), f"{p}.self_attn.o_proj.weight": (h, q),
              f"{p}.self_attn.q_norm.weight": (d,), f"{p}.self_attn.k_norm.weight": (d,)}
    if "num_experts" in c:
        m = c["moe_intermediate_size"]
        shapes[f"{p}.mlp.gate.weight"] = (c["num_experts"], h)
        for e in range(c["num_experts"]):
            shapes |= {f"{p}.mlp.experts.{e}.gate_proj.weight": (m, h), f"{p}.mlp.experts.{e}.up_proj.weight": (m, h),
                       f"{p}.mlp.experts.{e}.down_proj.weight": (h, m)}
    else:
        m = c["intermediate_size"]
        shapes |= {f"{p}.mlp.gate_proj.weight": (m, h), f"{p}.mlp.up_proj.weight": (m, h),
                   f"{p}.mlp.down_proj.weight": (h, m)}
    return shapes


def _write_shard(path: Path, shapes: dict[str, tuple[int, ...]], rng: np.random.Generator) -> int:
    """A BF16 safetensors file, each tensor generated and written on its own."""
    header, offset = {}, 0
    for name in sorted(shapes):
        n = int(np.prod(shapes[name])) * 2
        header[name] = {"dtype": "BF16", "shape": list(shapes[name]), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little") + raw)
        for name in sorted(shapes):
            shape = shapes[name]
            if len(shape) == 1:  # norms near 1
                fh.write(_bf16(1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)))
                continue
            std = np.float32(0.02 if "embed_tokens" in name else shape[1] ** -0.5)
            rows = max(1, (1 << 22) // shape[1])  # a few MB at a time: this process stays small
            for r in range(0, shape[0], rows):
                part = (min(shape[0], r + rows) - r,) + tuple(shape[1:])
                fh.write(_bf16(rng.standard_normal(part, dtype=np.float32) * std))
    return path.stat().st_size


def make_checkpoint(out: Path, config: dict, layers: int, seed: int = 0) -> dict:
    if (out / "model.safetensors.index.json").is_file():
        return json.loads((out / "make.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    c = dict(config, num_hidden_layers=layers)
    tok = write_tokenizer_files(out, 1024)
    c["bos_token_id"], c["eos_token_id"] = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")
    (out / "config.json").write_text(json.dumps(c, indent=2))
    h, v = c["hidden_size"], c["vocab_size"]
    shards = {"model-outer.safetensors": {"model.embed_tokens.weight": (v, h), "lm_head.weight": (v, h),
                                          "model.norm.weight": (h,)}}
    for i in range(layers):
        shards[f"model-layer{i:02d}.safetensors"] = _layer_shapes(c, i)
    sizes, weight_map = {}, {}
    for fname, shapes in shards.items():
        sizes[fname] = _write_shard(out / fname, shapes, rng)
        weight_map |= {name: fname for name in shapes}
    total = sum(sizes.values())
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}))
    info = {"shard_bytes": sizes, "largest_shard_bytes": max(sizes.values()), "weight_file_bytes": total}
    (out / "make.json").write_text(json.dumps(info))
    return info


# Runs in the build's child: VmHWM up to the smoke test is the conversion's peak; resetting it there
# makes the final VmHWM the smoke test's peak (with whatever the conversion left resident).
BUILD_CHILD = """
import json, sys, time
from pathlib import Path
from qwen_edge.build import BuildRequest, build
from qwen_edge.precision import Precision

def hwm():
    return [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0]

marks = {}
def progress(stage, done, total):
    if stage == 'smoke test' and done == 0:
        marks['conversion_peak_rss_bytes'] = hwm()
        try:
            with open('/proc/self/clear_refs', 'w') as fh:
                fh.write('5')
            marks['reset'] = True
        except OSError:
            marks['reset'] = False
    elif stage == 'smoke test' and done == 1:
        marks['smoke_test_peak_rss_bytes'] = hwm() if marks.get('reset') else None

t = time.perf_counter()
m = build(BuildRequest(Path(sys.argv[1]), Path(sys.argv[2]), Precision.preset(sys.argv[3])), progress)
print(json.dumps({'wall_s': time.perf_counter() - t, 'weights': m['weights'],
                  'conversion_peak_rss_bytes': marks['conversion_peak_rss_bytes'],
                  'smoke_test_peak_rss_bytes': marks['smoke_test_peak_rss_bytes'],
                  'final_vmhwm_bytes': hwm()}))
"""


def build_in_child(ckpt: Path, out: Path, precision: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", BUILD_CHILD, str(ckpt), str(out), precision], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"build of {ckpt.name} failed: {proc.stderr.strip().splitlines()[-3:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # The whole build in one process: VmHWM since the reset covers the smoke test and what follows it.
    result["peak_rss_bytes"] = max(result["conversion_peak_rss_bytes"], result["final_vmhwm_bytes"])
    result["smoke_test_alone"] = {"build_options": smoke_test_in_child(out, precision, prepacked=False),
                                  "onnxruntime_defaults": smoke_test_in_child(out, precision, prepacked=True)}
    result["bundle_bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return result


SMOKE_CHILD = """
import json, sys, time
from pathlib import Path
from types import SimpleNamespace
import onnxruntime as ort
from qwen_edge.build.lean_session import loads_lean
from qwen_edge.build.smoke_test import smoke_test
from qwen_edge.precision import Precision

bundle, precision, prepacked = Path(sys.argv[1]), Precision.preset(sys.argv[2]), sys.argv[3] == '1'
a = json.load(open(bundle / 'manifest.json'))['architecture']
spec = SimpleNamespace(**dict(a, moe=SimpleNamespace(**a['moe']) if a.get('moe') else None))
if prepacked:  # what the smoke test did before it chose its options: onnxruntime's defaults
    import qwen_edge.build.lean_session as lean
    def defaults(spec, precision):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        return opts
    lean.smoke_test_session_options = defaults
t = time.perf_counter()
smoke_test(bundle / 'model.onnx', spec, precision)
print(json.dumps({'peak_rss_bytes': [int(l.split()[1]) * 1024 for l in open('/proc/self/status')
                                     if l.startswith('VmHWM')][0],
                  'wall_s': time.perf_counter() - t,
                  'prepacking': prepacked or not loads_lean(spec, precision)}))
"""


def smoke_test_in_child(bundle: Path, precision: str, prepacked: bool) -> dict:
    """Peak RSS of the build's last step on its own: onnxruntime loading the bundle and running two
    tokens, with the build's session options or (prepacked=True) onnxruntime's defaults."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", SMOKE_CHILD, str(bundle), precision, "1" if prepacked else "0"],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"smoke test of {bundle} failed: {proc.stderr.strip().splitlines()[-3:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def decode_speed(bundle: Path, threads: int, prompt_tokens: int, new_tokens: int, runs: int) -> dict:
    code = ("import sys, json; from qwen_edge.runtime import Model, Generator; "
            "from qwen_edge.runtime.model import RuntimeOptions; from qwen_edge.runtime.bench import benchmark; "
            "g = Generator(Model(sys.argv[1], RuntimeOptions(intra_op_threads=int(sys.argv[2])))); "
            "r = benchmark(g, prompt_tokens=int(sys.argv[3]), new_tokens=int(sys.argv[4]), runs=int(sys.argv[5])); "
            "r['vmhwm_mb'] = [int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
            "print(json.dumps(r))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code, str(bundle), str(threads), str(prompt_tokens),
                           str(new_tokens), str(runs)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark of {bundle} failed: {proc.stderr.strip().splitlines()[-3:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--precision", default="int4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep checkpoints and bundles in benchmarks/work")
    ap.add_argument("--tag", default="", help="where it was measured, appended to the result file name")
    ap.add_argument("--note", default="2-core machine shared with other jobs: timings are noisy")
    args = ap.parse_args()
    result: dict = {"layers": args.layers, "precision": args.precision, "threads": args.threads,
                    "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                                "python": platform.python_version()},
                    "note": args.note}
    for kind, config in (("moe", QWEN3_30B_A3B), ("dense", DENSE_SAME_ACTIVE)):
        ckpt = WORK / f"{kind}-{args.layers}l-ckpt"
        bundle = WORK / f"{kind}-{args.layers}l-{args.precision}"
        t = time.perf_counter()
        made = make_checkpoint(ckpt, config, args.layers)
        entry = {"checkpoint": made | {"make_s": round(time.perf_counter() - t, 1)}}
        entry["build"] = build_in_child(ckpt, bundle, args.precision)
        entry["decode"] = decode_speed(bundle, args.threads, args.prompt_tokens, args.new_tokens, args.runs)
        result[kind] = entry
        print(kind, json.dumps({k: entry["build"][k] for k in ("wall_s", "conversion_peak_rss_bytes",
                                                               "smoke_test_peak_rss_bytes")}),
              entry["decode"]["decode_tokens_per_s_median"], flush=True)
        if not args.keep:
            shutil.rmtree(bundle, ignore_errors=True)
    moe = result["moe"]
    # The output layer's working set: the lm_head widened to float32 (its quantized copy and the
    # quantizer's row chunks are small beside it).
    h, v = QWEN3_30B_A3B["hidden_size"], QWEN3_30B_A3B["vocab_size"]
    output_layer = v * h * 4
    limit = 1.5 * moe["checkpoint"]["largest_shard_bytes"] + output_layer
    build = moe["build"]
    smoke = build["smoke_test_peak_rss_bytes"]
    result["build_memory"] = {
        "conversion_peak_rss_bytes": build["conversion_peak_rss_bytes"],
        "smoke_test_peak_rss_bytes": smoke,
        "smoke_test_alone_peak_rss_bytes": build["smoke_test_alone"]["build_options"]["peak_rss_bytes"],
        "smoke_test_alone_prepacked_peak_rss_bytes": build["smoke_test_alone"]["onnxruntime_defaults"]["peak_rss_bytes"],
        "peak_rss_bytes": build["peak_rss_bytes"],
        "largest_shard_bytes": moe["checkpoint"]["largest_shard_bytes"],
        "output_layer_working_set_bytes": output_layer,
        "limit_bytes": int(limit),
        "conversion_within_limit": build["conversion_peak_rss_bytes"] <= limit,
        "smoke_test_within_limit": smoke is not None and smoke <= limit,
        "within_limit": build["peak_rss_bytes"] <= limit,  # the whole build, smoke test included
    }
    result["decode_ratio_moe_over_dense"] = (moe["decode"]["decode_tokens_per_s_median"]
                                             / result["dense"]["decode"]["decode_tokens_per_s_median"])
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"moe_decode-{args.layers}l-{args.precision}{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
