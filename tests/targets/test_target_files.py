"""Every target file validates, every pass it names exists, and the schema is closed."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from qwen_edge.errors import ConfigError, GraphError
from qwen_edge.targets.catalog import get_pass, registered_passes
from qwen_edge.targets import TARGETS_DIR, available_targets, load_target_file, resolve_targets

CPU_TOML = (TARGETS_DIR / "cpu.toml").read_text()


def test_every_target_file_validates_and_names_existing_passes():
    targets = available_targets()
    assert {"cpu", "openvino", "directml", "android", "ios"} <= set(targets)
    passes = registered_passes()
    for target in targets.values():
        for step in target.passes:
            assert step.name in passes, f"{target.name} names unknown pass {step.name}"
            passes[step.name].Config.from_params(step.params, where=target.name)


def test_validated_only_targets_say_so():
    targets = available_targets()
    assert targets["directml"].execution == "validated, not executed"
    assert targets["openvino"].execution == "executed"


def _write(tmp_path: Path, text: str, name: str = "cpu") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("extra, key", [
    ('colour = "red"\n', "colour"),
    ('[graph]\nstatic_shape = true\n', "static_shape"),
    ('[parity.int4]\nmin_top1 = 0.5\nmax_kl = 1.0\nmax_ppl = 3.0\n', "max_ppl"),
])
def test_unknown_keys_are_errors_naming_the_key(tmp_path, extra, key):
    text = CPU_TOML.replace("[runtime]", extra + "\n[runtime]", 1) if extra.startswith("colour") else CPU_TOML + extra
    with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
        load_target_file(_write(tmp_path, text))


def test_unknown_pass_and_unknown_pass_parameter_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown pass 'no.such_pass'"):
        load_target_file(_write(tmp_path, CPU_TOML + '\n[[passes]]\nname = "no.such_pass"\n'))
    bad = CPU_TOML + '\n[[passes]]\nname = "ort.to_ort_format"\nparams = { optimisation = "all" }\n'
    with pytest.raises(ConfigError, match="unknown parameter 'optimisation'"):
        load_target_file(_write(tmp_path, bad))
    wrong_type = CPU_TOML + '\n[[passes]]\nname = "ort.to_ort_format"\nparams = { size_budget_mb = "big" }\n'
    with pytest.raises(ConfigError, match="parameter 'size_budget_mb' must be float"):
        load_target_file(_write(tmp_path, wrong_type))


def test_pass_order_is_checked_against_what_earlier_steps_provide(tmp_path):
    # openvino.compress_weights needs an IR, which only openvino.convert makes.
    text = CPU_TOML + '\n[[passes]]\nname = "openvino.compress_weights"\n'
    with pytest.raises(ConfigError, match="needs openvino-ir"):
        load_target_file(_write(tmp_path, text))


def test_unknown_builder_names_the_target_file_and_the_known_ones(tmp_path):
    text = CPU_TOML.replace('executed_here = true', 'builder = "imaginary-npu"\nexecuted_here = true')
    with pytest.raises(ConfigError, match=r"cpu.toml'?: unknown builder 'imaginary-npu' \(known: .*qnn-static"):
        load_target_file(_write(tmp_path, text))


def test_resolve_targets_all_and_lists():
    assert [t.name for t in resolve_targets("cpu,directml")] == ["cpu", "directml"]
    assert len(resolve_targets("all")) == len(available_targets())
    with pytest.raises(ConfigError, match="named twice"):
        resolve_targets("cpu,cpu")


def _graph_with(node) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4])
    return helper.make_model(helper.make_graph([node], "g", [x], [y]))


def test_unsupported_node_fails_directml_validation_with_its_name(tmp_path):
    from qwen_edge.targets.passes.base import PassContext

    target = available_targets()["directml"]
    bad = helper.make_node("Hardmax", ["x"], ["y"], name="/model/odd/Hardmax")
    onnx.save(_graph_with(bad), tmp_path / "model.onnx")
    cls = get_pass("validate.op_support")
    ctx = PassContext(stage=tmp_path, target=target, spec=None, precision_family="int4", context_length=16,
                      artifacts={"onnx": "model.onnx"}, model_file="model.onnx")
    with pytest.raises(GraphError, match="node '/model/odd/Hardmax' fails validation"):
        cls(cls.Config()).run(ctx)
    good = helper.make_node("Sigmoid", ["x"], ["y"], name="/model/ok/Sigmoid")
    onnx.save(_graph_with(good), tmp_path / "model.onnx")
    report = cls(cls.Config()).run(ctx)
    assert report["providers"]["DmlExecutionProvider"]["unsupported_nodes"] == 0
    assert report["executed"] is False


def test_wrong_element_type_fails_validation(tmp_path):
    from qwen_edge.targets.passes.op_support import OpTable, check_model

    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"], name="sig")], "g", [x], [y]))
    problems = check_model(model, OpTable.load("directml"))
    assert problems and problems[0]["node"] == "sig" and "double" in problems[0]["reason"]


def test_static_shapes_need_a_static_builder(tmp_path):
    text = CPU_TOML + "\n[graph]\nstatic_shapes = true\n"
    with pytest.raises(ConfigError, match="builder 'ort-contrib' makes dynamic shapes"):
        load_target_file(_write(tmp_path, text))


def test_parity_tolerances_are_range_checked(tmp_path):
    with pytest.raises(ConfigError, match="'min_top1' 1.5 is outside"):
        load_target_file(_write(tmp_path, CPU_TOML + "\n[parity.int4]\nmin_top1 = 1.5\nmax_kl = 0.1\n"))
    with pytest.raises(ConfigError, match=r"\[parity.int3\] is not a precision family"):
        load_target_file(_write(tmp_path, CPU_TOML + "\n[parity.int3]\nmin_top1 = 0.5\nmax_kl = 0.1\n"))
