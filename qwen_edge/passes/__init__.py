"""Graph and model passes, registered by name; target files list them in order."""

from __future__ import annotations

from ..errors import ConfigError
from .base import ARTIFACTS, Pass, PassConfig, PassContext

_PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    if cls.name in _PASSES:
        raise ConfigError(f"pass '{cls.name}' registered twice")
    for kind in (*cls.requires, *cls.provides, *cls.removes):
        if kind not in ARTIFACTS:
            raise ConfigError(f"pass '{cls.name}': unknown artifact kind '{kind}'")
    _PASSES[cls.name] = cls
    return cls


def get_pass(name: str, where: str = "") -> type[Pass]:
    _load_builtin()
    if name not in _PASSES:
        raise ConfigError(f"{where + ': ' if where else ''}unknown pass '{name}' (known: {', '.join(sorted(_PASSES))})")
    return _PASSES[name]


def registered_passes() -> dict[str, type[Pass]]:
    _load_builtin()
    return dict(_PASSES)


def check_pass_chain(target) -> None:
    """Each pass's required artifacts must exist when it runs: what the builder and earlier passes leave."""
    from ..graph.registry import builder_provides

    have = set(builder_provides(target.builder))
    for k, step in enumerate(target.passes):
        cls = get_pass(step.name)
        missing = [kind for kind in cls.requires if kind not in have]
        if missing:
            raise ConfigError(f"{target.source}: passes[{k}] '{step.name}' needs {', '.join(missing)}, which "
                              f"the builder '{target.builder}' and the passes before it do not provide")
        have = (have - set(cls.removes)) | set(cls.provides)


_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import op_support, openvino, ort_format  # noqa: F401  (modules register their passes)


__all__ = ["Pass", "PassConfig", "PassContext", "register_pass", "get_pass", "registered_passes",
           "check_pass_chain"]
