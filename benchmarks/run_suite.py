"""The performance suite: qwen_edge against its peers, builds and runtimes, in one run.

    python benchmarks/run_suite.py            # full run (5 timed generations per runtime)
    python benchmarks/run_suite.py --quick    # 2 timed generations, main checkpoint only

Every build and every runtime runs in its own child process; its wall time and peak RSS come
from os.wait4 on that child, so each tool's memory is its own. A peer whose package is missing,
or whose build or run fails, is recorded as skipped with the reason, and the run goes on.

Writes benchmarks/results/suite-<date>.json and .png; `python benchmarks/readme_table.py`
turns the JSON into the README table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / "peers"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(PEERS))

import chart  # noqa: E402
import suite_speculative  # noqa: E402
from llamacpp_build import fetch_llama_cpp_source  # noqa: E402

TRAINED = Path(os.environ.get("QWEN_EDGE_TRAINED_MODEL", ROOT.parent / "shared" / "models" / "qwen2-code-30m"))
DEFAULT_CHECKPOINTS = [HERE / "work" / "qwen2.5-0.5b-random", TRAINED]
QUICK_SKIPS = ("fp32", "Q4_K_M", "asym")  # --quick keeps what the Must-show ratios need
# Our int4 recipes: the default (the architecture's choice: asymmetric, the better quality, except for
# Qwen3.5, where it is symmetric), --symmetric, the format onnxruntime-genai's builder writes (MLAS
# decodes it faster) with our scale search, and --no-symmetric (with zero points whatever the default).
OURS_DEFAULT, OURS_SYMMETRIC = "qwen_edge int4", "qwen_edge int4 sym"
PACKAGES = ("qwen-edge", "onnxruntime", "onnxruntime-genai", "onnx", "onnx-ir", "numpy", "tokenizers", "torch",
            "transformers", "llama-cpp-python", "gguf", "openvino", "openvino-genai", "optimum-intel", "optimum",
            "nncf")


def _first_python(*candidates: str | None) -> str:
    for c in candidates:
        if c and Path(c).is_file():
            return c
    return sys.executable


def measured(cmd: list[str], log: Path, timeout_s: float, env: dict | None = None) -> dict:
    """Run `cmd` as a child; wall time, peak RSS (child and its descendants) and exit status."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)
        deadline = start + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, 9)
                pid, status, usage = os.wait4(proc.pid, 0)
                fh.write(f"\nkilled: timed out after {timeout_s:.0f} s\n")
                break
            time.sleep(0.05)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if proc.returncode else []
    return {"ok": proc.returncode == 0, "rc": proc.returncode, "wall_s": round(wall, 2),
            "peak_rss_bytes": usage.ru_maxrss * 1024, "log": os.path.relpath(log, ROOT),
            **({"error": tail[0][:300] if tail else f"exit {proc.returncode}"} if proc.returncode else {})}


def warm_page_cache(ckpt: Path) -> None:
    """Read the checkpoint's files once, so that every builder finds them in the page cache: the
    first build of a run otherwise pays the disk read alone (in one run at the 0.8B shape, the first
    build took 21.7 s and the same recipe built next 17.5 s)."""
    for path in sorted(p for p in ckpt.rglob("*") if p.is_file()):
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass


def child_json(cmd: list[str], env: dict | None = None) -> dict:
    """Run a helper script that prints JSON. Helpers run as children so that the driver stays
    small: Linux carries a parent's RSS high-water mark into a forked child's ru_maxrss."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["exit " + str(proc.returncode)])[-1]}
    return json.loads(proc.stdout)


def versions(python: str) -> dict:
    code = ("import importlib.metadata as m, json, sys\n"
            f"out = {{}}\nfor p in {list(PACKAGES)!r}:\n"
            "    try: out[p] = m.version(p)\n    except m.PackageNotFoundError: pass\n"
            "out['python'] = sys.version.split()[0]\nprint(json.dumps(out))")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr.strip()[-200:]}


def has_module(python: str, module: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


class Suite:
    def __init__(self, args):
        self.args = args
        self.ours_python = _first_python(args.ours_python, sys.executable)
        self.peers_python = _first_python(args.peers_python, "/work/venvs/peers/bin/python")
        self.ov_python = _first_python(args.openvino_python, "/work/venvs/issue4-ov/bin/python")
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                        OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
                        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OLIVE_DISABLE_TELEMETRY="1")
        self.timeout = args.timeout
        self.save = lambda: None

    # Builds -----------------------------------------------------------------------------------
    def build_steps(self, ckpt: Path, work: Path) -> dict[str, list[tuple[str, list[str], Path]]]:
        """Per built artifact: the (step name, command, output) steps that make it."""
        a = self.args
        llama_src = work.parent / "llama.cpp-src"
        f16 = work / "llamacpp" / "model-f16.gguf"
        steps = {
            "qwen_edge int4": [("build", [self.ours_python, "-m", "qwen_edge.cli", "build", str(ckpt),
                                          "--precision", "int4", "-o", str(work / "ours-int4")], work / "ours-int4")],
            "qwen_edge int4 sym": [("build", [self.ours_python, "-m", "qwen_edge.cli", "build", str(ckpt),
                                              "--precision", "int4", "--symmetric", "-o", str(work / "ours-int4-sym")],
                                    work / "ours-int4-sym")],
            "qwen_edge int4 asym": [("build", [self.ours_python, "-m", "qwen_edge.cli", "build", str(ckpt),
                                               "--precision", "int4", "--no-symmetric", "-o",
                                               str(work / "ours-int4-asym")], work / "ours-int4-asym")],
            "qwen_edge fp32": [("build", [self.ours_python, "-m", "qwen_edge.cli", "build", str(ckpt),
                                          "--precision", "fp32", "-o", str(work / "ours-fp32")], work / "ours-fp32")],
            "genai int4": [("build", [self.peers_python, "-m", "onnxruntime_genai.models.builder", "-i", str(ckpt),
                                      "-o", str(work / "genai-int4"), "-p", "int4", "-e", "cpu",
                                      "-c", str(work / "genai-cache")], work / "genai-int4")],
            "llama.cpp Q4_0": [
                ("convert", [self.peers_python, str(PEERS / "llamacpp_build.py"), "convert", str(ckpt), str(f16),
                             "--src", str(llama_src)], f16),
                ("quantize", [self.peers_python, str(PEERS / "llamacpp_build.py"), "quantize", str(f16),
                              str(work / "llamacpp" / "model-Q4_0.gguf"), "--type", "Q4_0",
                              "--threads", str(a.threads)], work / "llamacpp" / "model-Q4_0.gguf")],
            "llama.cpp Q4_K_M": [
                ("quantize", [self.peers_python, str(PEERS / "llamacpp_build.py"), "quantize", str(f16),
                              str(work / "llamacpp" / "model-Q4_K_M.gguf"), "--type", "Q4_K_M",
                              "--threads", str(a.threads)], work / "llamacpp" / "model-Q4_K_M.gguf")],
            "openvino int4": [("export", [str(Path(self.ov_python).parent / "optimum-cli"), "export", "openvino",
                                          "-m", str(ckpt), "--task", "text-generation-with-past",
                                          "--weight-format", "int4", str(work / "openvino-int4")],
                               work / "openvino-int4")],
        }
        return steps

    def missing_tool(self, name: str) -> str | None:
        needs = {"genai": (self.peers_python, "onnxruntime_genai.models.builder"),
                 "llama.cpp": (self.peers_python, "llama_cpp"),
                 "openvino": (self.ov_python, "optimum.intel")}
        for prefix, (python, module) in needs.items():
            if name.startswith(prefix) and not has_module(python, module):
                return f"{module} is not importable by {python}"
        return None

    def build_all(self, ckpt: Path, work: Path, results: dict) -> dict:
        warm_page_cache(ckpt)
        for name, steps in self.build_steps(ckpt, work).items():
            if self.args.only and not any(name.startswith(o) for o in self.args.only):
                continue
            if self.args.quick and any(word in name for word in QUICK_SKIPS):
                continue
            reason = self.missing_tool(name)
            if reason:
                results[name] = {"skipped": reason}
                continue
            if name == "llama.cpp Q4_K_M" and results.get("llama.cpp Q4_0", {}).get("skipped"):
                results[name] = {"skipped": "needs the f16 conversion made for llama.cpp Q4_0, which failed"}
                continue
            if name.startswith("llama.cpp"):
                try:
                    fetch_llama_cpp_source(self.peers_python, work.parent / "llama.cpp-src")
                except Exception as exc:  # a download or unpack problem skips the peer
                    results[name] = {"skipped": f"could not get llama.cpp's converter: {exc}"}
                    continue
            record = {"steps": {}, "output": str(steps[-1][2])}
            for step, cmd, out in steps:
                if self.args.reuse_builds and out.exists():
                    record["steps"][step] = {"reused": True}
                    continue
                if out.exists():
                    shutil.rmtree(out) if out.is_dir() else out.unlink()
                out.parent.mkdir(parents=True, exist_ok=True)
                print(f"[build] {name}: {step}", flush=True)
                record["steps"][step] = measured(cmd, work / "logs" / f"build-{name.replace(' ', '_')}-{step}.log",
                                                 self.timeout, self.env)
                if not record["steps"][step]["ok"]:
                    record["skipped"] = f"{step} failed: {record['steps'][step]['error']}"
                    break
            done = [s for s in record["steps"].values() if "wall_s" in s]
            if done and "skipped" not in record:
                if name == "llama.cpp Q4_K_M" and "convert" in results.get("llama.cpp Q4_0", {}).get("steps", {}):
                    done.append(results["llama.cpp Q4_0"]["steps"]["convert"])  # it shares Q4_0's conversion
                record["wall_s"] = round(sum(s["wall_s"] for s in done), 2)
                record["peak_rss_bytes"] = max(s["peak_rss_bytes"] for s in done)
            results[name] = record
            self.save()
        return results

    # Runtimes ---------------------------------------------------------------------------------
    def run_all(self, work: Path, builds: dict, results: dict) -> dict:
        a = self.args
        runs = [
            ("qwen_edge int4", self.peers_python, "qwen_edge_rt.py", "qwen_edge int4", work / "ours-int4"),
            ("qwen_edge int4 sym", self.peers_python, "qwen_edge_rt.py", "qwen_edge int4 sym", work / "ours-int4-sym"),
            ("qwen_edge int4 asym", self.peers_python, "qwen_edge_rt.py", "qwen_edge int4 asym",
             work / "ours-int4-asym"),
            ("qwen_edge fp32", self.peers_python, "qwen_edge_rt.py", "qwen_edge fp32", work / "ours-fp32"),
            ("genai runtime, qwen_edge int4", self.peers_python, "genai_rt.py", "qwen_edge int4", work / "ours-int4"),
            ("genai runtime, qwen_edge fp32", self.peers_python, "genai_rt.py", "qwen_edge fp32", work / "ours-fp32"),
            ("genai int4", self.peers_python, "genai_rt.py", "genai int4", work / "genai-int4"),
            ("llama.cpp Q4_0", self.peers_python, "llamacpp_rt.py", "llama.cpp Q4_0",
             work / "llamacpp" / "model-Q4_0.gguf"),
            ("llama.cpp Q4_K_M", self.peers_python, "llamacpp_rt.py", "llama.cpp Q4_K_M",
             work / "llamacpp" / "model-Q4_K_M.gguf"),
            ("openvino int4", self.ov_python, "openvino_rt.py", "openvino int4", work / "openvino-int4"),
        ]
        module_of = {"qwen_edge_rt.py": "onnxruntime", "genai_rt.py": "onnxruntime_genai", "llamacpp_rt.py": "llama_cpp",
                     "openvino_rt.py": "openvino_genai"}
        todo = []
        for name, python, script, build, model in runs:
            if a.only and not any(name.startswith(o) for o in a.only):
                continue
            if a.quick and any(word in name for word in QUICK_SKIPS):
                continue
            if not has_module(python, module_of[script]):
                results[name] = {"skipped": f"{module_of[script]} is not importable by {python}"}
                continue
            if builds.get(build, {}).get("skipped") or not model.exists():
                results[name] = {"skipped": f"no model: build '{build}' " + builds.get(build, {}).get("skipped", "missing")}
                continue
            todo.append((name, python, script, model))
        # With --rounds R each tool runs R times, one after another in a rotating order, each time
        # `runs / R` timed generations: load that drifts during the suite then hits every tool alike.
        rounds = max(1, min(a.rounds, a.runs))
        per_round = [a.runs // rounds + (1 if r < a.runs % rounds else 0) for r in range(rounds)]
        for r in range(rounds):
            for name, python, script, model in todo[r % len(todo):] + todo[:r % len(todo)] if todo else []:
                if results.get(name, {}).get("skipped"):
                    continue
                stem = name.replace(' ', '_').replace(',', '')
                out = work / "runs" / f"{stem}{f'-round{r}' if rounds > 1 else ''}.json"
                if out.exists():
                    out.unlink()
                cmd = [python, str(PEERS / script), str(model), "--out", str(out), "--threads", str(a.threads),
                       "--runs", str(per_round[r]), "--warmup", str(a.warmup), "--prompt-tokens", str(a.prompt_tokens),
                       "--new-tokens", str(a.new_tokens), "--seed", str(r)]
                print(f"[run] {name}" + (f" (round {r + 1}/{rounds})" if rounds > 1 else ""), flush=True)
                proc = self.run_peer(cmd, script, work / "logs" / f"run-{out.stem}.log")
                if not proc["ok"] or not out.exists():
                    results[name] = {"skipped": f"run failed: {proc.get('error', 'no result written')}", "log": proc["log"]}
                    continue
                record = json.loads(out.read_text())
                record["process_wall_s"] = proc["wall_s"]
                if "fallback" in proc:
                    record["fallback"] = proc["fallback"]
                record["process_peak_rss_bytes"] = proc["peak_rss_bytes"]
                record["model"] = str(model)
                results[name] = _merge_rounds(results.get(name), record)
                self.save()
        return results

    def run_peer(self, cmd: list[str], script: str, log: Path) -> dict:
        """One peer run; a llama.cpp run that dies of SIGSEGV is run again without llama.cpp's extra
        buffer types (its AMX repack crashes on AMX-INT8 CPUs: llama.cpp issue 20824), and the record
        says so."""
        proc = measured(cmd, log, self.timeout, self.env)
        if script == "llamacpp_rt.py" and proc["rc"] == -signal.SIGSEGV:
            proc = measured(cmd + ["--options", json.dumps({"use_extra_bufts": False})],
                            log.with_name(log.stem + "-no-extra-bufts.log"), self.timeout, self.env)
            proc["fallback"] = ("SIGSEGV with llama.cpp's extra buffer types (AMX repack, llama.cpp issue 20824); "
                                "measured with use_extra_bufts=false")
        return proc

    def long_context(self, work: Path, runs: dict) -> dict:
        """Each runtime's peak RSS over one generation that fills `--long-context` tokens (a prompt
        of that many minus `--new-tokens`, then the new tokens), in its own process."""
        a, results = self.args, {}
        prompt = a.long_context - a.new_tokens
        for name, script, model in (("qwen_edge int4", "qwen_edge_rt.py", work / "ours-int4"),
                                    ("genai int4", "genai_rt.py", work / "genai-int4"),
                                    ("llama.cpp Q4_0", "llamacpp_rt.py", work / "llamacpp" / "model-Q4_0.gguf")):
            if runs.get(name, {}).get("skipped") or name not in runs or not model.exists():
                results[name] = {"skipped": "no timed run of this entry"}
                continue
            out = work / "runs" / f"long-{name.replace(' ', '_')}.json"
            cmd = [self.peers_python, str(PEERS / script), str(model), "--out", str(out), "--threads", str(a.threads),
                   "--runs", "1", "--warmup", "0", "--prompt-tokens", str(prompt), "--new-tokens", str(a.new_tokens)]
            print(f"[long context] {name}", flush=True)
            proc = self.run_peer(cmd, script, work / "logs" / f"run-long-{name.replace(' ', '_')}.log")
            if not proc["ok"] or not out.exists():
                results[name] = {"skipped": f"run failed: {proc.get('error', 'no result written')}", "log": proc["log"]}
                continue
            record = json.loads(out.read_text())
            results[name] = {"context_tokens": a.long_context, "prompt_tokens": prompt, "new_tokens": a.new_tokens,
                             "process_peak_rss_bytes": proc["peak_rss_bytes"], "ttft_ms": record["ttft_ms_median"],
                             "decode_tokens_per_s": record["decode_tokens_per_s_median"],
                             **({"fallback": proc["fallback"]} if "fallback" in proc else {})}
            self.save()
        ours, genai = results.get("qwen_edge int4", {}), results.get("genai int4", {})
        if "process_peak_rss_bytes" in ours and "process_peak_rss_bytes" in genai:
            results["peak_rss_vs_genai"] = round(ours["process_peak_rss_bytes"] / genai["process_peak_rss_bytes"], 3)
        return results

    # One checkpoint ---------------------------------------------------------------------------
    def checkpoint(self, ckpt: Path, out: dict) -> dict:
        """Fills `out` entry by entry, calling self.save() after each (a partial file survives a crash)."""
        work = self.args.work / ckpt.name
        work.mkdir(parents=True, exist_ok=True)
        out.update({"checkpoint": str(ckpt), "builds": {}, "runs": {}})
        builds = self.build_all(ckpt, work, out["builds"])
        self.run_all(work, builds, out["runs"])
        if self.args.long_context:
            out["long_context"] = self.long_context(work, out["runs"])
        for key, bundle in (("weight_bytes_per_token_int4", work / "ours-int4"),
                            ("weight_bytes_per_token_int4_sym", work / "ours-int4-sym")):
            if (bundle / "model.onnx").is_file():
                per_token = child_json([self.peers_python, str(HERE / "bandwidth.py"), "--weights-only",
                                        "--bundle", str(bundle)])
                if "weight_bytes_per_token" in per_token:
                    out[key] = per_token["weight_bytes_per_token"]
        out["comparisons"] = comparisons(out)
        out["comparisons_symmetric"] = comparisons(out, OURS_SYMMETRIC)
        return out


def _merge_rounds(previous: dict | None, record: dict) -> dict:
    """One entry's record over several rounds: all timed generations pooled, medians recomputed."""
    if not previous:
        return record
    merged = dict(previous)
    for key in ("ttft_ms", "decode_tokens_per_s"):
        merged[key] = previous[key] + record[key]
        merged[f"{key}_median"] = round(statistics.median(merged[key]), 2)
    merged["workload"] = dict(previous["workload"], runs=len(merged["ttft_ms"]))
    merged["rounds"] = previous.get("rounds", 1) + 1
    for key in ("peak_rss_bytes", "process_peak_rss_bytes"):
        merged[key] = max(previous[key], record[key])
    merged["process_wall_s"] = round(previous["process_wall_s"] + record["process_wall_s"], 2)
    return merged


def _median(rec: dict, key: str) -> float | None:
    return rec.get(key) if rec and "skipped" not in rec else None


def comparisons(result: dict, ours_name: str = OURS_DEFAULT) -> dict:
    """The issue's Must-show ratios for one of our int4 recipes, from this checkpoint's numbers."""
    runs, builds, cmp = result["runs"], result["builds"], {}
    ours = runs.get(ours_name, {})
    ours_tps = _median(ours, "decode_tokens_per_s_median")
    ours_ttft = _median(ours, "ttft_ms_median")
    for peer in ("genai int4", "llama.cpp Q4_0", "llama.cpp Q4_K_M", "openvino int4", "genai runtime, qwen_edge int4"):
        tps = _median(runs.get(peer, {}), "decode_tokens_per_s_median")
        ttft = _median(runs.get(peer, {}), "ttft_ms_median")
        if ours_tps and tps:
            cmp[f"decode_vs_{peer}"] = round(ours_tps / tps, 3)
        if ours_ttft and ttft:
            cmp[f"ttft_vs_{peer}"] = round(ours_ttft / ttft, 3)
    best_ttft = [t for t in (_median(runs.get(p, {}), "ttft_ms_median") for p in ("genai int4", "llama.cpp Q4_0")) if t]
    if ours_ttft and best_ttft:
        cmp["ttft_vs_best_of_genai_llamacpp_q4_0"] = round(ours_ttft / min(best_ttft), 3)
    ob, gb = builds.get(ours_name, {}), builds.get("genai int4", {})
    if "wall_s" in ob and "wall_s" in gb:
        cmp["build_wall_vs_genai"] = round(ob["wall_s"] / gb["wall_s"], 3)
        cmp["build_peak_rss_vs_genai"] = round(ob["peak_rss_bytes"] / gb["peak_rss_bytes"], 3)
    return cmp


def must_show(cmp: dict, ceiling_fraction: float | None) -> dict:
    def check(key, ok):
        return {"value": cmp.get(key), "met": None if cmp.get(key) is None else ok(cmp[key])}

    checks = {
        "decode >= 1.1x genai int4": check("decode_vs_genai int4", lambda v: v >= 1.1),
        "decode >= 1.0x llama.cpp Q4_0": check("decode_vs_llama.cpp Q4_0", lambda v: v >= 1.0),
        "ttft <= 1.1x best of genai int4 and llama.cpp Q4_0": check("ttft_vs_best_of_genai_llamacpp_q4_0",
                                                                      lambda v: v <= 1.1),
        "build wall <= 0.5x genai builder": check("build_wall_vs_genai", lambda v: v <= 0.5),
        "build peak RSS <= 0.5x genai builder": check("build_peak_rss_vs_genai", lambda v: v <= 0.5),
    }
    checks["decode >= 70% of the bandwidth-bound ceiling"] = {
        "value": ceiling_fraction, "met": None if ceiling_fraction is None else ceiling_fraction >= 0.7}
    return checks


def must_show_qwen35(result: dict) -> dict:
    """Issue 13's Must-show on a Qwen3.5-shaped checkpoint (level with the peers, half their build)."""
    cmp, long = result.get("comparisons", {}), result.get("long_context", {})

    def check(value, ok):
        return {"value": value, "met": None if value is None else ok(value)}

    return {
        "decode >= 1.0x genai int4": check(cmp.get("decode_vs_genai int4"), lambda v: v >= 1.0),
        "decode >= 1.0x llama.cpp Q4_0": check(cmp.get("decode_vs_llama.cpp Q4_0"), lambda v: v >= 1.0),
        "ttft <= 1.0x best of genai int4 and llama.cpp Q4_0": check(cmp.get("ttft_vs_best_of_genai_llamacpp_q4_0"),
                                                                      lambda v: v <= 1.0),
        "build wall <= 0.5x genai builder": check(cmp.get("build_wall_vs_genai"), lambda v: v <= 0.5),
        "build peak RSS <= 0.5x genai builder": check(cmp.get("build_peak_rss_vs_genai"), lambda v: v <= 0.5),
        "runtime peak RSS at the long context <= 1.0x genai": check(long.get("peak_rss_vs_genai"), lambda v: v <= 1.0),
    }


def is_qwen35(checkpoint: Path) -> bool:
    config = json.loads((checkpoint / "config.json").read_text())
    return config.get("text_config", config).get("model_type", "").startswith("qwen3_5")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, action="append",
                    help="checkpoint directory (repeatable; default: the 0.5B-shaped random one and qwen2-code-30m)")
    ap.add_argument("--quick", action="store_true", help="2 timed runs, main checkpoint only, no fp32 or Q4_K_M entries")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1,
                    help="split each tool's timed runs over this many rotating rounds (for machines whose load drifts)")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--only", nargs="+", help="run only the entries whose names start with these")
    ap.add_argument("--reuse-builds", action="store_true", help="keep existing build outputs (builds not timed)")
    ap.add_argument("--work", type=Path, default=HERE / "work" / "suite")
    ap.add_argument("--ours-python", help="interpreter with qwen_edge's build deps (default: this one)")
    ap.add_argument("--peers-python", help="interpreter with onnxruntime-genai, llama-cpp-python, torch, transformers")
    ap.add_argument("--openvino-python", help="interpreter with optimum-intel and openvino-genai")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed per build or runtime process")
    ap.add_argument("--name", help="results file stem (default suite-<UTC date and time>)")
    ap.add_argument("--long-context", type=int, default=0,
                    help="also measure each int4 runtime's peak RSS over one generation filling this many tokens")
    ap.add_argument("--moe-layers", type=int, default=0,
                    help="also run moe_decode.py with this many layers (Qwen3-30B-A3B layout against a dense model "
                         "of the same active size; makes ~1.4 GB of checkpoint per layer) and include its result")
    ap.add_argument("--speculative", type=Path, nargs="+", default=[],
                    help="trained checkpoints (with heldout.py.txt) for the speculative-decoding workloads "
                         "(suite_speculative.py)")
    args = ap.parse_args()
    args.work = args.work.resolve()
    if args.runs is None:
        args.runs = 2 if args.quick else 5
    checkpoints = args.checkpoint or (DEFAULT_CHECKPOINTS[:1] if args.quick else DEFAULT_CHECKPOINTS)
    main_ckpt = checkpoints[0]
    if not (main_ckpt / "config.json").is_file() and main_ckpt == DEFAULT_CHECKPOINTS[0]:
        subprocess.run([sys.executable, str(HERE / "make_checkpoint.py"), str(main_ckpt)], check=True)
    started = time.time()
    suite = Suite(args)
    print("[bandwidth]", flush=True)
    bw = child_json([sys.executable, str(HERE / "bandwidth.py"), "--threads", str(args.threads)], suite.env)
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "processor": platform.processor(), "load_average_at_start": os.getloadavg()},
        "threads": args.threads,
        "bandwidth": bw,
        "versions": {"qwen_edge": {"version": tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"],
                                   "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                                                text=True).stdout.strip() or None},
                     "ours": versions(suite.ours_python), "peers": versions(suite.peers_python),
                     "openvino": versions(suite.ov_python)},
        "checkpoints": {},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.name or f'suite-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M}'}.json"
    suite.save = lambda: path.write_text(json.dumps(report | {"partial": True}, indent=2) + "\n")
    for ckpt in checkpoints:
        if not (ckpt / "config.json").is_file():
            report["checkpoints"][ckpt.name] = {"checkpoint": str(ckpt), "skipped": "no config.json"}
            continue
        report["checkpoints"][ckpt.name] = {}
        suite.checkpoint(ckpt.resolve(), report["checkpoints"][ckpt.name])
        if is_qwen35(ckpt):
            report["checkpoints"][ckpt.name]["must_show_qwen35"] = must_show_qwen35(report["checkpoints"][ckpt.name])
    first = report["checkpoints"].get(main_ckpt.name, {})
    for ours_name, suffix, key in ((OURS_DEFAULT, "", "must_show"), (OURS_SYMMETRIC, "_sym", "must_show_symmetric")):
        fraction = None
        tps = _median(first.get("runs", {}).get(ours_name, {}), "decode_tokens_per_s_median")
        per_token = first.get(f"weight_bytes_per_token_int4{suffix}")
        if tps and per_token and "read_gb_s" in bw:
            ceiling = bw["read_gb_s"] * 1e9 / per_token
            first[f"bandwidth_ceiling_tokens_per_s{suffix}"] = round(ceiling, 1)
            fraction = round(tps / ceiling, 3)
            first[f"decode_fraction_of_ceiling{suffix}"] = fraction
        report[key] = must_show(first.get("comparisons" + ("_symmetric" if suffix else ""), {}), fraction)
    if args.moe_layers:
        print("[moe]", flush=True)
        tag = f"suite-{path.stem}"
        proc = measured([suite.ours_python, str(HERE / "moe_decode.py"), "--layers", str(args.moe_layers),
                         "--threads", str(args.threads), "--tag", tag, "--note", "measured by run_suite.py"],
                        args.work / "logs" / "moe_decode.log", args.timeout, suite.env)
        moe_json = RESULTS / f"moe_decode-{args.moe_layers}l-int4-{tag}.json"
        report["moe"] = json.loads(moe_json.read_text()) if proc["ok"] and moe_json.is_file() else \
            {"skipped": f"moe_decode.py failed: {proc.get('error', 'no result written')}"}
    if args.speculative:
        suite_speculative.run(suite, args, report, args.work / main_ckpt.name / "ours-int4", is_qwen35)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    # Every child's peak RSS is at least this (see child_json); it is far below any tool's.
    report["driver_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report["duration_s"] = round(time.time() - started, 1)
    path.write_text(json.dumps(report, indent=2) + "\n")
    try:
        chart.draw(report, path.with_suffix(".png"))
    except ImportError as exc:
        print(f"no chart: {exc}")
    print(f"wrote {path} ({report['duration_s']} s)")
    checks = [("default int4", report["must_show"]), ("int4 --symmetric", report["must_show_symmetric"])]
    checks += [(f"{name} (Qwen3.5)", c["must_show_qwen35"]) for name, c in report["checkpoints"].items()
               if "must_show_qwen35" in c]
    if args.speculative:
        checks.append(("speculative decoding", report["speculative"]["must_show"]))
    for label, table in checks:
        print(label)
        for name, check in table.items():
            print(f"  {'MET ' if check['met'] else 'n/a ' if check['met'] is None else 'NOT '} {name}: {check['value']}")


if __name__ == "__main__":
    main()
