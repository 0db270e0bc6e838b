"""`qwen-edge targets`: every target file, what it builds with and whether it is executed here."""

from __future__ import annotations

import argparse
from typing import Any

from .output import add_common, emit


def add_parser(sub) -> None:
    t = sub.add_parser("targets", help="list the targets: device, provider, executed here or validated only")
    add_common(t)
    t.set_defaults(func=cmd_targets)


def targets_table() -> list[dict[str, Any]]:
    from ..targets import available_targets

    rows = []
    for t in available_targets().values():
        here = t.execution
        if t.executed_here and t.validated_providers:
            here = f"executed on CPU; {', '.join(t.validated_providers)} validated, not executed"
        rows.append({"name": t.name, "device_class": t.device_class, "provider": t.execution_provider,
                     "fallback": t.fallback, "builder": t.builder, "executed_here": t.executed_here,
                     "execution": here, "precisions": list(t.precisions), "default_precision": t.default_precision,
                     "passes": [p.name for p in t.passes], "description": t.description})
    return rows


def format_targets(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'name':10} {'device':7} {'provider':24} {'precisions':22} here"]
    for r in rows:
        lines.append(f"{r['name']:10} {r['device_class']:7} {r['provider']:24} {','.join(r['precisions']):22} "
                     f"{r['execution']}")
    return "\n".join(lines)


def cmd_targets(args: argparse.Namespace) -> int:
    rows = targets_table()
    emit(args, {"targets": rows}, format_targets(rows))
    return 0
