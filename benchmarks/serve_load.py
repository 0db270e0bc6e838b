"""Load on `qwen-edge serve`: concurrent streaming clients, every answer checked against the serial one.

    python benchmarks/serve_load.py BUNDLE [--name NAME] [--clients 8] [--requests 25] [--parallel 2]

1. starts `qwen-edge serve BUNDLE --port 0` as its own process (loopback only);
2. asks each prompt once, alone, greedy, through the official `openai` client: the serial results;
3. then `--clients` threads each send `--requests` streaming greedy requests (cycling through the
   prompts) at once; every streamed answer must equal the serial one, token count included;
4. records the server's RSS after step 2 and a warm-up of one request per slot at once (the baseline),
   and at the end (drift % against the baseline), lost requests (errors, refusals,
   mismatches), throughput, and latency percentiles, into benchmarks/results/serve_load-NAME.json.

Exits 1 when a request was lost or an answer differed. Bounded: clients x requests requests, each with
a timeout; the server is stopped at the end whatever happens.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "def is_prime(n):",
    "Explain what a hash map is in one sentence.",
    "class Stack:",
    "Sort a list of tuples by their second element in Python.",
    "import json\n\ndef load(path):",
    "What does `yield` do in Python?",
    "for i in range(10):",
]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Server:
    """`qwen-edge serve` in a child process; its stderr is drained by a thread (and kept)."""

    def __init__(self, bundle: Path, parallel: int, queue: int, threads: int | None):
        cmd = [sys.executable, "-m", "qwen_edge.cli", "serve", str(bundle), "--port", "0", "--parallel", str(parallel),
               "--queue", str(queue), "--model-id", "bench"]
        if threads:
            cmd += ["--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(300) or self.url is None:
            self.stop()
            raise SystemExit("serve_load: the server did not start:\n" + "".join(self.lines[-20:]))

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(r"on (http://[\d.]+:\d+)", line)
            if found and self.url is None:
                self.url = found.group(1)
                self._ready.set()
        self._ready.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def one_request(client, prompt: str, max_tokens: int, mode: str) -> dict:
    """A streaming greedy request: its text, token count, latency and time to the first text."""
    start = time.perf_counter()
    first = None
    pieces, usage, finish = [], None, None
    if mode == "chat":
        stream = client.chat.completions.create(model="bench", messages=[{"role": "user", "content": prompt}],
                                                max_tokens=max_tokens, temperature=0, stream=True,
                                                stream_options={"include_usage": True})
    else:
        stream = client.completions.create(model="bench", prompt=prompt, max_tokens=max_tokens, temperature=0,
                                           stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text = (choice.delta.content or "") + ((choice.delta.model_extra or {}).get("reasoning_content") or "") \
                if mode == "chat" else choice.text
            if text:
                first = first or time.perf_counter()
                pieces.append(text)
            finish = choice.finish_reason or finish
    end = time.perf_counter()
    return {"text": "".join(pieces), "tokens": usage.completion_tokens if usage else None, "finish": finish,
            "latency_s": end - start, "ttft_s": (first or end) - start}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--name", help="results file suffix (default: the bundle directory's name)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=25, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--queue", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads of the server")
    p.add_argument("--mode", choices=("chat", "completions"), default="chat")
    p.add_argument("--timeout", type=float, default=600, help="seconds per request")
    args = p.parse_args()

    import openai

    name = args.name or args.bundle.resolve().name
    server = Server(args.bundle, args.parallel, args.queue, args.threads)
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=args.timeout)
        serial = {prompt: one_request(client, prompt, args.max_tokens, args.mode) for prompt in PROMPTS}
        rss_after_serial = rss_mb(server.proc.pid)
        # Warm-up, not counted: one request per slot at once, so that every slot's cache and onnxruntime's
        # arena for concurrent runs exist before the baseline (a second slot's working set is not drift).
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda prompt: one_request(client, prompt, args.max_tokens, args.mode),
                          PROMPTS[:args.parallel]))
        rss_start = rss_mb(server.proc.pid)
        rss_peak = rss_start
        stop_sampling = threading.Event()

        def sample_rss() -> None:
            nonlocal rss_peak
            while not stop_sampling.wait(0.2):
                rss_peak = max(rss_peak, rss_mb(server.proc.pid))

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()

        def run_client(index: int) -> list[dict]:
            out = []
            for k in range(args.requests):
                prompt = PROMPTS[(index + k) % len(PROMPTS)]
                try:
                    result = one_request(client, prompt, args.max_tokens, args.mode)
                    expected = serial[prompt]
                    result["ok"] = result["text"] == expected["text"] and result["tokens"] == expected["tokens"]
                    result["error"] = None if result["ok"] else "differs from the serial result"
                except Exception as exc:  # a lost request: refused, cut, timed out
                    result = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                out.append(result)
            return out

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            results = [r for rs in pool.map(run_client, range(args.clients)) for r in rs]
        wall = time.perf_counter() - start
        stop_sampling.set()
        sampler.join()
        rss_end = rss_mb(server.proc.pid)
        load = os.getloadavg()
    finally:
        server.stop()

    done = [r for r in results if r["ok"]]
    latencies = [r["latency_s"] for r in done]
    ttfts = [r["ttft_s"] for r in done]
    tokens = sum(r["tokens"] or 0 for r in done)
    record = {
        "bundle": str(args.bundle.resolve()), "name": name, "mode": args.mode,
        "clients": args.clients, "requests_per_client": args.requests, "max_tokens": args.max_tokens,
        "parallel": args.parallel, "queue": args.queue, "threads": args.threads,
        "requests": len(results), "completed_equal_to_serial": len(done),
        "lost_requests": len(results) - len(done),
        "errors": sorted({r["error"] for r in results if r["error"]})[:10],
        "serial_tokens_per_prompt": {p[:40]: r["tokens"] for p, r in serial.items()},
        "wall_s": round(wall, 3), "throughput_tokens_per_s": round(tokens / wall, 2),
        "throughput_requests_per_s": round(len(done) / wall, 3),
        "latency_s": {"p50": round(percentile(latencies, 0.5), 4), "p95": round(percentile(latencies, 0.95), 4),
                      "mean": round(statistics.fmean(latencies), 4)} if latencies else None,
        "ttft_s": {"p50": round(percentile(ttfts, 0.5), 4), "p95": round(percentile(ttfts, 0.95), 4)} if ttfts else None,
        "rss_mb": {"after_serial": round(rss_after_serial, 1), "start": round(rss_start, 1), "end": round(rss_end, 1), "peak": round(rss_peak, 1),
                   "drift_percent": round((rss_end - rss_start) / rss_start * 100, 2)},
        "machine": {"cpus": os.cpu_count(), "loadavg_at_end": [round(x, 2) for x in load],
                    "python": platform.python_version()},
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"serve_load-{name}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("requests", "lost_requests", "throughput_tokens_per_s", "latency_s",
                                             "rss_mb")}))
    print(f"wrote {out}")
    return 0 if record["lost_requests"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
