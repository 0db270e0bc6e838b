"""OpenVINO passes: IR conversion and NNCF weight compression through Olive, and the static-shape
configuration an Intel NPU needs (written, not executed: there is no NPU here).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from typing import Any

from ...errors import GraphError
from ..passes.base import Pass, PassConfig, PassContext
from ..passes.olive_bridge import require_olive, run_olive_pass
from ..passes.registry import register_pass

IR_NAME = "openvino_model"


def _move_ir(src_dir, stage) -> None:
    for suffix in (".xml", ".bin"):
        shutil.move(str(src_dir / f"{IR_NAME}{suffix}"), str(stage / f"{IR_NAME}{suffix}"))
    shutil.rmtree(src_dir, ignore_errors=True)


@dataclass(frozen=True)
class ConvertConfig(PassConfig):
    compress_to_fp16: bool = False  # store float weights as fp16 in the IR
    keep_onnx: bool = False         # also ship the ONNX graph the IR was made from


@register_pass
class OpenVINOConvert(Pass):
    """ONNX (standard ops) -> OpenVINO IR with dynamic shapes (Olive's OpenVINOConversion)."""

    name = "openvino.convert"
    Config = ConvertConfig
    requires = ("onnx-standard",)
    provides = ("openvino-ir",)
    removes = ("onnx", "onnx-standard")
    olive_pass = "OpenVINOConversion"

    def run(self, ctx: PassContext) -> dict[str, Any]:
        require_olive()
        from olive.model import ONNXModelHandler
        from olive.passes.openvino.conversion import OpenVINOConversion

        onnx_file = ctx.artifacts["onnx-standard"]
        work = ctx.stage / ".olive-openvino-convert"
        run_olive_pass(OpenVINOConversion,
                       {"static": False, "compress_to_fp16": self.config.compress_to_fp16, "model_name": IR_NAME},
                       ONNXModelHandler(model_path=str(ctx.stage / onnx_file)), work,
                       expect=[work / f"{IR_NAME}.xml", work / f"{IR_NAME}.bin"])
        _move_ir(work, ctx.stage)
        if not self.config.keep_onnx:
            for name in (onnx_file, onnx_file + ".data"):
                (ctx.stage / name).unlink(missing_ok=True)
            ctx.artifacts.pop("onnx", None)
            ctx.artifacts.pop("onnx-standard", None)
        ctx.artifacts["openvino-ir"] = f"{IR_NAME}.xml"
        ctx.model_file = f"{IR_NAME}.xml"
        return {"ir_bytes": (ctx.stage / f"{IR_NAME}.bin").stat().st_size}


_INT4_MODES = ("int4_asym", "int4_sym")
_INT8_MODES = ("int8_asym", "int8_sym")


@dataclass(frozen=True)
class CompressConfig(PassConfig):
    int4_mode: str = field(default="int4_asym", metadata={"choices": _INT4_MODES})
    int8_mode: str = field(default="int8_asym", metadata={"choices": _INT8_MODES})
    group_size: int = field(default=64, metadata={"choices": (-1, 32, 64, 128)})
    ratio: float = 1.0      # share of layers in int4; the rest (and embeddings / lm_head) in int8
    all_layers: bool = False  # also int4 for embeddings and the last layer
    # layers whose input size the group does not divide: "adjust" the group, "ignore" (keep int8), or "error"
    group_size_fallback: str = field(default="adjust", metadata={"choices": ("adjust", "ignore", "error")})


@register_pass
class OpenVINOCompressWeights(Pass):
    """NNCF data-free weight compression of the IR (Olive's OpenVINOWeightCompression).

    The mode follows the build's precision: int4 -> int4_mode, int8 -> int8_mode, float -> no-op.
    """

    name = "openvino.compress_weights"
    Config = CompressConfig
    requires = ("openvino-ir",)
    provides = ("openvino-ir",)
    olive_pass = "OpenVINOWeightCompression"

    def compress_config(self, family: str) -> dict[str, Any] | None:
        c = self.config
        if family == "int4":
            if not 0.0 < c.ratio <= 1.0:
                raise GraphError(f"openvino.compress_weights: ratio {c.ratio} is outside (0, 1]")
            return {"mode": c.int4_mode.upper(), "group_size": c.group_size, "ratio": c.ratio,
                    "all_layers": c.all_layers}
        if family == "int8":
            return {"mode": c.int8_mode.upper()}
        return None

    def run(self, ctx: PassContext) -> dict[str, Any]:
        config = self.compress_config(ctx.precision_family)
        if config is None:
            return {"skipped": f"precision {ctx.precision_family} keeps float weights"}
        require_olive()
        from olive.model import OpenVINOModelHandler
        from olive.passes.openvino.compression import OpenVINOWeightCompression

        source = ctx.stage / ".olive-openvino-source"
        source.mkdir()
        for suffix in (".xml", ".bin"):
            shutil.move(str(ctx.stage / f"{IR_NAME}{suffix}"), str(source / f"{IR_NAME}{suffix}"))
        work = ctx.stage / ".olive-openvino-compress"
        olive_config: dict[str, Any] = {"compress_config": config}
        if ctx.precision_family == "int4" and self.config.group_size_fallback != "error":
            olive_config["extra_args"] = {"advanced_compression_parameters": {
                "group_size_fallback_mode": self.config.group_size_fallback}}
        run_olive_pass(OpenVINOWeightCompression, olive_config,
                       OpenVINOModelHandler(model_path=str(source)), work,
                       expect=[work / f"{IR_NAME}.xml", work / f"{IR_NAME}.bin"])
        shutil.rmtree(source)
        _move_ir(work, ctx.stage)
        return {"nncf_mode": config["mode"], "ir_bytes": (ctx.stage / f"{IR_NAME}.bin").stat().st_size}


@dataclass(frozen=True)
class NpuConfig(PassConfig):
    max_prompt_len: int = 1024
    min_response_len: int = 128


@register_pass
class OpenVINONpuConfig(Pass):
    """Writes the static-shape settings an Intel NPU needs (openvino-genai's NPU pipeline properties).

    The NPU compiles fixed shapes: a prefill of MAX_PROMPT_LEN tokens and a KV cache of
    MAX_PROMPT_LEN + MIN_RESPONSE_LEN positions. Config only: nothing here runs on an NPU.
    """

    name = "openvino.npu_config"
    Config = NpuConfig
    requires = ("openvino-ir",)
    provides = ("openvino-ir",)

    def run(self, ctx: PassContext) -> dict[str, Any]:
        c = self.config
        # A bundle with a shorter context than asked gets the prompt length clamped, not a failed build.
        max_prompt = min(c.max_prompt_len, ctx.context_length - c.min_response_len)
        if max_prompt < 1:
            raise GraphError(f"openvino.npu_config: min_response_len {c.min_response_len} leaves no room for a "
                             f"prompt in the context length {ctx.context_length}")
        c = NpuConfig(max_prompt_len=max_prompt, min_response_len=c.min_response_len)
        config = {
            "device": "NPU",
            "properties": {"MAX_PROMPT_LEN": c.max_prompt_len, "MIN_RESPONSE_LEN": c.min_response_len,
                           "NPUW_LLM": "YES", "CACHE_DIR": "npu_cache"},
            "static_shapes": {
                "prefill": {"input_ids": [1, c.max_prompt_len], "attention_mask": [1, c.max_prompt_len],
                            "past_key_values": [1, ctx.spec.num_kv_heads, 0, ctx.spec.head_dim]},
                "decode": {"input_ids": [1, 1],
                           "attention_mask": [1, c.max_prompt_len + c.min_response_len],
                           "past_key_values": [1, ctx.spec.num_kv_heads,
                                               c.max_prompt_len + c.min_response_len - 1, ctx.spec.head_dim]},
            },
            "executed": False,
        }
        (ctx.stage / "openvino_npu_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return {"file": "openvino_npu_config.json", "max_prompt_len": c.max_prompt_len,
                "min_response_len": c.min_response_len, "executed": False}
