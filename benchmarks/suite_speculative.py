"""run_suite.py's speculative-decoding part (`--speculative CKPT ...`): for each trained checkpoint, the default
int4 bundle and one built with `--exact-speculation`, then speculative.py's two workloads on the exact bundle
(plain and n-gram decoding, the default bundle's plain decoding, and onnxruntime-genai 0.18's n-gram
speculation on the default bundle, except for Qwen3.5, whose state genai cannot rewind); and the cost side, one
verify pass of K = 1, 2, 4, 8, 16 tokens against K steps, on the suite's main int4 bundle.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(suite, args, report: dict, main_bundle: Path, qwen35) -> None:
    out = report["speculative"] = {"checkpoints": {}}
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    built = {}
    for ckpt in args.speculative:
        ckpt = Path(ckpt).resolve()
        entry = out["checkpoints"][ckpt.name] = {"checkpoint": str(ckpt)}
        work = args.work / "speculative" / ckpt.name
        bundles = {"default": work / "int4", "exact": work / "int4-exact"}
        print(f"[speculative] {ckpt.name}: builds", flush=True)
        for kind, bundle in bundles.items():
            cmd = [suite.ours_python, "-m", "qwen_edge.cli", "build", str(ckpt), "--precision", "int4", "-o",
                   str(bundle), "-q", *(["--exact-speculation"] if kind == "exact" else [])]
            proc = suite_measured(suite, cmd, logs / f"spec-build-{ckpt.name}-{kind}.log", args.timeout)
            if not proc["ok"]:
                entry["skipped"] = f"build of the {kind} bundle failed: {proc.get('error')}"
                break
        else:
            built[ckpt] = bundles
    for ckpt, bundles in built.items():
        entry = out["checkpoints"][ckpt.name]
        # the draft: another trained checkpoint's default bundle (speculative.py checks the tokenizers match)
        draft = next((b["default"] for c, b in built.items() if c != ckpt), None)
        result = args.work / "speculative" / ckpt.name / "speculative.json"
        print(f"[speculative] {ckpt.name}: workloads", flush=True)
        cmd = [suite.ours_python, str(HERE / "speculative.py"), "workload", str(bundles["exact"]),
               "--plain-bundle", str(bundles["default"]), "--heldout", str(ckpt / "heldout.py.txt"),
               "--threads", str(args.threads), "--out", str(result), *(["--draft", str(draft)] if draft else [])]
        if not qwen35(ckpt):
            cmd += ["--genai-python", suite.peers_python, "--genai-bundle", str(bundles["default"])]
        proc = suite_measured(suite, cmd, logs / f"speculative-{ckpt.name}.log", args.timeout)
        entry.update(json.loads(result.read_text()) if proc["ok"] and result.is_file()
                     else {"skipped": f"speculative.py failed: {proc.get('error', 'no result written')}"})
    cost = args.work / "speculative" / "verify-cost.json"
    if (main_bundle / "manifest.json").is_file():
        proc = suite_measured(suite, [suite.ours_python, str(HERE / "speculative.py"), "verify-cost", str(main_bundle),
                                      "--threads", str(args.threads), "--out", str(cost)],
                              logs / "speculative-verify-cost.log", args.timeout)
        out["verify_cost"] = json.loads(cost.read_text()) if proc["ok"] and cost.is_file() else \
            {"skipped": f"verify-cost failed: {proc.get('error', 'no result written')}"}
    else:
        out["verify_cost"] = {"skipped": f"{main_bundle} was not built in this run"}
    out["must_show"] = must_show(out)


def suite_measured(suite, cmd, log, timeout):
    from run_suite import measured

    return measured(cmd, log, timeout, suite.env)


def must_show(spec: dict) -> dict:
    """Issue 16's speed floors, per trained checkpoint: code-edit n-gram decoding >= 1.5x our plain decoding
    and >= 1.2x genai's best n-gram setting, open-ended >= 0.95x plain; and greedy output identical to plain
    on every prompt of both workloads."""
    checks = {}
    for name, entry in spec["checkpoints"].items():
        work = entry.get("workloads", {})

        def value(workload, key, engine="ngram"):
            return work.get(workload, {}).get(engine, {}).get(key)

        floors = {"code-edit n-gram >= 1.5x plain": (value("code-edit", "speedup_vs_plain"), lambda v: v >= 1.5),
                  "code-edit n-gram >= 1.2x genai n-gram": (value("code-edit", "speedup_vs_best_genai_ngram"),
                                                            lambda v: v >= 1.2),
                  "open-ended n-gram >= 0.95x plain": (value("open-ended", "speedup_vs_plain"), lambda v: v >= 0.95)}
        prompts = [(r.get("identical_to_plain"), r.get("prompts")) for w in work.values() for e, r in w.items()
                   if e == "ngram" or e.startswith("draft:")]
        same = sum(s for s, _ in prompts) if prompts else None
        floors["speculative output identical to plain, every prompt and drafter"] = (
            None if same is None else f"{same}/{sum(n for _, n in prompts)}",
            lambda v: v.split("/")[0] == v.split("/")[1])
        for label, (v, ok) in floors.items():
            checks[f"{name}: {label}"] = {"value": v, "met": None if v is None else ok(v)}
    return checks
