"""`qwen-edge pipeline`: a checkpoints x targets matrix with a content-addressed build cache,
for CI (JSON report, JUnit XML, exit code 7 when a cell fails), split across CI jobs and cores.

    config          PIPELINE.toml, closed and typed
    cache           what every cache backend shares: keys (source fingerprint, recipe, tool), file hashes
    cache_backends  the CacheBackend interface, the local-directory backend, opening a cache, pruning
    remote_cache    a cache in object storage through fsspec (s3://, gs://, az://, file://)
    cells           the matrix as named cells with their keys
    shards          which cells a CI job runs (--cell, --shard I/N)
    cell_run        one cell through build, integrity and gate stages
    parallel        --jobs N: cells on worker processes within a memory budget
    runner          plan, select, run, report
    reports         the JSON report, and merging the shards' reports
    junit           the JUnit XML report

May import: qwen_edge.build, targets, bundle, checkpoint, verify and the root modules; never cli.
"""

from .cache_backends import CacheBackend, LocalCache, open_cache, prune
from .config import CheckpointEntry, Gate, PipelineConfig, TargetEntry, load_pipeline
from .reports import merge_reports, read_report, write_report
from .runner import list_cells, report_paths, run_pipeline
from .shards import parse_shard

__all__ = ["CacheBackend", "CheckpointEntry", "Gate", "LocalCache", "PipelineConfig", "TargetEntry", "list_cells",
           "load_pipeline", "merge_reports", "open_cache", "parse_shard", "prune", "read_report", "report_paths",
           "run_pipeline", "write_report"]
