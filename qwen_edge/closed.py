"""Closed configs: a dataclass made from a dict whose unknown keys are errors naming the key."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def from_closed_dict(cls: type[T], values: dict[str, Any], label: str) -> T:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{label}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
    return cls(**values)
