"""onnxruntime session options for checking a freshly built graph once, with little memory.

The build's smoke test loads the whole graph and runs a two-token prefill. With onnxruntime's
defaults (1.32, CPU) that costs more memory than the conversion itself: the external data file is
memory-mapped, but the MatMulNBits and QMoE kernels pre-pack every weight into a private copy at
session creation, touching all mapped pages as they go. For an 8-layer Qwen3-30B-A3B-layout int4
MoE (3.6 GB bundle) that peaked at 4.67 GiB; without pre-packing, 1.94 GiB. Then weights stay in
the mapped file and only the pages the prefill reads become resident: QMoE reads the experts the
two tokens are routed to, not all 128. What remains is MatMulNBits' unpacked path, which
dequantizes one weight at a time to float32 (the output head is the largest, vocab x hidden x 4
bytes) and frees it.

That trade only pays when the experts outweigh the output head's float32 copy: a prefill reads
every dense weight anyway. Measured (child VmHWM, session + 2-token prefill, int4):
1-layer 30B-A3B-layout MoE (0.4 GB of experts, 0.8 GB bundle) 1058 MiB pre-packed vs 1553 MiB lean
(the float32 head alone is 1187 MiB); 8-layer dense (0.66 GB bundle) 915 vs 1745 MiB. So a graph
loads lean only when its experts' stored bytes exceed the float32 head (vocab x hidden x 4 when the
head is quantized, nothing when it is float).

Every node still runs and still checks its inputs' shapes (a MatMulNBits weight of the wrong shape
fails at run time instead of at pre-packing). Decoding this way was 70-110x slower (8- and 1-layer
bundles), so these options are for one check, never for the runtime, which keeps pre-packing.
"""

from __future__ import annotations

import numpy as np

DISABLE_PREPACKING = "session.disable_prepacking"


# Stored bytes per expert weight: the values plus one scale per block, in the graph's float type
# (graph/moe.py keeps expert scales in it).
def _bytes_per_weight(precision) -> float:
    float_bytes = float(np.dtype(precision.numpy_dtype).itemsize)
    if precision.weights == "float":
        return float_bytes
    return (0.5 if precision.weights == "int4" else 1.0) + float_bytes / precision.block_size


def expert_bytes(spec, precision) -> int:
    """Stored bytes of all routed experts (gate, up, down per expert; shared experts excluded)."""
    moe = getattr(spec, "moe", None)
    if moe is None:
        return 0
    weights = len(moe.sparse_layers) * moe.num_experts * 3 * spec.hidden_size * moe.intermediate_size
    return int(weights * _bytes_per_weight(precision))


def head_dequant_bytes(spec, precision) -> int:
    """The float32 copy MatMulNBits makes of a quantized output head when it runs unpacked."""
    return 0 if precision.lm_head == "float" else spec.vocab_size * spec.hidden_size * 4


def loads_lean(spec, precision) -> bool:
    return expert_bytes(spec, precision) > head_dequant_bytes(spec, precision)


def smoke_test_session_options(spec, precision):
    """Options for the build's one load-and-prefill check of the graph described by `spec`."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if loads_lean(spec, precision):
        opts.add_session_config_entry(DISABLE_PREPACKING, "1")
        # The arena would keep the largest dequantized weight's block after the run; without it the
        # block goes back to the system at once.
        opts.enable_cpu_mem_arena = False
    return opts
