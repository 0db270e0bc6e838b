"""Whether int4/int8 weights get zero points is the architecture's choice unless the build says.

Qwen3.5 defaults to symmetric (faster MLAS decode at a small measured quality cost), every other
architecture to asymmetric; `--symmetric` / `--no-symmetric` override both ways.
"""

from __future__ import annotations

import json

import onnx
import pytest

from qwen_edge.cli import main
from qwen_edge.errors import ConfigError
from qwen_edge.precision import Precision


def _zero_point_inputs(bundle) -> tuple[int, int]:
    """(MatMulNBits nodes, those with a zero-point input)."""
    graph = onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph
    nodes = [n for n in graph.node if n.op_type == "MatMulNBits"]
    return len(nodes), sum(1 for n in nodes if len(n.input) > 3 and n.input[3])


def _build(capsys, ckpt, out, *flags) -> dict:
    code = main(["build", str(ckpt), "-o", str(out), "--precision", "int4", "--block-size", "16", "--json", *flags])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(stdout)["precision"]


@pytest.mark.parametrize("flags, symmetric", [((), True), (("--no-symmetric",), False)])
def test_qwen35_defaults_to_symmetric(qwen35_ckpts, tmp_path, capsys, flags, symmetric):
    out = tmp_path / "bundle"
    assert _build(capsys, qwen35_ckpts("dense", "causal"), out, *flags)["symmetric"] is symmetric
    nodes, with_zero_points = _zero_point_inputs(out)
    assert nodes > 0 and with_zero_points == (0 if symmetric else nodes)
    assert json.loads((out / "manifest.json").read_text())["precision"]["symmetric"] is symmetric


@pytest.mark.parametrize("flags, symmetric", [((), False), (("--symmetric",), True)])
def test_dense_qwen_defaults_to_asymmetric(qwen2_ckpt, tmp_path, capsys, flags, symmetric):
    out = tmp_path / "bundle"
    assert _build(capsys, qwen2_ckpt, out, *flags)["symmetric"] is symmetric
    nodes, with_zero_points = _zero_point_inputs(out)
    assert nodes > 0 and with_zero_points == (0 if symmetric else nodes)


def test_precision_leaves_symmetric_open_until_resolved():
    p = Precision.preset("int4")
    assert p.symmetric is None
    assert p.resolved(True).symmetric is True and p.resolved(False).symmetric is False
    assert Precision.preset("int4", symmetric=False).resolved(True).symmetric is False
    with pytest.raises(ConfigError, match="symmetric"):
        Precision.from_dict({"symmetric": "yes"})
