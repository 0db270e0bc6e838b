"""The embeddable runtime: onnxruntime + numpy + tokenizers (+ jinja2 for chat templates).

    from qwen_edge.runtime import load
    gen = load("bundle/")
    for piece in gen.stream("def fib(n):", max_new_tokens=64):
        print(piece, end="")

Nothing here imports torch, transformers, onnx or the build-time parts of qwen_edge.
May import: qwen_edge.bundle (the manifest schema, signatures) and qwen_edge.errors only.
"""

from dataclasses import fields

from .chat_generation import DEFAULT_BUDGET_MESSAGE, ChatGeneration
from .chat_types import ChatDelta, ToolCall, ToolCallDelta
from .errors import ContextOverflowError, GenerationError, InvalidRequestError, TemplateError
from .generator import Generation, Generator
from .results import GenerationResult, GenerationStats
from .model import Model, RuntimeOptions
from .sampling import SamplingParams
from .speculative import Speculative


def load(bundle_dir, **options) -> Generator:
    """Load a bundle and return a Generator for it (options: RuntimeOptions fields, e.g.
    `verify_integrity=True` or `verify_signature=public_key`)."""
    try:
        runtime_options = RuntimeOptions(**options)
    except TypeError:
        known = ", ".join(f.name for f in fields(RuntimeOptions))
        unknown = sorted(set(options) - {f.name for f in fields(RuntimeOptions)})
        raise InvalidRequestError(f"load: unknown option {unknown[0] if unknown else '?'!r} (known: {known})") from None
    return Generator(Model(bundle_dir, runtime_options))


__all__ = [
    "ChatDelta", "ChatGeneration", "DEFAULT_BUDGET_MESSAGE", "ToolCall", "ToolCallDelta",
    "ContextOverflowError", "GenerationError", "InvalidRequestError", "TemplateError",
    "Generation", "GenerationResult", "GenerationStats", "Generator", "Model", "RuntimeOptions",
    "SamplingParams", "Speculative", "load",
]
