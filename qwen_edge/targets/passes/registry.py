"""The pass registry: passes register by name at their declaration (`@register_pass`).

Only the registry: which modules declare passes is `qwen_edge.targets.catalog`'s business, so that
no pass module and no registry imports the other's users.
"""

from __future__ import annotations

from ...errors import ConfigError
from .base import ARTIFACTS, Pass

_PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    if cls.name in _PASSES:
        raise ConfigError(f"pass '{cls.name}' registered twice")
    for kind in (*cls.requires, *cls.provides, *cls.removes):
        if kind not in ARTIFACTS:
            raise ConfigError(f"pass '{cls.name}': unknown artifact kind '{kind}'")
    _PASSES[cls.name] = cls
    return cls


def lookup_pass(name: str, where: str = "") -> type[Pass]:
    if name not in _PASSES:
        raise ConfigError(f"{where + ': ' if where else ''}unknown pass '{name}' (known: {', '.join(sorted(_PASSES))})")
    return _PASSES[name]


def all_passes() -> dict[str, type[Pass]]:
    return dict(_PASSES)
