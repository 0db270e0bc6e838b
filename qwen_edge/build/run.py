"""The build: one stage sequence for every target, whatever its builder.

    request -> target and builder (registry) -> checks -> open checkpoint -> spec
      -> [builder's preparation: data-aware plan]            (before anything is staged)
      -> staging directory: tokenizer files, chat template, the builder's model files
      -> manifest (common sections + the builder's) -> parity for --verify (gated) -> output in place

A graph builder's stages are qwen_edge.build.decoder_stages; a bundle builder (npu-qnn) writes its
model files itself from a BundleJob. Several targets share one load of the checkpoint (`build_many`).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..arch import adapter_for
from ..bundle.files import AheadDigests, copy_tokenizer_files, write_manifest
from ..bundle.staging import staged_output
from ..checkpoint import Checkpoint
from ..errors import ConfigError, GraphError
from ..precision import Precision
from ..targets import get_target
from ..targets.builders import BuilderInfo, BundleJob
from ..targets.catalog import get_builder
from ..targets.verification import enforce, target_parity
from ..worker_threads import worker_pool
from .decoder_stages import DecoderStages
from .manifest_sections import common_sections
from .request import BuildRequest, request_for_target

Progress = Callable[[str, int, int], None]


def check_request(request: BuildRequest, target, builder: BuilderInfo) -> Any:
    """Refuse a request the target or builder cannot take, before the checkpoint is opened. Returns a
    bundle builder's typed options (None for a graph builder)."""
    if builder.bundle is not None and request.precision != Precision():
        raise ConfigError(f"target '{target.name}': builder '{builder.name}' makes its own precisions "
                          f"({', '.join(builder.precisions)}); name one in builder_options, not as a Precision")
    options = builder.parse_options(request.builder_options, where=f"target '{target.name}': builder options")
    family, name = (options.precision,) * 2 if options is not None else (request.precision.family,
                                                                         request.precision.name)
    if family not in target.precisions:
        raise ConfigError(f"target '{target.name}' does not support precision '{name}' "
                          f"(supported: {', '.join(target.precisions)})")
    if request.options.exact_speculation and (builder.name != "ort-contrib" or target.passes
                                              or target.execution_provider != "CPUExecutionProvider"):
        raise ConfigError(f"target '{target.name}': exact speculation (the spare attention row) is made for "
                          "onnxruntime's CPU GroupQueryAttention only (the cpu target)")
    if request.options.exact_speculation and request.genai_speculative:
        raise ConfigError("genai_speculative with exact speculation: onnxruntime-genai's verify passes can reach "
                          "max_length, where the spare attention row has no room in its buffers")
    return options


def build(request: BuildRequest, progress: Progress | None = None) -> dict[str, Any]:
    """Build one bundle and return its manifest. The output appears only when complete."""
    return build_many([request], progress)[request.target]


def build_many(requests: list[BuildRequest], progress: Progress | None = None,
               targets: list | None = None) -> dict[str, dict[str, Any]]:
    """Several targets of one checkpoint from one load of it: {target name: manifest}. `targets`
    (loaded Target objects, one per request) are used instead of looking the requests' names up."""
    if not requests:
        raise ConfigError("no target to build")
    if len({Path(r.checkpoint) for r in requests}) != 1:
        raise ConfigError("build_many: every request must name the same checkpoint")
    targets = targets or [get_target(r.target) for r in requests]
    plan = []
    for request, target in zip(requests, targets, strict=True):  # all are checked before anything is built
        builder = get_builder(target.builder, target.name)
        plan.append((request, target, builder, check_request(request, target, builder)))
    with Checkpoint.open(requests[0].checkpoint) as ckpt:
        return {target.name: _with_fingerprint(ckpt, request, target, builder, options, progress)
                for request, target, builder, options in plan}


def target_outputs(output: Path, targets: list) -> dict[str, Path]:
    """Where each target's bundle goes: OUT itself for one target, OUT/<target>/ for several."""
    return {t.name: Path(output) / t.name if len(targets) > 1 else Path(output) for t in targets}


def build_targets(checkpoint: Path, output: Path, targets: list, *, precision: str | None = None,
                  weight_options: dict[str, Any] | None = None, builder_options: dict[str, Any] | None = None,
                  progress: Progress | None = None, **fields: Any) -> dict[str, dict[str, Any]]:
    """Several targets of one checkpoint from one load of it: OUT/<target>/ each (one target: OUT).

    `precision` names a preset for every target (None: each target's default); see
    request_for_target for `weight_options`, `builder_options` and the other BuildRequest `fields`.
    """
    outputs = target_outputs(output, targets)
    requests = [request_for_target(t, get_builder(t.builder, t.name), checkpoint=Path(checkpoint),
                                   output=outputs[t.name], precision=precision,
                                   weight_options=weight_options or {}, builder_options=builder_options or {},
                                   **fields)
                for t in targets]
    return build_many(requests, progress, targets)


def _with_fingerprint(ckpt, request: BuildRequest, target, builder: BuilderInfo, options,
                      progress: Progress | None) -> dict[str, Any]:
    # The source files are hashed for the manifest on a thread of their own at the lowest priority:
    # hashlib releases the GIL, so the hashing fills the cores' idle moments (the serial reads, the
    # smoke test's single-threaded load) instead of taking turns with the quantizer's workers.
    stop = threading.Event()
    with worker_pool(1, "qwen-edge-fingerprint", background=True) as pool:
        fingerprint = pool.submit(ckpt.source_fingerprint, stop)
        try:
            return _build(ckpt, request, target, builder, options, progress, fingerprint)
        finally:
            stop.set()  # a failed build does not wait for the hashing


def check_builder_can_build(target, builder: BuilderInfo, spec) -> None:
    """Refuse, in one line naming the target, a model the builder cannot make or whose operators the
    target's provider has no kernel for (when nothing may fall back to the CPU)."""
    reason = builder.unsupported(spec) if builder.unsupported is not None else None
    if reason is not None:
        raise GraphError(f"target '{target.name}': {reason}")
    needed = builder.required_ops(spec) if builder.required_ops is not None else ()
    if needed and target.fallback == "none":
        from ..targets.passes.op_support import OpTable

        for table in map(OpTable.load, target.graph.op_support):
            missing = [op for op in needed if op not in table.ops]
            if missing:
                domain, op = missing[0]
                raise GraphError(f"target '{target.name}': {table.provider} has no kernel for {domain}.{op}, which "
                                 f"{spec.architecture}'s graph needs (and the target does not fall back to the CPU)")


def _build(ckpt, request: BuildRequest, target, builder: BuilderInfo, options, progress: Progress | None,
           fingerprint: Future) -> dict[str, Any]:
    adapter = adapter_for(ckpt.architecture)
    spec = adapter.spec(ckpt.config, ckpt.architecture)
    request = replace(request, precision=request.precision.resolved(adapter.SYMMETRIC_INT))
    check_builder_can_build(target, builder, spec)
    adapter.prepare_checkpoint(ckpt, spec)
    adapter.check_tensors(ckpt, spec)
    stages = None
    if builder.graph is not None:
        stages = DecoderStages(ckpt, adapter, spec, request, target, builder, progress)
        stages.prepare()
    with staged_output(request.output) as stage, worker_pool(1, "qwen-edge-digest", background=True) as digest_pool:
        copy_tokenizer_files(ckpt, stage)
        if ckpt.chat_template is not None:
            (stage / "chat_template.jinja").write_text(ckpt.chat_template, encoding="utf-8")
        ahead = AheadDigests(digest_pool)
        if stages is not None:
            sections = stages.write(stage, ahead)
        else:
            job = BundleJob(ckpt, adapter, spec, target, options, stage, progress or (lambda stage, done, total: None))
            sections = builder.bundle(job)
        manifest = common_sections(ckpt, request, spec, target, fingerprint.result())
        manifest["tool"] |= sections.pop("tool", {})
        if "left_out" in sections:
            manifest["source"]["left_out"] = sections.pop("left_out")
        manifest |= sections
        manifest = write_manifest(stage, manifest, ahead)
        if request.parity is None:
            return manifest
        report = target_parity(stage, Path(request.checkpoint), target, request.parity, progress)
        manifest["parity"] = report
        manifest = write_manifest(stage, manifest)
        enforce(report, target.name)
        return manifest
