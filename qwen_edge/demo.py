"""`qwen-edge demo`: the whole pipeline on an embedded tiny checkpoint, no download, no torch."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .build import BuildRequest, build
from .checkpoint.tiny import TINY_QWEN2, make_tiny_checkpoint
from .precision import Precision
from .targets.verification import verify_bundle


def run_demo(workdir: Path | None = None, progress=None) -> dict[str, Any]:
    from .runtime import load

    with tempfile.TemporaryDirectory(prefix="qwen-edge-demo-") as tmp:
        root = Path(workdir) if workdir else Path(tmp)
        ckpt = make_tiny_checkpoint(root / "tiny-qwen2", TINY_QWEN2)
        results: dict[str, Any] = {"checkpoint": str(ckpt), "bundles": {}}
        lines = [f"tiny Qwen2 checkpoint: {ckpt}"]
        passed = True
        for name in ("fp32", "int4"):
            out = root / f"bundle-{name}"
            if progress:
                progress.note(f"building {name} bundle")
            manifest = build(BuildRequest(ckpt, out, Precision.preset(name)), progress)
            size = sum(f["bytes"] for f in manifest["files"].values())
            gen = load(out)
            sample = gen.generate("def fibonacci(n):", max_new_tokens=24)
            report = verify_bundle(out, ckpt, reference_kind="numpy")
            passed &= report["passed"]
            p = report["parity"]
            results["bundles"][name] = {"path": str(out), "bytes": size, "sample": sample.text,
                                        "tokens_per_s": sample.stats.decode_tokens_per_s, "verification": report}
            lines.append(
                f"{name}: {size / 1e3:.0f} kB, max |dlogits| {p['max_abs_logits_diff']:.2e}, top-1 "
                f"{p['top1_agreement'] * 100:.1f}%, KL {p['kl_divergence_mean']:.2e} vs numpy reference "
                f"-> {'ok' if report['passed'] else 'FAILED: ' + str(report['failure'])}; "
                f"sample ({sample.stats.decode_tokens_per_s:.0f} tok/s): {sample.text[:40]!r}"
            )
        results["passed"] = passed
        lines.append("demo passed" if passed else "demo FAILED")
        results["summary"] = "\n".join(lines)
        return results
