"""The README's benchmark tables, generated from suite JSONs (default: the newest).

    python benchmarks/readme_table.py [benchmarks/results/suite-....json ...] [--write README.md]

With --write, the table replaces the text between the README's
<!-- suite-table:start --> and <!-- suite-table:end --> markers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
START, END = "<!-- suite-table:start -->", "<!-- suite-table:end -->"
MIB = 2**20


def _fmt(v, spec="{:.1f}"):
    return "–" if v is None else spec.format(v)


def table(report: dict, source: str, moe: tuple[dict, str] | None = None) -> str:
    """`moe`: a moe_decode.py result and its file name, for a suite run without --moe-layers."""
    lines = []
    bw = report["bandwidth"]
    lines.append(f"Measured {report['date']} by `{report['command']}` ({source}); {report['threads']} threads on "
                 f"{report['machine']['cpus']} CPUs, load average at start "
                 f"{report['machine']['load_average_at_start'][0]:.1f}; memory read bandwidth {bw['read_gb_s']} GB/s.")
    for ckpt in report["checkpoints"].values():
        if "runs" not in ckpt:
            continue
        name = Path(ckpt["checkpoint"]).name
        ours = ckpt["runs"].get("qwen_edge int4", {})
        lines += ["", f"**{name}** — batch 1, {ours.get('workload', {}).get('prompt_tokens', 128)}-token prompt, "
                      f"{ours.get('workload', {}).get('new_tokens', 128)} new tokens, greedy, median of "
                      f"{ours.get('workload', {}).get('runs', '?')} runs after a warm-up", "",
                  "| runtime, model | decode tok/s | time to first token ms | peak RSS MiB | ours int4 decode ratio |",
                  "|---|---:|---:|---:|---:|"]
        ours_tps = ours.get("decode_tokens_per_s_median")
        for label, rec in ckpt["runs"].items():
            if "skipped" in rec:
                lines.append(f"| {label} | skipped: {rec['skipped'][:80]} | | | |")
                continue
            tps = rec["decode_tokens_per_s_median"]
            ratio = f"{ours_tps / tps:.2f}x" if ours_tps and label != "qwen_edge int4" else ""
            lines.append(f"| {label} | {tps:.1f} | {rec['ttft_ms_median']:.0f} | "
                         f"{rec['process_peak_rss_bytes'] / MIB:.0f} | {ratio} |")
        if ckpt.get("bandwidth_ceiling_tokens_per_s"):
            lines.append(f"| bandwidth-bound ceiling ({ckpt['weight_bytes_per_token_int4'] / MIB:.0f} MiB of int4 "
                         f"weights per token) | {ckpt['bandwidth_ceiling_tokens_per_s']:.1f} | | | "
                         f"ours = {ckpt['decode_fraction_of_ceiling']:.0%} |")
        lines += ["", "| build | wall s | peak RSS MiB |", "|---|---:|---:|"]
        for label, rec in ckpt["builds"].items():
            if "wall_s" in rec:
                lines.append(f"| {label} | {rec['wall_s']:.1f} | {rec['peak_rss_bytes'] / MIB:.0f} |")
            elif "skipped" in rec:
                lines.append(f"| {label} | skipped: {rec['skipped'][:80]} | |")
    if "moe" in report:
        lines += moe_lines(report["moe"], source)
    elif moe is not None:
        lines += moe_lines(*moe)
    for key, recipe in (("must_show", "default int4 (asymmetric)"), ("must_show_symmetric", "int4 --symmetric")):
        if key not in report:
            continue
        lines += ["", f"| Must-show, ours = {recipe} | value | met |", "|---|---:|---|"]
        for name, check in report[key].items():
            met = {True: "yes", False: "**no**", None: "not measured"}[check["met"]]
            lines.append(f"| {name} | {_fmt(check['value'], '{:.3g}')} | {met} |")
    return "\n".join(lines)


def moe_lines(moe: dict, source: str) -> list[str]:
    """The MoE against a dense model of the same active size (moe_decode.py's result)."""
    if "skipped" in moe:
        return ["", f"MoE decode: skipped: {moe['skipped'][:120]}"]
    lines = ["", f"**MoE** — Qwen3-30B-A3B layout cut to {moe['layers']} layers ({moe['precision']}, random weights) "
                 f"against a dense Qwen3 with the same active parameters; {moe['threads']} threads, "
                 f"{moe['moe']['decode'].get('prompt_tokens', '?')}-token prompt ({source})",
             "", "| model | active / total parameters | decode tok/s | build peak RSS MiB |", "|---|---:|---:|---:|"]
    for kind in ("moe", "dense"):
        entry = moe[kind]
        w = entry["build"]["weights"]
        lines.append(f"| {kind} | {w['active_parameters'] / 1e9:.2f} B / {w['parameters'] / 1e9:.2f} B | "
                     f"{entry['decode']['decode_tokens_per_s_median']:.1f} | "
                     f"{entry['build']['peak_rss_bytes'] / MIB:.0f} |")
    mem = moe["build_memory"]
    lines.append(f"| MoE / dense decode | | {moe['decode_ratio_moe_over_dense']:.2f}x | MoE build limit "
                 f"{mem['limit_bytes'] / MIB:.0f} ({'within' if mem['within_limit'] else '**over**'}) |")
    return lines


def newest() -> Path:
    found = sorted((HERE / "results").glob("suite-*.json"))
    if not found:
        raise SystemExit("no benchmarks/results/suite-*.json yet: run benchmarks/run_suite.py first")
    return found[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path, nargs="*", help="one or more suite JSONs, shown in order")
    ap.add_argument("--write", type=Path, help="README to update between the suite-table markers")
    ap.add_argument("--moe", type=Path, help="a moe_decode.py result to show, when the suite ran without --moe-layers")
    args = ap.parse_args()
    paths = args.json or [newest()]
    moe = (json.loads(args.moe.read_text()), args.moe.name) if args.moe else None
    text = "\n\n".join(table(json.loads(p.read_text()), p.name, moe) for p in paths)
    if not args.write:
        print(text)
        return
    readme = args.write.read_text()
    if START not in readme or END not in readme:
        sys.exit(f"{args.write}: no {START} ... {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    args.write.write_text(f"{head}{START}\n{text}\n{END}{tail}")
    print(f"updated {args.write}")


if __name__ == "__main__":
    main()
