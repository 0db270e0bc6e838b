"""qwen_edge.runtime on a bundle: python benchmarks/peers/qwen_edge_rt.py BUNDLE --out x.json"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import common  # noqa: E402


def main() -> None:
    args = common.run_parser(__doc__).parse_args()
    options = json.loads(args.options)
    import numpy as np
    import onnxruntime as ort

    import qwen_edge
    from qwen_edge.runtime import Generator, Model
    from qwen_edge.runtime.model import RuntimeOptions
    from qwen_edge.runtime.sampling import SamplingParams

    model = Model(args.model, RuntimeOptions(intra_op_threads=args.threads))
    gen = Generator(model)
    ttft, tps = [], []
    for k, prompt in enumerate(common.prompts(args)):
        g = gen.start(prompt, max_new_tokens=args.new_tokens, sampling=SamplingParams(), stop_token_ids=())
        t, r = common.time_generation(g.tokens(), args.new_tokens, time.perf_counter)
        if k >= args.warmup:
            ttft.append(t)
            tps.append(r)
    versions = {"qwen_edge": getattr(qwen_edge, "__version__", "unknown"), "onnxruntime": ort.__version__,
                "numpy": np.__version__}
    runtime = model.manifest.get("runtime", {})
    common.write(args.out, common.summary(args, ttft, tps, versions,
                                          {"session": runtime, "options": options}))


if __name__ == "__main__":
    main()
