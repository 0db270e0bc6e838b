"""Exception types. Every message is one line that names the file, tensor or key at fault."""


class QwenEdgeError(Exception):
    """Base class of every error qwen-edge raises on purpose."""

    exit_code = 1


class CheckpointError(QwenEdgeError):
    """The checkpoint directory is missing, malformed, unsafe or inconsistent."""

    exit_code = 3


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint asks for something we refuse to do (unpickling, remote code, escaping links)."""


class UnsupportedArchitectureError(CheckpointError):
    """The checkpoint's architecture has no registered adapter."""


class ConfigError(QwenEdgeError):
    """A user-facing configuration (target file, recipe, CLI option) is invalid."""

    exit_code = 2


class GraphError(QwenEdgeError):
    """The ONNX graph could not be built or does not satisfy a target's constraints."""

    exit_code = 4


class QuantizationError(QwenEdgeError):
    """A quantization request is invalid for the tensor it is applied to."""

    exit_code = 4


class BundleError(QwenEdgeError):
    """A bundle directory is missing files, has a bad manifest, or fails its integrity check."""

    exit_code = 5


class VerificationError(QwenEdgeError):
    """A bundle's outputs fall outside the tolerance its recipe allows."""

    exit_code = 6


class CacheError(QwenEdgeError):
    """A build cache cannot be opened, read or written (the message names its path or URL, never credentials)."""

    exit_code = 8
