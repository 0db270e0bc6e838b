"""onnxruntime-genai's runtime on a Qwen2.5-VL folder (genai_config type qwen2_5_vl: vision + embedding +
decoder): one image prompt through its multimodal processor, greedy.

    python benchmarks/peers/genai_vl_rt.py MODEL_DIR --image x.png --out x.json [--text-tokens 32]

The prompt is the image's vision tokens between `--text-tokens` random text ids' worth of text (fresh per
generation, decoded by the folder's tokenizer, so the same shape as vl_decode.py's prompts). First token
time includes the processor, the vision encoder, the embedding and the prefill.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def _tokens(og, model, processor, prompt: str, image, new_tokens: int, stats: dict):
    inputs = processor(prompt, images=image)
    stats["prompt_tokens_expanded"] = n = int(inputs["input_ids"].as_numpy().shape[-1])
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, repetition_penalty=1.0, max_length=n + new_tokens, min_length=0)
    generator = og.Generator(model, params)
    generator.set_inputs(inputs)
    for _ in range(new_tokens):
        generator.generate_next_token()
        yield generator.get_next_tokens()[0]


def main() -> None:
    ap = common.run_parser(__doc__)
    ap.add_argument("--image", required=True)
    ap.add_argument("--text-tokens", type=int, default=32)
    args = ap.parse_args()
    try:
        import numpy as np
        import onnxruntime_genai as og
    except ImportError as exc:
        common.fail(f"onnxruntime-genai is not installed: {exc}")
    config = og.Config(args.model)
    config.clear_providers()
    session = {"intra_op_num_threads": args.threads, "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {part: {"session_options": session}
                                         for part in ("decoder", "embedding", "vision")}}))
    model = og.Model(config)
    processor = model.create_multimodal_processor()
    tokenizer = og.Tokenizer(model)
    image = og.Images.open(args.image)
    rng = np.random.default_rng(args.seed + 1)
    ttft, tps, stats = [], [], {}
    for k in range(args.warmup + args.runs):
        half = args.text_tokens // 2
        text = [tokenizer.decode(rng.integers(10, 250, size=n).astype(np.int32)) for n in (half, args.text_tokens - half)]
        prompt = text[0] + IMAGE + text[1]
        t, r = common.time_generation(_tokens(og, model, processor, prompt, image, args.new_tokens, stats),
                                      args.new_tokens, time.perf_counter)
        print(f"run {k}: first token {t * 1e3:.0f} ms, decode {r:.2f} tok/s", file=sys.stderr, flush=True)
        if k >= args.warmup:
            ttft.append(t)
            tps.append(r)
    import onnxruntime
    versions = {"onnxruntime_genai": og.__version__, "onnxruntime": onnxruntime.__version__}
    common.write(args.out, common.summary(args, ttft, tps, versions, {"image": args.image, **stats}))


if __name__ == "__main__":
    main()
