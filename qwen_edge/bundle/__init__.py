"""The bundle format: what a built bundle directory holds and how it is written, checked, signed and
shipped. Both sides of the house use it: the build writes bundles, the runtime reads them.

    manifest      the manifest schema (one schema for writer and reader), canonical JSON, integrity
    files         tokenizer files copied from the checkpoint, the manifest's file table
    staging       atomic output: a staging directory moved into place only when complete
    genai_config  genai_config.json, so a bundle runs unmodified in onnxruntime-genai
    signing       Ed25519 signatures of the manifest (imports `cryptography` only when called)
    archive       reproducible .tar.gz archives and their safe extraction

May import: the standard library, numpy and `qwen_edge.errors` / `qwen_edge.worker_threads`. Nothing
here imports onnxruntime, onnx or any other qwen_edge package, because the runtime imports it.
This file imports nothing, so that `qwen_edge.bundle.manifest` loads only what it needs.
"""
