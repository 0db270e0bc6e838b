"""onnxruntime-genai's runtime on a folder with genai_config.json (its own builder's or our bundle).

    python benchmarks/peers/genai_rt.py MODEL_DIR --out x.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def _tokens(og, model, prompt, new_tokens: int):
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + new_tokens, min_length=len(prompt) + new_tokens)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    for _ in range(new_tokens):
        generator.generate_next_token()
        yield generator.get_next_tokens()[0]


def main() -> None:
    args = common.run_parser(__doc__).parse_args()
    try:
        import onnxruntime_genai as og
    except ImportError as exc:
        common.fail(f"onnxruntime-genai is not installed: {exc}")
    config = og.Config(args.model)
    config.clear_providers()
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": args.threads, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    ttft, tps = [], []
    for k, prompt in enumerate(common.prompts(args)):
        t, r = common.time_generation(_tokens(og, model, prompt.astype("int32"), args.new_tokens),
                                      args.new_tokens, time.perf_counter)
        if k >= args.warmup:
            ttft.append(t)
            tps.append(r)
    import onnxruntime
    versions = {"onnxruntime_genai": og.__version__, "onnxruntime": onnxruntime.__version__}
    common.write(args.out, common.summary(args, ttft, tps, versions))


if __name__ == "__main__":
    main()
