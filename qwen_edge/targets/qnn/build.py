"""The "qnn-static" bundle builder: checkpoint -> static prefill/decode pair -> QDQ -> checked on the
HTP -> the bundle's model files and manifest sections.

The build stages around it (qwen_edge.build) open the checkpoint, stage the output, copy the
tokenizer, write the manifest and run `--verify`. Every step here is recorded in the manifest's
`passes` list with its parameters; the bundle lands only when the graphs load on the HTP (with CPU
fallback disabled unless the target's `fallback` is "cpu") and parity against the float graphs is
inside the recipe's tolerance (unless the gate is switched off, which is then recorded).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...graph import static_pair
from ...graph.static_pair import DECODE_FILE, PREFILL_FILE, WEIGHTS_FILE, write_float_pair
from ...verify.metrics import PROMPTS
from ..builders import BundleJob, register_bundle_builder
from .calibration import calibration_ids, record_feeds
from .olive_quantize import olive_qdq_quantize
from .options import PRECISIONS, QnnOptions
from .parity import gate, measure, tolerance
from .quantize import QdqRecipe, qdq_quantize, repack
from .runner import MASK_VALUE, StaticGeometry, StaticRunner, session_runner
from .session import cpu_session, htp_session, placement, qnn_versions

CONTEXT_SUFFIX = "_ctx.onnx"


def _tokenizer(ckpt):
    from tokenizers import Tokenizer

    path = ckpt.tokenizer_files.get("tokenizer.json")
    if path is None:
        raise ConfigError(f"{Path(ckpt.path).name}: npu-qnn calibration needs tokenizer.json")
    tok = Tokenizer.from_file(str(path))
    return lambda text: tok.encode(text, add_special_tokens=False).ids


def compile_context_binaries(stage: Path, files: dict[str, str], fallback: bool) -> dict[str, str]:
    """Compile each graph to an EPContext model (QNN context binary) and keep only those."""
    compiled = {}
    for key, name in files.items():
        target = stage / name.replace(".onnx", CONTEXT_SUFFIX)
        htp_session(stage / name, fallback=fallback, record=False,
                    extra={"ep.context_enable": "1", "ep.context_file_path": str(target), "ep.context_embed_mode": "0"})
        if not target.is_file():
            raise ConfigError(f"{name}: the QNN EP produced no EPContext model")
        compiled[key] = target.name
    return compiled


def unsupported(spec) -> str | None:
    if spec.mrope is not None:
        return (f"{spec.architecture} is a vision-language model (vision.onnx + embedding.onnx + an M-RoPE "
                "decoder), which only builder 'ort-contrib' makes; the static QNN graphs (builder 'qnn-static') do not")
    if spec.hybrid is not None:
        return (f"{spec.architecture}'s linear-attention layers need com.microsoft.LinearAttention and "
                "CausalConvWithState, which the static QNN graphs (builder 'qnn-static') do not have")
    if spec.moe is not None:
        return f"the static QNN graphs have no mixture-of-experts layers, which {spec.architecture} needs"
    return None


@register_bundle_builder("qnn-static", provides=("onnx", "onnx-standard"), options=QnnOptions, precisions=PRECISIONS,
                         static_shapes=True, unsupported=unsupported)
def build_qnn_bundle(job: BundleJob) -> dict[str, Any]:
    """Write the npu-qnn model files into the job's stage; return the manifest sections they need."""
    ckpt, spec, options, stage, progress = job.checkpoint, job.spec, job.options, Path(job.stage), job.progress
    fallback = job.target.fallback == "cpu"
    if options.context > spec.max_positions:
        raise ConfigError(f"npu-qnn: context {options.context} exceeds the model's max_position_embeddings "
                          f"{spec.max_positions}")
    passes: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="qwen-edge-qnn-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        pair = write_float_pair(ckpt, job.adapter, spec, tmp / "float", context=options.context, chunk=options.chunk,
                                norm_style=options.norm_style, progress=progress)
        timings["graphs_s"] = time.perf_counter() - t0
        passes.append({"name": "static_graph_pair", "implementation": static_pair.__name__,
                       "params": {"prefill_tokens": options.chunk, "decode_tokens": 1, "context": options.context,
                                  "norm_style": options.norm_style, "mask_value": MASK_VALUE,
                                  "dialect": "onnx-standard"}})
        geo = StaticGeometry(spec.num_layers, spec.num_kv_heads, spec.head_dim, spec.vocab_size, options.context,
                             options.chunk)
        reference = StaticRunner(geo, session_runner(cpu_session(pair.prefill)), session_runner(cpu_session(pair.decode)))
        encode = _tokenizer(ckpt)
        sources = {"prefill": pair.prefill, "decode": pair.decode}
        files = {"prefill": PREFILL_FILE, "decode": DECODE_FILE}
        t0 = time.perf_counter()
        ids, calib_source = calibration_ids(encode, options.calibration_text, options.calibration_tokens)
        progress("calibration", 0, 1)
        feeds = record_feeds(geo, reference.graph(options.chunk), reference.graph(1), ids,
                             options.decode_calibration_steps)
        progress("calibration", 1, 1)
        recipe = QdqRecipe(weight_bits=options.weight_bits)
        quantized, results = {}, {}
        for k, (key, reader) in enumerate(zip(("prefill", "decode"), feeds)):
            progress("quantize", k, 2)
            if options.quantizer == "olive":
                quantized[files[key]], results[key] = olive_qdq_quantize(sources[key], tmp / f"olive_{key}", reader,
                                                                         recipe)
            else:
                quantized[files[key]] = tmp / "qdq" / files[key]
                quantized[files[key]].parent.mkdir(exist_ok=True)
                results[key] = qdq_quantize(sources[key], quantized[files[key]], reader, recipe)
        progress("quantize", 2, 2)
        timings["quantize_s"] = time.perf_counter() - t0
        implementation = ("olive.passes.onnx.quantization.OnnxStaticQuantization (QNNExecutionProvider)"
                          if options.quantizer == "olive" else "onnxruntime.quantization get_qnn_qdq_config + quantize")
        passes.append({"name": "qnn_static_qdq", "implementation": implementation
                       + f" with {qdq_quantize.__module__} per-tensor overrides",
                       "params": {**recipe.to_dict(), "calibration_source": calib_source,
                                  "calibration_tokens": int(len(ids)),
                                  "decode_calibration_steps": options.decode_calibration_steps, "graphs": results}})
        sharing = repack(quantized, stage, WEIGHTS_FILE)
        passes.append({"name": "shared_weights_repack", "implementation": f"{repack.__module__}.repack",
                       "params": sharing})
        progress("htp check", 0, 2)
        t0 = time.perf_counter()
        sessions = {key: htp_session(stage / name, fallback=fallback) for key, name in files.items()}
        placements = {key: placement(s).to_dict() for key, s in sessions.items()}
        timings["htp_sessions_s"] = time.perf_counter() - t0
        progress("htp check", 2, 2)
        passes.append({"name": "qnn_htp_placement_check", "implementation": htp_session.__module__,
                       "params": {"backend": "htp", "session.disable_cpu_ep_fallback": 0 if fallback else 1}})
        candidate = StaticRunner(geo, session_runner(sessions["prefill"]), session_runner(sessions["decode"]))
        sequences = [np.asarray(encode(p), np.int64)[:min(options.context, options.parity_tokens)]
                     for p in PROMPTS[:options.parity_prompts]]
        sequences = [s for s in sequences if len(s) >= 2]
        progress("parity", 0, 1)
        t0 = time.perf_counter()
        parity = measure(candidate, reference, sequences, options.parity_decode_tokens)
        timings["parity_s"] = time.perf_counter() - t0
        progress("parity", 1, 1)
        tol = tolerance(options.precision, options.min_top1, options.max_kl)
        failure = gate(parity, tol, options.enforce_parity, f"{Path(ckpt.path).name} -> npu-qnn {options.precision}")
        compiled: dict[str, str] = {}
        if options.context_binary:
            del sessions, candidate
            compiled = compile_context_binaries(stage, files, fallback)
            passes.append({"name": "qnn_context_binary", "implementation": "onnxruntime QNN EP ep.context_enable",
                           "params": {"embed_mode": 0, "graphs": compiled}})
            for name in compiled.values():  # the compiled model must load and run too
                htp_session(stage / name, fallback=fallback, record=False)
    return _sections(spec, options, pair, files, compiled, sharing, placements, parity, tol, failure, passes, timings)


def _sections(spec, options: QnnOptions, pair, files, compiled, sharing, placements, parity, tol, failure, passes,
              timings) -> dict[str, Any]:
    params = pair.parameters
    return {
        "tool": {"qnn": qnn_versions()},
        "precision": {"name": options.precision, "dtype": "fp32", "weights": f"int{options.weight_bits}",
                      "activations": "uint16", "embeddings": "uint16", "lm_head": "int8", "block_size": 0,
                      "symmetric": True, "method": "per-channel-minmax", "accuracy_level": 0},
        "io": {**static_pair.io_names(spec.num_layers), "model_file": files["prefill"], "graphs": files,
               "context_binaries": compiled, "weights_file": WEIGHTS_FILE, "context_length": options.context,
               "prefill_chunk": options.chunk, "kv_dtype": "fp32", "num_layers": spec.num_layers,
               "num_kv_heads": spec.num_kv_heads, "head_dim": spec.head_dim, "vocab_size": spec.vocab_size,
               "key_cache_layout": "[1, kv_heads, head_dim, context]",
               "value_cache_layout": "[1, kv_heads, context, head_dim]"},
        "weights": {"parameters": params, "stored_bytes": sharing["bytes_stored"],
                    "bits_per_weight": round(8.0 * sharing["bytes_stored"] / params, 4) if params else 0.0,
                    "shared_between_graphs_bytes": sharing["bytes_referenced"] - sharing["bytes_stored"]},
        "graph": {"op_counts": pair.op_counts},
        "qnn": {"options": options.to_dict(), "placement": placements,
                "timings_s": {k: round(v, 3) for k, v in timings.items()}},
        "passes": passes,
        "quality": {"parity": parity, "reference": "float static graphs on CPU (checked against transformers "
                    "in tests)", "tolerance": tol, "passed": failure is None,
                    "gate": "enforced" if options.enforce_parity else "waived", "failure": failure},
    }
