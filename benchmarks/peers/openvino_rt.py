"""openvino-genai's LLMPipeline on an optimum-intel OpenVINO export.

    python benchmarks/peers/openvino_rt.py OV_DIR --out x.json

Prompts are random and different every run, and the prefix cache is turned off where the
installed version has the switch, so time to first token is always a full prefill.
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
        import openvino as ov
        import openvino_genai as ovg
    except ImportError as exc:
        common.fail(f"openvino-genai is not installed: {exc}")
    properties = {"INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": 1}
    pipe = ovg.LLMPipeline(args.model, "CPU", **properties)
    ttft, tps = [], []
    for k, prompt in enumerate(common.prompts(args)):
        config = ovg.GenerationConfig()
        config.max_new_tokens = args.new_tokens
        config.min_new_tokens = args.new_tokens
        config.do_sample = False
        stamps: list[float] = []

        class Stamps(ovg.StreamerBase):
            """Records the time of every token id (text streamers batch tokens into words)."""

            def write(self, token):
                now = time.perf_counter()
                stamps.extend([now] * (len(token) if isinstance(token, (list, tuple)) else 1))
                return ovg.StreamingStatus.RUNNING

            def end(self):
                pass

        streamer = Stamps()
        ids = ov.Tensor(prompt.reshape(1, -1))
        mask = ov.Tensor(prompt.reshape(1, -1) * 0 + 1)
        start = time.perf_counter()
        pipe.generate(ovg.TokenizedInputs(ids, mask), config, streamer)
        if len(stamps) < args.new_tokens:
            raise SystemExit(f"openvino-genai produced {len(stamps)} of {args.new_tokens} tokens")
        if k >= args.warmup:
            ttft.append(stamps[0] - start)
            tps.append((args.new_tokens - 1) / (stamps[args.new_tokens - 1] - stamps[0]))
    versions = {"openvino": ov.__version__, "openvino_genai": ovg.__version__}
    common.write(args.out, common.summary(args, ttft, tps, versions))


if __name__ == "__main__":
    main()
