"""The build: a request in, a verified bundle directory out.

    request          BuildRequest, and request_for_target (settings shared by several targets)
    run              the stage sequence every target goes through (build, build_many, build_targets)
    decoder_stages   the stages around a graph builder: plan, graph, smoke test, passes, genai_config
    calibration      the data-aware stage: calibration text, mixed precision, the quantization plan
    smoke_test, lean_session   the built graph's load-and-prefill check, with little memory
    manifest_sections  the manifest sections every build writes

May import every package below it: qwen_edge.targets, graph, quant, verify, bundle, checkpoint, arch
and the root modules; never qwen_edge.pipeline or cli.
"""

from .request import BuildRequest, request_for_target
from .run import build, build_many, build_targets

__all__ = ["BuildRequest", "build", "build_many", "build_targets", "request_for_target"]
