"""`qwen-edge pipeline`: a checkpoints x targets matrix with a content-addressed build cache,
for CI (JSON report, JUnit XML, exit code 7 when a cell fails).

    config   PIPELINE.toml, closed and typed
    cache    the build cache: keys from the source fingerprint, recipe and tool; file hashes
    runner   every cell through build, integrity and gate stages
    junit    the JUnit XML report

May import: qwen_edge.build, targets, bundle, checkpoint, verify and the root modules; never cli.
"""

from .config import CheckpointEntry, Gate, PipelineConfig, TargetEntry, load_pipeline
from .runner import run_pipeline

__all__ = ["CheckpointEntry", "Gate", "PipelineConfig", "TargetEntry", "load_pipeline", "run_pipeline"]
