"""The embeddable runtime: onnxruntime + numpy + tokenizers (+ jinja2 for chat templates).

    from qwen_edge.runtime import load
    gen = load("bundle/")
    for piece in gen.stream("def fib(n):", max_new_tokens=64):
        print(piece, end="")

Nothing here imports torch, transformers, onnx or the build-time parts of qwen_edge.
"""

from .errors import ContextOverflowError, GenerationError, InvalidRequestError, TemplateError
from .generator import Generation, GenerationResult, GenerationStats, Generator
from .model import Model, RuntimeOptions
from .sampling import SamplingParams


def load(bundle_dir, **options) -> Generator:
    """Load a bundle and return a Generator for it (options: RuntimeOptions fields)."""
    return Generator(Model(bundle_dir, RuntimeOptions(**options)))


__all__ = [
    "ContextOverflowError", "GenerationError", "InvalidRequestError", "TemplateError",
    "Generation", "GenerationResult", "GenerationStats", "Generator", "Model", "RuntimeOptions",
    "SamplingParams", "load",
]
