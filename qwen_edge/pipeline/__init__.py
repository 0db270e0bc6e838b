"""`qwen-edge pipeline`: a checkpoints x targets matrix with a content-addressed build cache."""

from .config import CheckpointEntry, Gate, PipelineConfig, TargetEntry, load_pipeline
from .runner import run_pipeline

__all__ = ["CheckpointEntry", "Gate", "PipelineConfig", "TargetEntry", "load_pipeline", "run_pipeline"]
