"""How far speculative decoding's logits are from plain decoding's, decision by decision (greedy, n-gram).

For every prompt of benchmarks/speculative.py's two workloads: a plain run and an n-gram speculative run record
the logits behind each token; while the two runs' tokens agree, the largest |difference| over the vocabulary
is taken per decision ("verify": a row of a verify pass; "step": a one-token step after earlier verify passes,
whose cache holds their keys and values). Also the share of plain decisions whose top-two logit margin is
under a few bounds: what a margin guard would have to hand back to one-token steps.

    flock /work/bench.lock nice -n 5 python benchmarks/speculative_gap.py BUNDLE --heldout CKPT/heldout.py.txt \\
        --out benchmarks/results/speculative-gap-NAME.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from qwen_edge.runtime import Generator, Model, RuntimeOptions, SamplingParams  # noqa: E402
from speculative import workloads  # noqa: E402

BOUNDS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


class Recorder:
    """The generation's sampler, recording the logits of every decision."""

    def __init__(self, sampler, log):
        self.sampler, self.log = sampler, log

    def __call__(self, logits):
        self.log.append(("step", np.array(logits)))
        return self.sampler(logits)

    def verify_draft(self, logits, draft):
        self.log.append(("verify", np.array(logits)))
        return self.sampler.verify_draft(logits, draft)

    def __getattr__(self, name):
        return getattr(self.sampler, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    model = Model(args.bundle, RuntimeOptions(intra_op_threads=2))
    gen = Generator(model)

    def run(ids, max_new, spec):
        g = gen.start(ids, max_new_tokens=max_new, sampling=SamplingParams.greedy(), stop_token_ids=(), speculative=spec)
        log = []
        g.sampler = Recorder(g.sampler, log)
        return list(g.tokens()), log

    results = {}
    for wname, prompts in workloads(Path(args.heldout), model.encode, args.prompts).items():
        gaps = {"step": [], "verify": []}
        margins, same = [], 0
        for p in prompts:
            ids = np.asarray(model.encode(p["prompt"]))
            plain, plain_log = run(ids, p["max_new_tokens"], None)
            spec, spec_log = run(ids, p["max_new_tokens"], "ngram")
            same += plain == spec
            for j, ((_, a), (kind, b)) in enumerate(zip(plain_log, spec_log)):
                if plain[:j + 1] != spec[:j + 1]:
                    break
                gaps[kind].append(float(np.abs(a - b).max()))
            for _, a in plain_log:
                top = np.partition(a, -2)[-2:]
                margins.append(float(top[1] - top[0]))
        m = np.array(margins)
        results[wname] = {"identical_to_plain": same, "prompts": len(prompts),
                          "decisions_compared": {k: len(v) for k, v in gaps.items()},
                          "max_logit_gap": {k: max(v, default=0.0) for k, v in gaps.items()},
                          "plain_margin_below": {str(b): round(float((m < b).mean()), 4) for b in BOUNDS}}
        print(wname, json.dumps(results[wname]), flush=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "bundle": args.bundle,
                                          "exact_speculation": model.exact_speculation, "workloads": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
