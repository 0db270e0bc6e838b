"""Decode speed after an image prompt on a Qwen2.5-VL-3B-shaped random checkpoint: our int4 bundle's
decoder against the text decoder onnxruntime-genai's builder makes for the same checkpoint.

onnxruntime-genai's own Qwen2.5-VL recipe (Olive) exports the vision tower and the embedding with torch
and builds the text decoder with `onnxruntime_genai.models.builder ... --extra_options exclude_embeds=true`:
a decoder that takes `inputs_embeds`, 3-D `position_ids` [3, 1, S], `attention_mask` and the KV cache,
as ours does. Only that decoder is built here (the torch export of the vision tower is not run), so the
two decoders get the same inputs: one 448x448 image (256 image tokens) encoded once by our vision.onnx,
our embedding.onnx for every token, M-RoPE positions from `rope_positions`. Contenders, interleaved
round by round (the order rotating):

- `qwen_edge int4 decoder` (our default int4: asymmetric), `qwen_edge int4 sym decoder` (`--symmetric`,
  the format genai's builder writes) and `genai int4 decoder`: the plain IO-binding loop of
  ort_decode.py (one fixed-capacity KV buffer bound as past and present, greedy argmax), same session
  options;
- `qwen_edge runtime`: our runtime's own Generation over the same prompt (image features precomputed),
  greedy, all stop ids off: what an app gets.

Decode tokens/s counts the steps after the first token over their time; the prompt (prefill) is timed
apart. Random weights: the tokens are meaningless, the work per token is the real model's.

    python benchmarks/vl_decode.py --prepare     # checkpoint + both builds, untimed
    flock /work/bench.lock nice -n 5 python benchmarks/vl_decode.py [--rounds 4] [--new-tokens 32]
    flock /work/bench.lock nice -n 5 python benchmarks/vl_decode.py --genai-runtime [--rounds 2]

Writes benchmarks/results/vl_decode-qwen2.5-vl-3b-shape.json. `--genai-runtime` times onnxruntime-genai's
own runtime instead (image prompt through its processor and vision graph): on our bundle, and on the same
folder with genai's decoder in place of ours (-genai-runtime.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(HERE / "peers"), str(ROOT)]
import common  # noqa: E402
import ort_decode  # noqa: E402

PEERS_PYTHON = "/work/venvs/peers/bin/python"


class EmbedsDecoder(ort_decode.Decoder):
    """ort_decode's loop for a decoder that takes inputs_embeds and 3-D positions."""

    def generate_embeds(self, embeds: np.ndarray, positions: np.ndarray, delta: int, new_tokens: int,
                        embed) -> dict:
        pos = np.zeros((3, 1, 1), np.int64)

        def step(token: int, k: int) -> dict[str, np.ndarray]:
            pos.fill(embeds.shape[1] + k + delta)
            return {"inputs_embeds": embed(token), "position_ids": pos}

        return self.decode({"inputs_embeds": np.ascontiguousarray(embeds, np.float32),
                            "position_ids": np.ascontiguousarray(positions, np.int64)}, embeds.shape[1], new_tokens,
                           step)


class Embedder:
    """Our bundle's embedding.onnx: a whole prompt (with its image features) or one token."""

    def __init__(self, vision):
        self.vision = vision
        self.no_features = np.zeros((0, vision.hidden_size), np.float32)
        self.one = np.zeros((1, 1), np.int64)

    def prompt(self, media) -> np.ndarray:
        return self.vision.embedding.run(["inputs_embeds"], {"input_ids": media.ids.reshape(1, -1),
                                                             "image_features": media.features})[0]

    def __call__(self, token: int) -> np.ndarray:
        self.one[0, 0] = token
        return self.vision.embedding.run(["inputs_embeds"], {"input_ids": self.one,
                                                             "image_features": self.no_features})[0]


def prepare(work: Path) -> tuple[Path, Path, Path, Path]:
    """The checkpoint, our int4 bundles (default: asymmetric; --symmetric: the format genai's builder
    writes) and genai's int4 text decoder (each made once)."""
    import make_checkpoint

    ckpt, ours, sym, genai = work / "ckpt", work / "ours-int4", work / "ours-int4-sym", work / "genai-int4"
    if not (ckpt / "model.safetensors").is_file():
        ckpt.mkdir(parents=True, exist_ok=True)
        make_checkpoint.qwen25_vl(ckpt, 0, Path("unused"))
    for out, extra in ((ours, []), (sym, ["--symmetric"])):
        if not (out / "manifest.json").is_file():
            subprocess.run([sys.executable, "-m", "qwen_edge.cli", "build", str(ckpt), "--precision", "int4",
                            *extra, "-o", str(out)], check=True, cwd=ROOT)
    if not (genai / "genai_config.json").is_file():
        shutil.rmtree(genai, ignore_errors=True)
        subprocess.run([PEERS_PYTHON, "-m", "onnxruntime_genai.models.builder", "-i", str(ckpt), "-o", str(genai),
                        "-p", "int4", "-e", "cpu", "-c", str(work / "genai-cache"),
                        "--extra_options", "exclude_embeds=true"], check=True, cwd=ROOT)
        shutil.rmtree(work / "genai-cache", ignore_errors=True)
    return ckpt, ours, sym, genai


def genai_recipe_dir(ours: Path, genai: Path, out: Path) -> Path:
    """What genai's recipe would ship, with our vision and embedding graphs standing in for its torch
    exports: our bundle's files and genai_config.json, genai's decoder as model.onnx (symlinks)."""
    out.mkdir(parents=True, exist_ok=True)
    links = {p.name: p for p in ours.iterdir() if p.name.startswith(("vision.onnx", "embedding.onnx", "tokenizer"))
             or p.name in ("processor_config.json", "chat_template.jinja")}
    links |= {p.name: p for p in genai.iterdir() if p.name.startswith("model.onnx")}
    for name, target in links.items():
        if not (out / name).is_symlink():
            (out / name).symlink_to(target.resolve())
    config = json.loads((ours / "genai_config.json").read_text())
    if config["model"]["decoder"]["filename"] != "model.onnx":
        raise SystemExit(f"vl_decode: {ours}'s decoder is not model.onnx")
    (out / "genai_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def genai_runtime(args, ours: Path, genai: Path, work: Path) -> int:
    """onnxruntime-genai's runtime on our bundle and on its own decoder with our vision/embedding, one
    child each (peers/genai_vl_rt.py), an image prompt of the same shape as the plain loop's."""
    from PIL import Image

    png = work / "image-448.png"
    Image.fromarray(np.random.default_rng(args.seed).integers(0, 256, (448, 448, 3), dtype=np.uint8)).save(png)
    dirs = {"genai runtime, qwen_edge bundle": ours,
            "genai runtime, genai decoder + our vision/embedding": genai_recipe_dir(ours, genai, work / "genai-recipe")}
    runs: dict[str, list[dict]] = {label: [] for label in dirs}
    labels = list(dirs)
    for r in range(args.rounds):  # one child per folder and round (a warm-up generation, one timed), order rotating
        for label in labels[r % 2:] + labels[:r % 2]:
            tmp = work / f"genai_vl_rt-{dirs[label].name}.json"
            load = ort_decode.loadavg()
            subprocess.run([PEERS_PYTHON, str(HERE / "peers" / "genai_vl_rt.py"), str(dirs[label]), "--image",
                            str(png), "--out", str(tmp), "--threads", str(args.threads), "--runs", "1", "--warmup",
                            "1", "--new-tokens", str(args.new_tokens), "--text-tokens", str(args.text_tokens),
                            "--seed", str(args.seed + r)], check=True)
            runs[label].append(dict(json.loads(tmp.read_text()), round=r, loadavg_before_child=load))
    out = {label: {"decode_tokens_per_s_median": statistics.median(x["decode_tokens_per_s_median"] for x in rs),
                   "ttft_ms_median": statistics.median(x["ttft_ms_median"] for x in rs), "runs": rs}
           for label, rs in runs.items()}
    ratios = [a["decode_tokens_per_s_median"] / b["decode_tokens_per_s_median"] for a, b in zip(*runs.values())]
    out["qwen_edge bundle / genai decoder, per round"] = {"median": round(statistics.median(ratios), 3),
                                                          "min": round(min(ratios), 3), "max": round(max(ratios), 3)}
    result = {"command": " ".join([Path(sys.executable).name] + sys.argv),
              "compared": "onnxruntime-genai 0.18's runtime (its multimodal processor, vision, embedding, decoder) "
                          "on one 448x448 image prompt: our bundle as built, and the same folder with genai's "
                          "builder's text decoder in place of ours; one child per folder and round, the order "
                          "rotating, each a warm-up generation then one timed",
              "machine": ort_decode.machine(), "runs": out}
    path = HERE / "results" / f"vl_decode-{args.tag}-genai-runtime.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: {m: n for m, n in v.items() if m != "runs"} for k, v in out.items()}, indent=2))
    print(f"wrote {path}")
    return 0


def image_prompt(vision, config: dict, rng, text_tokens: int, features: np.ndarray, grids):
    """Random text ids around one image's vision tokens, as our runtime's PromptMedia."""
    from qwen_edge.runtime.vision import PromptMedia
    from qwen_edge.runtime.vision_inputs import rope_positions

    pads = int(np.prod(grids[0])) // vision.merge_size ** 2
    start, end = config["vision_start_token_id"], config["vision_end_token_id"]
    head = rng.integers(10, 250, size=text_tokens // 2)
    tail = rng.integers(10, 250, size=text_tokens - text_tokens // 2)
    ids = np.concatenate([head, [start], np.full(pads, vision.image_token_id), [end], tail]).astype(np.int64)
    positions, delta = rope_positions(ids, vision.image_token_id, grids, vision.merge_size)
    return PromptMedia(ids, features, positions, delta)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(HERE / "work" / "vl3b"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--text-tokens", type=int, default=32, help="text tokens around the image in the prompt")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prepare", action="store_true", help="make the checkpoint and both builds only (untimed)")
    ap.add_argument("--genai-runtime", action="store_true",
                    help="time onnxruntime-genai's runtime on both folders instead (peers venv, one child each)")
    ap.add_argument("--tag", default="qwen2.5-vl-3b-shape")
    args = ap.parse_args()
    work = Path(args.work)
    ckpt, ours_dir, sym_dir, genai_dir = prepare(work)
    if args.prepare:
        return 0
    if args.genai_runtime:
        return genai_runtime(args, ours_dir, genai_dir, work)
    import onnxruntime as ort

    from qwen_edge.runtime import Model, RuntimeOptions
    from qwen_edge.runtime.generator import Generation
    from qwen_edge.runtime.sampling import SamplingParams

    model = Model(ours_dir, RuntimeOptions(intra_op_threads=args.threads))
    vision = model.vision
    image = np.random.default_rng(args.seed).integers(0, 256, (448, 448, 3), dtype=np.uint8)
    t = time.perf_counter()
    (features, *_), grids = vision.encode([image])
    encode_s = time.perf_counter() - t
    embed = Embedder(vision)
    capacity = args.text_tokens + 2 + features.shape[0] + args.new_tokens
    decoders = {"qwen_edge int4 decoder": EmbedsDecoder(ours_dir, args.threads, capacity),
                "qwen_edge int4 sym decoder": EmbedsDecoder(sym_dir, args.threads, capacity),
                "genai int4 decoder": EmbedsDecoder(genai_dir, args.threads, capacity)}

    def plain(name):
        def run(media):
            out = decoders[name].generate_embeds(embed.prompt(media), media.positions, media.delta,
                                                 args.new_tokens, embed)
            return out["prefill_s"], out["decode_tokens_per_s"], out["tokens"]
        return run

    def runtime(media):
        gen = Generation(model, media.ids, args.new_tokens, SamplingParams(), (), media=media)
        first, tps = common.time_generation(gen.tokens(), args.new_tokens, time.perf_counter)
        return first, tps, list(gen.token_ids)

    contenders = {name: plain(name) for name in decoders} | {"qwen_edge runtime": runtime}
    rng = np.random.default_rng(args.seed + 1)
    config = json.loads((ckpt / "config.json").read_text())
    prompts = [image_prompt(vision, config, rng, args.text_tokens, features, grids) for _ in range(args.rounds + 1)]
    for fn in contenders.values():  # warm-up on the first prompt
        fn(prompts[0])
    names = list(contenders)
    rows: dict[str, list[dict]] = {n: [] for n in names}
    agree = []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        tokens = {}
        for name in order:
            load = ort_decode.loadavg()
            prefill_s, tps, tokens[name] = contenders[name](prompts[r + 1])
            rows[name].append({"round": r, "loadavg_before": load, "decode_tokens_per_s": round(tps, 3),
                               "prefill_or_first_token_ms": round(prefill_s * 1e3, 1)})
            print(f"round {r} {name:<24} {tps:6.2f} tok/s  prefill {prefill_s * 1e3:8.1f} ms  load {load[0]:.2f}",
                  flush=True)
        agree.append(tokens["qwen_edge int4 decoder"] == tokens["qwen_edge runtime"])
    summary = {n: {"decode_tokens_per_s_median": statistics.median(x["decode_tokens_per_s"] for x in rows[n]),
                   "min": min(x["decode_tokens_per_s"] for x in rows[n]),
                   "max": max(x["decode_tokens_per_s"] for x in rows[n]),
                   "prefill_or_first_token_ms_median": statistics.median(x["prefill_or_first_token_ms"]
                                                                          for x in rows[n])} for n in names}
    for ours in ("qwen_edge int4 decoder", "qwen_edge int4 sym decoder", "qwen_edge runtime"):
        ratios = [a["decode_tokens_per_s"] / b["decode_tokens_per_s"]
                  for a, b in zip(rows[ours], rows["genai int4 decoder"])]
        summary[f"{ours} / genai int4 decoder, per round"] = {
            "median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3), "max": round(max(ratios), 3)}
    sizes = {label: sum(p.stat().st_size for p in d.iterdir() if p.suffix in (".onnx", ".data") or
                        p.name.endswith(".onnx.data"))
             for label, d in (("qwen_edge bundle (vision + embedding + decoder)", ours_dir),
                              ("qwen_edge sym bundle", sym_dir), ("genai text decoder", genai_dir))}
    result = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "checkpoint": "random weights, Qwen2.5-VL-3B-Instruct's shape (benchmarks/make_checkpoint.py --shape "
                      "qwen2.5-vl-3b): text 36 layers, hidden 2048, 16/2 heads, MLP 11008, vocab 151936, tied; "
                      "vision depth 32, hidden 1280, out 2048",
        "compared": "decode after one 448x448 image prompt; the decoders fed the same inputs_embeds (our "
                    "embedding.onnx) and M-RoPE positions; genai's is its builder's text decoder "
                    "(-p int4 -e cpu --extra_options exclude_embeds=true), its vision/embedding export not run; "
                    "ours: the default int4 (asymmetric) and --symmetric (genai's format)",
        "prompt_tokens": len(prompts[0].ids), "image_tokens": int(features.shape[0]),
        "text_tokens": args.text_tokens, "new_tokens": args.new_tokens, "threads": args.threads,
        "rounds": args.rounds, "vision_encode_once_s": round(encode_s, 2),
        "session_options": "intra_op_num_threads=threads, inter_op 1, sequential, ORT_ENABLE_ALL, spinning on "
                           "(plain loop); the runtime uses its bundle's recommended options",
        "decoder_and_runtime_tokens_agree": agree, "model_file_bytes": sizes,
        "machine": ort_decode.machine(), "onnxruntime": ort.__version__, "summary": summary, "rounds_detail": rows,
        "genai_build": json.loads((genai_dir / "genai_config.json").read_text())["model"]["type"],
    }
    out = HERE / "results" / f"vl_decode-{args.tag}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
