"""llama.cpp through llama-cpp-python on a GGUF file.

    python benchmarks/peers/llamacpp_rt.py MODEL.gguf --out x.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main() -> None:
    args = common.run_parser(__doc__).parse_args()
    try:
        import llama_cpp
    except ImportError as exc:
        common.fail(f"llama-cpp-python is not installed: {exc}")
    n_ctx = args.prompt_tokens + args.new_tokens + 16
    llm = llama_cpp.Llama(args.model, n_ctx=n_ctx, n_batch=n_ctx, n_threads=args.threads,
                          n_threads_batch=args.threads, verbose=False, seed=args.seed)
    ttft, tps = [], []
    for k, prompt in enumerate(common.prompts(args)):
        llm.reset()  # else generate() reuses the previous prompt's KV cache
        stream = llm.generate([int(t) for t in prompt], top_k=1, temp=0.0, repeat_penalty=1.0, reset=True)
        t, r = common.time_generation(stream, args.new_tokens, time.perf_counter)
        stream.close()
        if k >= args.warmup:
            ttft.append(t)
            tps.append(r)
    versions = {"llama_cpp_python": llama_cpp.__version__}
    common.write(args.out, common.summary(args, ttft, tps, versions, {"system_info": llama_cpp.llama_print_system_info().decode()}))


if __name__ == "__main__":
    main()
