"""What a target changes in a build: the precision the graph is built at, the pass list, the
manifest's target section, parity per executed target, and several targets from one checkpoint load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError
from .passes import PassContext, get_pass
from .precision import Precision

Progress = Callable[[str, int, int], None]


def bundle_precision(target, precision: Precision) -> Precision:
    """The precision the bundle is described with: the target may force the activation dtype."""
    if target.graph.dtype is not None and precision.dtype != target.graph.dtype:
        precision = dataclasses.replace(precision, dtype=target.graph.dtype)
    if target.graph.embeddings is not None and precision.embeddings != target.graph.embeddings:
        precision = dataclasses.replace(precision, embeddings=target.graph.embeddings)
    return precision


def graph_precision(target, precision: Precision) -> Precision:
    """The precision the builder uses: float weights when a pass quantizes them later."""
    if target.graph.weights == "passes":
        return Precision(dtype="fp32")
    return precision


@dataclass
class PassesResult:
    model_file: str
    records: list[dict[str, Any]]


def run_passes(target, stage: Path, spec, precision: Precision, context: int, builder,
               progress: Progress | None = None) -> PassesResult:
    from .build import MODEL_FILE

    ctx = PassContext(stage=stage, target=target, spec=spec, precision_family=precision.family,
                      context_length=context, artifacts={kind: MODEL_FILE for kind in builder.provides},
                      model_file=MODEL_FILE)
    if progress:
        ctx.progress = progress
    records = []
    for k, step in enumerate(target.passes):
        if progress:
            progress(f"pass {step.name}", k, len(target.passes))
        cls = get_pass(step.name)
        p = cls(cls.Config.from_params(step.params, where=f"{target.source}: passes[{k}]"))
        records.append(p.record(p.run(ctx)))
        if progress:
            progress(f"pass {step.name}", k + 1, len(target.passes))
    return PassesResult(ctx.model_file, records)


def genai_provider_options(target) -> list[dict[str, Any]]:
    if target.genai_provider is None:
        return []
    return [{target.genai_provider: {k: str(v) for k, v in target.provider_options.items()}}]


def target_manifest(target) -> dict[str, Any]:
    return {
        "execution": target.execution,
        "device_class": target.device_class,
        "builder": target.builder,
        "dialect": target.dialect,
        "graph": dataclasses.asdict(target.graph) | {"op_support": list(target.graph.op_support)},
        "provider_options": target.provider_options,
        "validated_providers": list(target.validated_providers),
        "validated_only": {p: "validated, not executed" for p in target.validated_providers}
        if target.validated_providers else ({} if target.executed_here
                                            else {target.execution_provider: "validated, not executed"}),
    }


def verify_target(stage: Path, manifest: dict[str, Any], target, precision: Precision, request,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Parity for targets executed here (recorded, and gating unless told otherwise)."""
    from .bundle import write_manifest

    if request.parity is None:
        return manifest
    if not target.executed_here:
        manifest["parity"] = {"executed": False, "reason": "validated, not executed: no such device here"}
        return write_manifest(stage, manifest)
    from .target_parity import enforce, run_parity

    report = run_parity(stage, Path(request.checkpoint), target.tolerance(precision.family), request.parity,
                        progress)
    report["executed_with"] = "openvino (CPU)" if manifest["io"]["model_file"].endswith(".xml") else \
        f"onnxruntime CPUExecutionProvider from {manifest['io']['model_file']}"
    manifest["parity"] = report
    manifest = write_manifest(stage, manifest)
    enforce(report, target.name)
    return manifest


def build_targets(checkpoint: Path, output: Path, targets: list, precision_for: Callable[[Any], Precision],
                  options, parity=None, progress: Progress | None = None,
                  smoke_test: bool = True, precision_name: str | None = None) -> dict[str, dict[str, Any]]:
    """Several targets from one load of the checkpoint: OUT/<target>/ (one target: OUT itself).

    Targets whose builder writes a whole bundle (npu-qnn) open the checkpoint themselves and take
    `precision_name` (the user's --precision) or their own default."""
    from .build import BuildRequest, build_with_checkpoint, check_precision
    from .checkpoint import Checkpoint

    if not targets:
        raise ConfigError("no target to build")
    from .graph.registry import get_builder

    plan, whole = [], []
    for target in targets:
        out = Path(output) if len(targets) == 1 else Path(output) / target.name
        builder = get_builder(target.builder, target.name)
        if builder.bundle is not None:  # makes its own graphs and precision (e.g. QDQ w8a16)
            whole.append((target, builder, out))
            continue
        precision = precision_for(target)
        check_precision(target, precision)
        plan.append((target, BuildRequest(checkpoint=Path(checkpoint), output=out, precision=precision,
                                          target=target.name, options=options, smoke_test=smoke_test,
                                          parity=parity)))
    manifests = {}
    if plan:
        with Checkpoint.open(checkpoint) as ckpt:
            for target, request in plan:
                manifests[target.name] = build_with_checkpoint(ckpt, request, target, progress)
    for target, builder, out in whole:
        manifests[target.name] = builder.bundle(Path(checkpoint), out, precision_name or target.default_precision,
                                                options.max_positions, progress)
    return {t.name: manifests[t.name] for t in targets}
