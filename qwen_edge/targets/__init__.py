"""Targets: the device classes a bundle is built for, as data, and everything that turns a target
file into a built and runnable bundle.

    schema      the target file schema (closed TOML) and its loader: Target, get_target, ...
    builders    the builder registry: graph builders and whole-bundle builders, by name
    passes      the pass interface, the pass registry and the passes every backend shares
    executors   the executor registry: what runs a built bundle here, by the bundle's kind
    catalog     the built-in builders, passes and executors, and every lookup
    verification  a bundle (or a staged build) against its checkpoint, through its executor
    openvino, qnn  hardware backends: their passes, builders, executors

May import: qwen_edge.graph, qwen_edge.quant, qwen_edge.verify, qwen_edge.runtime, qwen_edge.bundle,
qwen_edge.arch, qwen_edge.checkpoint and the root modules; never qwen_edge.build, pipeline or cli.
"""

from .schema import TARGETS_DIR, Target, available_targets, get_target, load_target_file, resolve_targets

__all__ = ["TARGETS_DIR", "Target", "available_targets", "get_target", "load_target_file", "resolve_targets"]
