"""Speculative decoding: acceptance, tokens per verify pass and decode speed per drafter, against plain decode
and onnxruntime-genai 0.18's n-gram speculation on the same bundle; and the cost of one verify pass of K
tokens against K one-token steps.

    # two workloads made from the checkpoint's held-out text (50 prompts each), every drafter, genai too
    python benchmarks/speculative.py workload BUNDLE --heldout CKPT/heldout.py.txt [--draft DRAFT_BUNDLE] \\
        [--genai-python /work/venvs/peers/bin/python] --out benchmarks/results/speculative-NAME.json
    # one pass of K = 1, 2, 4, 8, 16 tokens vs K single steps (and a hybrid state copy)
    python benchmarks/speculative.py verify-cost BUNDLE --out benchmarks/results/speculative-cost-NAME.json

Workloads. code-edit: a function from the held-out text, then "# The same function, renamed to NAME_v2:"
and the renamed def line; the model goes on with the body, which it can copy from the prompt (what an
editing assistant does). open-ended: a stretch of held-out code, continued. Generation runs to
max_new_tokens (stop tokens off, the same for every engine) with greedy decoding; every speculative run's
tokens are compared with the plain run's. Rounds interleave the engines (ours in this process, genai in a
subprocess per round); time them under the shared lock:

    flock /work/bench.lock nice -n -10 python benchmarks/speculative.py workload ...
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

PLAIN_OTHER = "plain, --plain-bundle"
GENAI_CONFIGS = {  # onnxruntime-genai 0.18 speculative options (its `speculative` genai_config block)
    "genai ngram k4": {"ngram_size": 3, "max_draft_tokens": 4},
    "genai ngram k8 cooldown": {"ngram_size": 3, "max_draft_tokens": 8, "cooldown": True, "min_adaptive_k": 1},
}


# --- workloads ------------------------------------------------------------------------------------------------

def functions(text: str):
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)def (\w+)\(", lines[i])
        if not m:
            i += 1
            continue
        indent, j = len(m.group(1)), i + 1
        while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
            j += 1
        yield m.group(2), textwrap.dedent("\n".join(lines[i:j]).rstrip())
        i = j


def workloads(heldout: Path, encode, n: int):
    text = heldout.read_text(encoding="utf-8", errors="replace")
    fns = [(name, src) for name, src in functions(text) if 40 <= len(encode(src)) <= 160 and "\t" not in src]
    picks = [fns[round(i * (len(fns) - 1) / max(1, n - 1))] for i in range(n)]
    edit = []
    for name, src in picks:
        first, _, body = src.partition("\n")
        new_first = first.replace(f"def {name}(", f"def {name}_v2(", 1)
        prompt = f"{src}\n\n\n# The same function, renamed to {name}_v2:\n{new_first}\n"
        edit.append({"prompt": prompt, "max_new_tokens": min(len(encode(body)) + 8, 160)})
    lines = text.splitlines()
    open_ended = []
    for i in range(n):
        start = round((i + 0.5) * len(lines) / n)
        chunk = "\n".join(lines[start:start + 12]) + "\n"
        open_ended.append({"prompt": chunk, "max_new_tokens": 128})
    return {"code-edit": edit, "open-ended": open_ended}


# --- our runtime -------------------------------------------------------------------------------------------------

VARIANTS = {"ngram-cost": {"method": "ngram", "adapt": "cost"},  # draft length by measured pass costs too
            # the defaults before speculative_replay.py's grid chose today's
            "ngram-previous": {"method": "ngram", "max_draft": 8, "initial_draft": 4, "max_ngram": 4,
                               "cooldown_after": 2}}


class WrongDrafter:
    """The cooldown's worst case: every guess wrong (a token no model here predicts, then more of it)."""

    def propose(self, history, k):
        return [3] * k

    def close(self):
        pass


def run_ours(gen, ids, max_new, speculative):
    from qwen_edge.runtime import SamplingParams, Speculative
    from qwen_edge.runtime import generator as generator_mod

    if speculative == "always-wrong":
        real = generator_mod.make_drafter
        generator_mod.make_drafter = lambda *a: WrongDrafter()
        try:
            return run_ours(gen, ids, max_new, "ngram")
        finally:
            generator_mod.make_drafter = real
    if speculative in VARIANTS:
        speculative = Speculative(**VARIANTS[speculative])
    g = gen.start(ids, max_new_tokens=max_new, sampling=SamplingParams.greedy(), stop_token_ids=(),
                  speculative=speculative)
    tokens = list(g.tokens())
    s = g.stats
    return {"tokens": tokens, "decode_s": s.decode_s, "verify_passes": s.verify_passes,
            "draft_tokens": s.draft_tokens, "accepted_tokens": s.accepted_tokens}


# --- onnxruntime-genai (run with the peers python) -----------------------------------------------------------

def genai_main(args) -> None:
    import onnxruntime  # noqa: F401  (genai 0.18 loads onnxruntime's library through it)
    import onnxruntime_genai as og

    jobs = json.loads(Path(args.jobs).read_text())
    config = og.Config(args.bundle)
    config.clear_providers()
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": args.threads, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    out = []
    for job in jobs:
        row = {}
        for name in job["configs"]:
            params = og.GeneratorParams(model)
            total = len(job["ids"]) + job["max_new_tokens"]
            params.set_search_options(do_sample=False, max_length=total, min_length=total)
            if name != "genai plain":
                params.set_speculative_options(**GENAI_CONFIGS[name])
            g = og.Generator(model, params)
            g.append_tokens(np.asarray(job["ids"], np.int32))
            g.generate_next_token()
            first = time.perf_counter()
            while not g.is_done():
                g.generate_next_token()
            decode_s = time.perf_counter() - first
            seq = [int(t) for t in g.get_sequence(0)][len(job["ids"]):]
            r = {"tokens": seq, "decode_s": decode_s}
            if name != "genai plain":
                st = g.get_speculative_stats()
                r |= {"verify_passes": int(st["target_verify_forward_passes"]),
                      "draft_tokens": int(st["draft_tokens_evaluated"]),
                      "accepted_tokens": int(st["draft_tokens_accepted"])}
            row[name] = r
        out.append(row)
    Path(args.out).write_text(json.dumps({"rows": out, "version": og.__version__}))


def run_genai(python, bundle, jobs, threads):
    with tempfile.TemporaryDirectory() as tmp:
        jp, op = Path(tmp) / "jobs.json", Path(tmp) / "out.json"
        jp.write_text(json.dumps(jobs))
        r = subprocess.run([python, __file__, "genai", str(bundle), "--jobs", str(jp), "--out", str(op),
                            "--threads", str(threads)], capture_output=True, text=True)
        if r.returncode:
            return None, (r.stderr.strip().splitlines() or ["failed"])[-1]
        data = json.loads(op.read_text())
        return data["rows"], data["version"]


# --- the workload benchmark ------------------------------------------------------------------------------------

def summarise(runs, plain_tokens, own_plain=None):
    """Totals over the prompts; `identical_to_plain` counts prompts whose tokens equal our plain run's,
    `identical_to_own_plain` (genai) those equal to the same engine's plain run."""
    tok = sum(len(r["tokens"]) - 1 for r in runs)
    dec = sum(r["decode_s"] for r in runs)
    out = {"prompts": len(runs), "new_tokens": sum(len(r["tokens"]) for r in runs),
           "decode_tok_s": round(tok / dec, 1) if dec else 0.0,
           "identical_to_plain": sum(r["tokens"] == p for r, p in zip(runs, plain_tokens))}
    if own_plain is not None:
        out["identical_to_own_plain"] = sum(r["tokens"] == p["tokens"] for r, p in zip(runs, own_plain))
    if any("verify_passes" in r for r in runs):
        vp = sum(r.get("verify_passes", 0) for r in runs)
        dt = sum(r.get("draft_tokens", 0) for r in runs)
        acc = sum(r.get("accepted_tokens", 0) for r in runs)
        out |= {"verify_passes": vp, "draft_tokens": dt, "accepted_tokens": acc,
                "acceptance_rate": round(acc / dt, 3) if dt else 0.0,
                "tokens_per_verify_pass": round((acc + vp) / vp, 2) if vp else 0.0}
    return out


def workload_main(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from qwen_edge.runtime import Generator, Model, RuntimeOptions

    model = Model(args.bundle, RuntimeOptions(intra_op_threads=args.threads))
    gen = Generator(model)
    # --plain-bundle: plain decoding of another bundle of the same checkpoint (the default build, against a
    # bundle built with --exact-speculation), in the same rounds: what the spare attention row costs
    gens = {PLAIN_OTHER: Generator(Model(args.plain_bundle, RuntimeOptions(intra_op_threads=args.threads)))} \
        if args.plain_bundle else {}
    ours = ["plain", "ngram"] + list(args.variants or []) + ([f"draft:{args.draft}"] if args.draft else []) + list(gens)
    sets = workloads(Path(args.heldout), lambda s: model.encode(s), args.prompts)
    genai_names = ["genai plain", *GENAI_CONFIGS] if args.genai_python else []
    results, notes = {}, {}
    for wname, prompts in sets.items():
        if args.workloads and wname not in args.workloads:
            continue
        jobs = [{"ids": [int(t) for t in model.encode(p["prompt"])], "max_new_tokens": p["max_new_tokens"]}
                for p in prompts]
        for job in jobs[:1]:  # warm up every engine once
            for spec in ours:
                run_ours(gens.get(spec, gen), np.asarray(job["ids"]), 8, None if spec in ("plain", *gens) else spec)
        runs = {name: [None] * len(jobs) for name in ours + genai_names}
        per_round = -(-len(jobs) // args.rounds)
        for rnd in range(args.rounds):
            idx = list(range(rnd * per_round, min(len(jobs), (rnd + 1) * per_round)))
            if not idx:
                continue
            def ours_part():
                for k, i in enumerate(idx):
                    order = ours[k % len(ours):] + ours[:k % len(ours)]  # rotate who goes first
                    for spec in order:
                        runs[spec][i] = run_ours(gens.get(spec, gen), np.asarray(jobs[i]["ids"]),
                                                 jobs[i]["max_new_tokens"], None if spec in ("plain", *gens) else spec)

            def genai_part():
                if not genai_names:
                    return
                sub = [dict(jobs[i], configs=genai_names[k % 3:] + genai_names[:k % 3]) for k, i in enumerate(idx)]
                rows, version = run_genai(args.genai_python, args.genai_bundle or args.bundle, sub, args.threads)
                if rows is None:
                    notes["genai"] = version
                    return
                notes["genai_version"] = version
                for i, row in zip(idx, rows):
                    for name, r in row.items():
                        runs[name][i] = r

            for part in ((ours_part, genai_part) if rnd % 2 == 0 else (genai_part, ours_part)):
                part()
        plain = [r["tokens"] for r in runs["plain"]]
        done = {name: rs for name, rs in runs.items() if all(r is not None for r in rs)}
        results[wname] = {name: summarise(rs, plain, done.get("genai plain") if name.startswith("genai") else None)
                          for name, rs in done.items()}
        base = results[wname]["plain"]["decode_tok_s"]
        for name, s in results[wname].items():
            s["speedup_vs_plain"] = round(s["decode_tok_s"] / base, 3) if base else 0.0
        best_genai = max((s["decode_tok_s"] for n, s in results[wname].items() if n.startswith("genai ngram")),
                         default=0.0)
        for name, s in results[wname].items():
            if best_genai and not name.startswith("genai"):
                s["speedup_vs_best_genai_ngram"] = round(s["decode_tok_s"] / best_genai, 3)
    out = {"command": " ".join(sys.argv), "variants": VARIANTS, "bundle": str(args.bundle), "draft": args.draft,
           "plain_bundle": args.plain_bundle, "genai_bundle": args.genai_bundle or str(args.bundle),
           "exact_speculation": model.exact_speculation,
           "heldout": str(args.heldout), "threads": args.threads,
           "rounds": args.rounds, "machine": platform.machine(), "genai_options": GENAI_CONFIGS,
           "notes": notes, "workloads": results}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(results, indent=1))


# --- verify-pass cost ------------------------------------------------------------------------------------------

def cost_main(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import onnxruntime as ort

    from qwen_edge.runtime import Model, RuntimeOptions

    model = Model(args.bundle, RuntimeOptions(intra_op_threads=args.threads))
    cache = model.acquire_cache()
    mask = np.ones((1, cache.capacity), np.int64)
    rng = np.random.default_rng(0)
    prompt = rng.integers(3, min(model.vocab_size, 16000), size=args.prompt_tokens).astype(np.int64)
    model.step(cache, prompt, mask, last_only=True)
    base = cache.length
    bound = {}
    for k in args.ks:
        out = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, k, model.vocab_size), np.float32))
        bound[k] = (out, model.decode_binding(cache, out))
    saved = [np.empty_like(a) for a in cache.state_arrays()]

    def one_pass(k):
        ids = rng.integers(3, 1000, size=k).astype(np.int64)
        out, b = bound[k]
        t = time.perf_counter()
        model.step(cache, ids, mask, out, binding=b)
        dt = time.perf_counter() - t
        cache.length = base
        return dt

    def singles(k):
        out, b = bound[1]
        t = time.perf_counter()
        for tok in rng.integers(3, 1000, size=k):
            model.step(cache, np.array([tok], np.int64), mask, out, binding=b)
        dt = time.perf_counter() - t
        cache.length = base
        return dt

    def snapshot():
        t = time.perf_counter()
        for a, s in zip(cache.state_arrays(), saved):
            np.copyto(s, a)
        for a, s in zip(cache.state_arrays(), saved):
            np.copyto(a, s)
        return time.perf_counter() - t

    for k in args.ks:  # warm up
        one_pass(k)
    singles(2)
    rows = {k: {"pass": [], "singles": []} for k in args.ks}
    snaps = []
    for r in range(args.repeats):
        for k in (args.ks if r % 2 == 0 else args.ks[::-1]):
            rows[k]["pass"].append(one_pass(k))
            rows[k]["singles"].append(singles(k))
            snaps.append(snapshot())
    table = {}
    for k, v in rows.items():
        p, s = float(np.median(v["pass"])) * 1e3, float(np.median(v["singles"])) * 1e3
        table[str(k)] = {"verify_pass_ms": round(p, 3), "k_single_steps_ms": round(s, 3),
                         "pass_over_one_step": round(p / (s / k), 2), "singles_over_pass": round(s / p, 2)}
    out = {"bundle": str(args.bundle), "threads": args.threads, "prompt_tokens": args.prompt_tokens,
           "repeats": args.repeats, "state_bytes": int(sum(a.nbytes for a in cache.state_arrays())),
           "state_copy_and_restore_ms": round(float(np.median(snaps)) * 1e3, 4) if saved else None,
           "by_k": table}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("workload")
    w.add_argument("bundle")
    w.add_argument("--heldout", required=True)
    w.add_argument("--draft")
    w.add_argument("--plain-bundle", help="also decode this bundle plainly (the default build of the same checkpoint)")
    w.add_argument("--genai-bundle", help="the bundle genai runs (default: BUNDLE; genai's n-gram passes can reach "
                                          "max_length, where a --exact-speculation bundle's spare row has no room)")
    w.add_argument("--genai-python")
    w.add_argument("--prompts", type=int, default=50)
    w.add_argument("--rounds", type=int, default=4)
    w.add_argument("--workloads", nargs="+", choices=["code-edit", "open-ended"])
    w.add_argument("--variants", nargs="+", choices=[*VARIANTS, "always-wrong"],
                   help="other settings of our n-gram drafter; always-wrong: a drafter whose every guess is wrong")
    w.add_argument("--threads", type=int, default=2)
    w.add_argument("--out", required=True)
    c = sub.add_parser("verify-cost")
    c.add_argument("bundle")
    c.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    c.add_argument("--prompt-tokens", type=int, default=128)
    c.add_argument("--repeats", type=int, default=15)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--out", required=True)
    g = sub.add_parser("genai")  # internal: the genai side, run with the peers python
    g.add_argument("bundle")
    g.add_argument("--jobs", required=True)
    g.add_argument("--threads", type=int, default=2)
    g.add_argument("--out", required=True)
    args = ap.parse_args()
    {"workload": workload_main, "verify-cost": cost_main, "genai": genai_main}[args.cmd](args)


if __name__ == "__main__":
    main()
