"""llama.cpp through llama-cpp-python on a GGUF file.

    python benchmarks/peers/llamacpp_rt.py MODEL.gguf --out x.json [--options '{"use_extra_bufts": false}']

`use_extra_bufts: false` loads the weights without llama.cpp's extra buffer types (the AMX and
CPU_REPACK weight layouts). The suite retries with it when a run dies of SIGSEGV: on CPUs with
AMX-INT8, llama-cpp-python 0.3.36 repacks Q4_0 weights into the AMX buffer and crashes in the first
prefill (llama.cpp issue 20824, reproduced on this project's development machine).
"""

from __future__ import annotations

import json
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
    options = json.loads(args.options)
    if options.get("use_extra_bufts") is False:
        _without_extra_buffer_types()
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
    extra = {"system_info": llama_cpp.llama_print_system_info().decode(), "options": options}
    common.write(args.out, common.summary(args, ttft, tps, versions, extra))


def _without_extra_buffer_types() -> None:
    """Llama() takes its model parameters from llama_model_default_params() and has no argument
    for use_extra_bufts, so the defaults are wrapped where Llama looks them up."""
    import llama_cpp.llama as llama_module

    default = llama_module.llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    llama_module.llama_cpp.llama_model_default_params = params


if __name__ == "__main__":
    main()
