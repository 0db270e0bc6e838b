"""Median wall time of the speculative passes by length inside real n-gram decoding (10 code-edit prompts, twice),
with or without the bundle's row-attention verify graphs:

    python benchmarks/speculative_pass_times.py BUNDLE HELDOUT rows|norows
"""
import sys, numpy as np, time
sys.path.insert(0, "/work/wt/spec"); sys.path.insert(0, "/work/wt/spec/benchmarks")
from pathlib import Path
from qwen_edge.runtime import Generator, Model, RuntimeOptions, SamplingParams
from qwen_edge.runtime import speculative as sp
from speculative import workloads
bundle, heldout, mode = sys.argv[1], sys.argv[2], sys.argv[3]
model = Model(bundle, RuntimeOptions(intra_op_threads=2))
if mode == "norows": model.row_graphs = {}
gen = Generator(model)
times = {}
real = sp._Passes.run
def run(self, tokens):
    t = time.perf_counter(); r = real(self, tokens); times.setdefault(len(tokens), []).append(time.perf_counter() - t); return r
sp._Passes.run = run
prompts = workloads(Path(heldout), model.encode, 50)["code-edit"][::5]
for rep in range(2):
    times.clear()
    for p in prompts:
        g = gen.start(np.asarray(model.encode(p["prompt"])), max_new_tokens=p["max_new_tokens"], sampling=SamplingParams.greedy(), stop_token_ids=(), speculative="ngram"); list(g.tokens())
print(mode, {n: (len(v), round(float(np.median(v)) * 1e3, 3)) for n, v in sorted(times.items())})
