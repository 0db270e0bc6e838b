"""Speculative decoding replayed on a cost model: any drafter setting, on the same greedy outputs, without
timing noise.

    # once per bundle: both workloads' plain greedy tokens, and what a pass of n tokens costs
    python benchmarks/speculative_replay.py record BUNDLE --heldout CKPT/heldout.py.txt --out REC.json
    # then any setting in seconds (Speculative's fields), or a grid of them
    python benchmarks/speculative_replay.py replay REC.json [--set max_draft=16 initial_draft=2 ...] [--grid]

Greedy speculation yields the plain greedy tokens (bit for bit with a bundle built with
--exact-speculation), so which guesses a verify pass accepts follows from the plain output alone. `replay`
runs the runtime's own loop (runtime/speculative.py: its drafter, draft-length rule, cooldown and hybrid
state rollback) over a stand-in model that answers every position with the recorded next token and
advances a clock by the recorded median cost of a pass over that many tokens. The speed-up it reports is
onnxruntime's time alone: the Python around each pass is not in it, so the real runs of
benchmarks/speculative.py come out some percent lower (compare settings here, confirm there).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from qwen_edge.runtime import Generator, Model, RuntimeOptions, SamplingParams  # noqa: E402
from qwen_edge.runtime.speculative import Speculative  # noqa: E402

GRID = {"max_draft": [8, 16], "initial_draft": [2, 4], "max_ngram": [4, 6], "cooldown_after": [2, 3]}


# --- record -----------------------------------------------------------------------------------------------------

def pass_costs(model, max_tokens: int, repeats: int, prompt_tokens: int = 128) -> dict[int, float]:
    """Median milliseconds of one decoder pass over n = 1..max_tokens tokens after a `prompt_tokens` prompt
    (the n interleaved, so that a slow spell of the machine does not land on one n)."""
    import onnxruntime as ort

    cache = model.acquire_cache()
    mask = np.ones((1, cache.capacity), np.int64)
    rng = np.random.default_rng(0)
    model.step(cache, rng.integers(3, 1000, prompt_tokens).astype(np.int64), mask, last_only=True)
    base, saved = cache.length, [a.copy() for a in cache.state_arrays()]
    bound = {}
    for n in range(1, max_tokens + 1):
        out = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, n, model.vocab_size), np.float32))
        bound[n] = (out, model.decode_binding(cache, out))
    seconds = {n: [] for n in bound}
    for r in range(repeats + 1):
        for n in (bound if r % 2 else reversed(bound)):
            out, binding = bound[n]
            ids = rng.integers(3, 1000, n).astype(np.int64)
            start = time.perf_counter()
            model.step(cache, ids, mask, out, binding=binding)
            if r:  # the first round warms every shape up
                seconds[n].append(time.perf_counter() - start)
            cache.length = base
            for live, kept in zip(cache.state_arrays(), saved):
                np.copyto(live, kept)
    model.release_cache(cache)
    return {n: round(float(np.median(v)) * 1e3, 4) for n, v in seconds.items()}


def record_main(args) -> None:
    import speculative as bench

    model = Model(args.bundle, RuntimeOptions(intra_op_threads=args.threads))
    gen = Generator(model)
    runs = {}
    for name, prompts in bench.workloads(Path(args.heldout), model.encode, args.prompts).items():
        runs[name] = []
        for p in prompts:
            ids = [int(t) for t in model.encode(p["prompt"])]
            g = gen.start(np.asarray(ids), max_new_tokens=p["max_new_tokens"], sampling=SamplingParams.greedy(),
                          stop_token_ids=())
            runs[name].append({"prompt": ids, "tokens": [int(t) for t in g.tokens()]})
    cache = model.acquire_cache()
    hybrid = cache.has_states
    model.release_cache(cache)
    out = {"command": " ".join(sys.argv), "bundle": str(args.bundle), "vocab_size": model.vocab_size,
           "hybrid": hybrid, "exact_speculation": model.exact_speculation,
           "threads": args.threads, "pass_cost_ms": pass_costs(model, args.max_pass, args.repeats), "runs": runs}
    Path(args.out).write_text(json.dumps(out) + "\n")
    print(json.dumps(out["pass_cost_ms"]))


# --- replay -----------------------------------------------------------------------------------------------------

class ReplayCache:
    """What the speculative loop reads of a KV cache: a length, and state buffers to copy when hybrid."""

    def __init__(self, hybrid: bool):
        self.capacity = 1 << 16
        self.length = 0
        self.has_states = hybrid
        self._states = [np.zeros(1, np.float32)] if hybrid else []
        self.sequence: list[int] = []

    def state_arrays(self) -> list[np.ndarray]:
        return self._states


class ReplayModel:
    """A stand-in for runtime.Model whose every position predicts the recorded greedy continuation, and whose
    passes advance `clock` (milliseconds) by the recorded cost of a pass over that many tokens. It checks that
    the loop feeds it the recorded tokens (a pass's first token is always on the greedy path)."""

    def __init__(self, record: dict):
        self.vocab_size = int(record["vocab_size"])
        self.context_length = 1 << 16
        self.eos_token_ids: tuple[int, ...] = ()
        self.tokenizer = _NoTokenizer()
        self.hybrid = bool(record["hybrid"])
        self.cost_ms = {int(n): float(ms) for n, ms in record["pass_cost_ms"].items()}
        self._sequences = {tuple(r["prompt"]): r["prompt"] + r["tokens"]
                           for runs in record["runs"].values() for r in runs}
        self.clock = 0.0

    def cost(self, n: int) -> float:
        """A pass over n tokens; past the longest recorded pass, the last recorded slope."""
        top = max(self.cost_ms)
        if n <= top:
            return self.cost_ms[n]
        return self.cost_ms[top] + (n - top) * (self.cost_ms[top] - self.cost_ms[top - 1])

    def check_ids(self, ids) -> np.ndarray:
        return np.asarray(ids, np.int64)

    def acquire_cache(self) -> ReplayCache:
        return ReplayCache(self.hybrid)

    def release_cache(self, cache) -> None:
        pass

    def decode_binding(self, cache, logits_out):
        return None

    def step(self, cache, ids, mask, logits_out=None, *, last_only=False, binding=None, media=None):
        ids = [int(t) for t in ids]
        if cache.length == 0:
            cache.sequence = self._sequences[tuple(ids)]  # the prompt: not on the decode clock
        else:
            self.clock += self.cost(len(ids))
        seq, start = cache.sequence, cache.length
        if seq[start] != ids[0]:
            raise AssertionError(f"the loop fed token {ids[0]} at position {start}, the greedy path has {seq[start]}")
        rows = np.zeros((len(ids), self.vocab_size), np.float32)
        for j in range(len(ids)):
            rows[j, seq[start + j + 1] if start + j + 1 < len(seq) else 0] = 1.0
        cache.length = start + len(ids)
        return rows


class _NoTokenizer:
    def decode(self, ids, skip_special_tokens=True) -> str:
        return ""


def replay(record: dict, spec: Speculative) -> dict:
    """Per workload: the speed-up over plain decoding by the cost model, and the loop's counters."""
    model = ReplayModel(record)
    gen = Generator(model)
    out = {}
    for name, runs in record["runs"].items():
        model.clock = plain = 0.0
        passes = drafted = accepted = 0
        for r in runs:
            g = gen.start(np.asarray(r["prompt"]), max_new_tokens=len(r["tokens"]),
                          sampling=SamplingParams.greedy(), stop_token_ids=(), speculative=spec)
            if list(g.tokens()) != r["tokens"]:
                raise AssertionError(f"{name}: the replayed output differs from the recorded greedy output")
            plain += (len(r["tokens"]) - 1) * model.cost(1)
            passes, drafted = passes + g.stats.verify_passes, drafted + g.stats.draft_tokens
            accepted += g.stats.accepted_tokens
        out[name] = {"speedup_vs_plain": round(plain / model.clock, 3) if model.clock else 1.0,
                     "verify_passes": passes, "draft_tokens": drafted, "accepted_tokens": accepted,
                     "plain_ms": round(plain, 1), "speculative_ms": round(model.clock, 1)}
    return out


def _value(text: str):
    return text if not text.lstrip("-").isdigit() else int(text)


def replay_main(args) -> None:
    record = json.loads(Path(args.record).read_text())
    fields = dict(kv.split("=", 1) for kv in args.set or [])
    base = {k: _value(v) for k, v in fields.items()}
    if not args.grid:
        print(json.dumps({"settings": base, "workloads": replay(record, Speculative(**base))}, indent=1))
        return
    rows = []
    for values in itertools.product(*GRID.values()):
        settings = base | dict(zip(GRID, values))
        if settings.get("initial_draft", 4) > settings.get("max_draft", 8):
            continue
        result = replay(record, Speculative(**settings))
        rows.append((settings, {w: r["speedup_vs_plain"] for w, r in result.items()}))
    rows.sort(key=lambda r: -min(r[1].values()))
    for settings, speedups in rows:
        print(json.dumps(speedups), json.dumps(settings))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("bundle")
    r.add_argument("--heldout", required=True)
    r.add_argument("--prompts", type=int, default=50)
    r.add_argument("--max-pass", type=int, default=34, help="longest pass to time (a prefix, a token, the drafts)")
    r.add_argument("--repeats", type=int, default=60)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--out", required=True)
    p = sub.add_parser("replay")
    p.add_argument("record")
    p.add_argument("--set", nargs="+", metavar="FIELD=VALUE", help="Speculative fields (default: its defaults)")
    p.add_argument("--grid", action="store_true", help=f"every combination of {GRID} on top of --set")
    args = ap.parse_args()
    record_main(args) if args.cmd == "record" else replay_main(args)


if __name__ == "__main__":
    main()
