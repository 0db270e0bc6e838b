"""The `qwen-edge` command line: parses, builds a validated request, calls the library.

    app          the parser and `main` (exit codes: the error type's; 130 interrupted)
    output       progress on stderr, results on stdout (`--json`), the shared flags
    build, run, serve, verify, bundle, pipeline, targets, demo   one module per command group
    malloc_tuning  the process-wide allocator setting the CLI applies (never the library)

May import anything in qwen_edge; nothing imports it. It never branches on a target's name: targets,
builders and executors come from qwen_edge.targets' registries.
"""

from .app import EXIT_INTERRUPTED, main
from .pipeline import EXIT_PIPELINE_FAILED

__all__ = ["EXIT_INTERRUPTED", "EXIT_PIPELINE_FAILED", "main"]
