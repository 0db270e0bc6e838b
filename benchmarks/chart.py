"""One PNG per suite run: decode speed, time to first token and build cost, per tool."""

from __future__ import annotations

from pathlib import Path


def _bars(ax, labels, values, title, unit, highlight="qwen_edge"):
    colors = ["#d62728" if label.startswith(highlight) else "#7f7f7f" for label in labels]
    ax.barh(labels, values, color=colors)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(unit)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.0f}" if v >= 100 else f" {v:.3g}", va="center", fontsize=8)


def draw(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ckpts = [c for c in report["checkpoints"].values() if "runs" in c]
    fig, axes = plt.subplots(len(ckpts) or 1, 3, figsize=(16, 4.2 * max(1, len(ckpts))), squeeze=False)
    for row, ckpt in zip(axes, ckpts):
        runs = {k: v for k, v in ckpt["runs"].items() if "skipped" not in v}
        builds = {k: v for k, v in ckpt["builds"].items() if "wall_s" in v}
        name = Path(ckpt["checkpoint"]).name
        _bars(row[0], list(runs), [v["decode_tokens_per_s_median"] for v in runs.values()],
              f"{name}\ndecode (higher is better)", "tokens/s")
        ceiling = ckpt.get("bandwidth_ceiling_tokens_per_s")
        if ceiling:
            row[0].axvline(ceiling, color="k", linestyle="--", linewidth=1)
            row[0].text(ceiling, len(runs) - 0.5, " bandwidth bound", fontsize=8)
        _bars(row[1], list(runs), [v["ttft_ms_median"] for v in runs.values()],
              f"{name}\ntime to first token (lower is better)", "ms")
        _bars(row[2], list(builds), [v["wall_s"] for v in builds.values()],
              f"{name}\nint4 build wall (lower is better)", "s")
    fig.suptitle(f"qwen-edge suite {report['date']} — {report['threads']} threads, "
                 f"{report['machine']['cpus']} CPUs, batch 1, 128 prompt + 128 new tokens, greedy", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
