"""Checking every node of a graph against an execution provider's documented operator support.

For providers that cannot run here (DirectML, NNAPI, CoreML, XNNPACK on a phone). Each node's
operator (domain + type) must be in the provider's table, and every tensor it reads or writes
must have an element type the table allows. With `fallback = "none"` any unsupported node fails
the build, naming the node; with a CPU fallback the result records which nodes would fall back.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from ...errors import ConfigError, GraphError
from .base import Pass, PassConfig, PassContext
from .registry import register_pass

TABLES_DIR = Path(__file__).resolve().parents[2] / "data" / "op_support"
_TYPE_NAMES = {
    TensorProto.FLOAT: "float", TensorProto.FLOAT16: "float16", TensorProto.DOUBLE: "double",
    TensorProto.BFLOAT16: "bfloat16", TensorProto.INT8: "int8", TensorProto.INT16: "int16",
    TensorProto.INT32: "int32", TensorProto.INT64: "int64", TensorProto.UINT8: "uint8",
    TensorProto.UINT16: "uint16", TensorProto.UINT32: "uint32", TensorProto.UINT64: "uint64",
    TensorProto.BOOL: "bool",
}
_BOOL_OUTPUT = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Not", "Xor", "IsNaN"}


@dataclass(frozen=True)
class OpTable:
    name: str
    provider: str
    ops: dict[tuple[str, str], frozenset[str]]  # (domain, op_type) -> element types

    @classmethod
    def load(cls, name: str) -> "OpTable":
        path = TABLES_DIR / f"{name}.toml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in TABLES_DIR.glob("*.toml")))
            raise ConfigError(f"operator-support table '{name}' not found (known: {known})")
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        for key in data:
            if key not in ("provider", "source", "ops"):
                raise ConfigError(f"{path}: unknown key '{key}'")
        ops = {}
        for domain, table in data["ops"].items():
            for op, types in table.items():
                unknown = set(types) - set(_TYPE_NAMES.values())
                if unknown:
                    raise ConfigError(f"{path}: {domain}.{op}: unknown element type '{sorted(unknown)[0]}'")
                ops[(domain, op)] = frozenset(types)
        return cls(name, data["provider"], ops)


def value_types(model: onnx.ModelProto) -> dict[str, str]:
    """Element type of every value, propagated through the graph in node order.

    Our graphs are topologically sorted; contrib operators return their first input's type,
    except the few rules below.
    """
    g = model.graph
    types: dict[str, str] = {}
    for v in [*g.input, *g.output, *g.value_info]:
        if v.type.tensor_type.elem_type:
            types[v.name] = _TYPE_NAMES.get(v.type.tensor_type.elem_type, "other")
    for init in g.initializer:
        types[init.name] = _TYPE_NAMES.get(init.data_type, "other")
    for node in g.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Cast":
            out = _TYPE_NAMES.get(attrs["to"].i, "other")
        elif node.op_type in ("Shape", "Size", "ArgMax", "ArgMin"):
            out = "int64"
        elif node.op_type in _BOOL_OUTPUT:
            out = "bool"
        elif node.op_type == "Constant":
            out = _TYPE_NAMES.get(attrs["value"].t.data_type, "other")
        elif node.op_type == "Where":
            out = types.get(node.input[1], "unknown")
        elif node.op_type == "GatherBlockQuantized":
            out = types.get(node.input[2], "unknown")
        else:
            first = next((i for i in node.input if i), None)
            out = types.get(first, "unknown") if first else "unknown"
        for name in node.output:
            if name and name not in types:
                types[name] = out
    return types


def check_model(model: onnx.ModelProto, table: OpTable) -> list[dict[str, str]]:
    """Unsupported nodes: [{'node', 'op', 'reason'}], empty when every node is supported."""
    types = value_types(model)
    problems = []
    for node in model.graph.node:
        domain = node.domain or "ai.onnx"
        allowed = table.ops.get((domain, node.op_type))
        op = f"{domain}.{node.op_type}"
        if allowed is None:
            problems.append({"node": node.name, "op": op, "reason": f"{op} is not supported by {table.provider}"})
            continue
        for name in [*node.input, *node.output]:
            if name and types.get(name) not in allowed:
                problems.append({"node": node.name, "op": op,
                                 "reason": f"tensor '{name}' of type {types.get(name)} is not supported by "
                                           f"{table.provider} for {op}"})
                break
    return problems


@dataclass(frozen=True)
class CheckConfig(PassConfig):
    tables: tuple[str, ...] = field(default=())  # empty: the target's [graph] op_support


@register_pass
class CheckOpSupport(Pass):
    """Validate every node against operator-support tables (validated, not executed)."""

    name = "validate.op_support"
    Config = CheckConfig
    requires = ("onnx",)
    provides = ("onnx",)

    def run(self, ctx: PassContext) -> dict[str, Any]:
        names = self.config.tables or ctx.target.graph.op_support
        if not names:
            raise ConfigError(f"{ctx.target.source}: validate.op_support has no tables "
                              "(give params.tables or [graph] op_support)")
        model = onnx.load(str(ctx.stage / ctx.artifacts["onnx"]), load_external_data=False)
        report: dict[str, Any] = {"nodes": len(model.graph.node), "providers": {}}
        for name in names:
            table = OpTable.load(name)
            problems = check_model(model, table)
            if problems and ctx.target.fallback == "none":
                first = problems[0]
                raise GraphError(f"{ctx.target.name}: node '{first['node']}' fails validation: {first['reason']} "
                                 f"({len(problems)} unsupported node(s))")
            ops = sorted({p["op"] for p in problems})
            report["providers"][table.provider] = {
                "table": name, "supported_nodes": len(model.graph.node) - len(problems),
                "unsupported_nodes": len(problems), "unsupported_ops": ops,
                "placement": "all nodes" if not problems else f"{len(problems)} node(s) fall back to CPU",
            }
        report["executed"] = False
        return report
