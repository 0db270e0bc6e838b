"""A built bundle against the checkpoint it was built from, through the executor its kind has here.

`verify_bundle` is `qwen-edge verify`; `target_parity` is the build's `--verify` for one staged
target. Both run qwen_edge.verify.parity.check_parity; they differ only in where the tolerance comes
from (the bundle's own target and precision, or the target being built) and in the report's framing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..errors import VerificationError
from ..verify.parity import ParityRequest, check_parity
from ..verify.reference import make_reference
from ..verify.tolerances import Tolerance, manifest_family
from .catalog import load_executor
from .schema import TARGETS_DIR, get_target

Progress = Callable[[str, int, int], None]


def bundle_tolerance(executor) -> Tolerance:
    """The tolerance a built bundle is held to: its target file's for its precision family (the
    defaults when that target is not known here), with what the bundle recorded it was built to."""
    manifest = executor.manifest
    family = manifest_family(manifest)
    name = manifest["target"]["name"]
    tolerance = get_target(name).tolerance(family) if (TARGETS_DIR / f"{name}.toml").is_file() \
        else Tolerance.default(family)
    return replace(tolerance, **executor.tolerance_overrides())


def verify_bundle(bundle: Path, reference_dir: Path, *, reference_kind: str = "auto", text_file: Path | None = None,
                  context: int = 1024, max_tokens: int | None = 65536, threads: int | None = None,
                  progress: Progress | None = None, max_ppl_increase: float | None = None) -> dict[str, Any]:
    """`qwen-edge verify BUNDLE --reference CKPT`: parity (and perplexity with a text) within tolerance."""
    executor = load_executor(Path(bundle), threads)
    try:
        tolerance = bundle_tolerance(executor)
        if max_ppl_increase is not None:
            tolerance = replace(tolerance, max_ppl_increase_percent=float(max_ppl_increase))
        ref = make_reference(reference_kind, Path(reference_dir))
        try:
            report = check_parity(executor, ref, tolerance, text_file=text_file, context=context,
                                  max_tokens=max_tokens, progress=progress)
        finally:
            ref.close()
        return {"bundle": str(bundle), "precision": executor.manifest["precision"]["name"], **report}
    finally:
        executor.close()


def target_parity(stage: Path, checkpoint: Path, target, request: ParityRequest,
                  progress: Progress | None = None) -> dict[str, Any]:
    """The build's `--verify` for one target: the manifest's `parity` section, gated unless told not to."""
    if not target.executed_here:
        return {"executed": False, "reason": "validated, not executed: no such device here"}
    executor = load_executor(Path(stage), request.threads)
    try:
        ref = make_reference(request.reference_kind, Path(checkpoint))
        try:
            report = check_parity(executor, ref, target.tolerance(manifest_family(executor.manifest)),
                                  text_file=request.text_file, context=request.context,
                                  max_tokens=request.max_tokens, progress=progress)
        finally:
            ref.close()
    finally:
        executor.close()
    return report | {"gated": request.gate}


def enforce(report: dict[str, Any], target_name: str) -> None:
    """Fail the build when a gated parity section did not pass."""
    if report.get("gated") and not report["passed"]:
        raise VerificationError(f"target '{target_name}': parity outside tolerance: {report['failures'][0]}")

