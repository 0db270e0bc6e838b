"""Verification: how a built bundle is measured against its checkpoint.

    metrics        parity and quality metrics (top-1, KL, perplexity) on logits functions; numpy only
    reference      the float references: transformers (optional extra) and an independent numpy one
    tolerances     what "matches" means per precision family when a target file does not say
    executor       what runs a bundle for verification (the base class, and onnxruntime's executor)
    parity         the one parity check every bundle goes through: prompts, KV-cache path, text

May import: `qwen_edge.checkpoint`, `qwen_edge.arch`, `qwen_edge.bundle`, `qwen_edge.runtime` and the
root modules. Backends' executors (OpenVINO, QNN) live with the backends in `qwen_edge.targets` and
subclass `executor.BundleExecutor`. This file imports nothing, so that importing `metrics` stays cheap.
"""
