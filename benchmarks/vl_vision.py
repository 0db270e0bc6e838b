"""Vision encode time of a Qwen2.5-VL-3B-shaped vision tower (depth 32, width 1280, 16 heads, MLP 3420,
full attention in blocks 7/15/23/31, 112-px windows, merger to 2048) for one 448x448 image (1024
patches, 256 image tokens): our fp32 vision.onnx through qwen_edge.runtime (preprocessing included, and
the session alone), against transformers' eager fp32 tower on the same machine.

The text decoder is kept tiny (2 layers) so that the checkpoint and the build stay small: this measures
the tower only. Random weights in bf16, made by transformers.

    python benchmarks/vl_vision.py --prepare          # checkpoint + bundle, untimed
    flock /work/bench.lock nice -n -10 python benchmarks/vl_vision.py [--runs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

VISION_3B = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 2048,
             "fullatt_block_indexes": [7, 15, 23, 31], "window_size": 112, "patch_size": 14,
             "spatial_merge_size": 2, "temporal_patch_size": 2, "hidden_act": "silu"}
TEXT = {"hidden_size": 2048, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 16,
        "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}}


def make_checkpoint(out: Path) -> Path:
    import torch
    import transformers

    from conftest import VL_TOKENS
    from qwen_edge.checkpoint.tiny import write_tokenizer_files

    if (out / "config.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tok = write_tokenizer_files(out, 512, added_tokens=VL_TOKENS)
    ids = {n: tok.token_to_id(f"<|{n}|>") for n in ("vision_start", "vision_end", "image_pad")}
    text = dict(TEXT, bos_token_id=tok.token_to_id("<|endoftext|>"), eos_token_id=tok.token_to_id("<|im_end|>"))
    config = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=VISION_3B, image_token_id=ids["image_pad"],
                                           vision_start_token_id=ids["vision_start"],
                                           vision_end_token_id=ids["vision_end"], video_token_id=0)
    torch.manual_seed(0)
    model = transformers.Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": text["eos_token_id"]}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "work" / "qwen2.5-vl-3b-vision-random"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prepare", action="store_true", help="make the checkpoint and the bundle only (untimed)")
    args = ap.parse_args()
    import torch
    import transformers

    from qwen_edge.build.run import build_targets
    from qwen_edge.runtime import Model, RuntimeOptions
    from qwen_edge.targets import get_target

    work = Path(args.work)
    ckpt = make_checkpoint(work / "ckpt")
    bundle = work / "bundle-fp32"
    if not (bundle / "manifest.json").is_file():
        shutil.rmtree(bundle, ignore_errors=True)
        build_targets(ckpt, bundle, [get_target("cpu")], precision="fp32")
    if args.prepare:
        return 0
    image = np.random.default_rng(0).integers(0, 256, (448, 448, 3), dtype=np.uint8)
    vision = Model(bundle, RuntimeOptions(intra_op_threads=args.threads)).vision

    from qwen_edge.runtime.image_processing import preprocess

    processed = preprocess(image, vision.options)
    feeds = {"pixel_values": processed.pixel_values, "image_grid_thw": np.array([processed.grid_thw])}
    torch.set_num_threads(args.threads)
    hf = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(str(ckpt), dtype=torch.float32).eval()
    pv, grid = torch.as_tensor(processed.pixel_values), torch.as_tensor([processed.grid_thw])
    contenders = {"qwen_edge_encode": lambda: vision.encode([image]),
                  "qwen_edge_session": lambda: vision.vision.run(["image_features"], feeds),
                  "transformers_eager_fp32": lambda: hf.model.get_image_features(pv, grid)}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with torch.no_grad():
        for fn in contenders.values():
            fn()  # warm-up
        for _ in range(args.runs):  # interleaved rounds: the machine's load falls on every contender alike
            for name, fn in contenders.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        ours = vision.vision.run(["image_features"], feeds)[0]
        ref = torch.cat(hf.model.get_image_features(pv, grid).pooler_output).numpy()
    result = {"image": "448x448", "patches": int(processed.pixel_values.shape[0]), "image_tokens": int(ours.shape[0]),
              "threads": args.threads, "rounds": args.runs, "load_average_before": load_before,
              "load_average_after": Path("/proc/loadavg").read_text().split()[:3],
              **{f"{name}_ms_median": round(statistics.median(t) * 1e3, 1) for name, t in times.items()},
              **{f"{name}_ms_min": round(min(t) * 1e3, 1) for name, t in times.items()},
              "max_abs_diff_vs_transformers": float(np.abs(ours - ref).max()),
              "vision_parameters": int(Model(bundle).manifest["io"]["vision"]["parameters"])}
    out = ROOT / "benchmarks" / "results" / "vl_vision-qwen2.5-vl-3b-shape.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
