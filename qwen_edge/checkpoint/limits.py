"""Memory budgets for what a config alone makes the tool allocate.

Every tensor read from a checkpoint is bounded by its file (shapes are checked against byte
ranges), but a few allocations follow the config only: the position tables of "dynamic" rope
scaling (context x rotary_dim / 2, computed in float64) and the runtime's KV cache (context x
layers x kv heads x head_dim). A hostile or mistaken config.json must not turn these into
terabytes, so they are checked before anything is allocated.
"""

from __future__ import annotations

from ..errors import CheckpointError, ConfigError

MAX_ROPE_TABLE_ELEMENTS = 1 << 26  # 512 MiB of float64 angles; a 128k-token table of rotary_dim 128 is 8M
MAX_KV_CACHE_BYTES = 64 << 30  # one sequence's KV cache (Qwen2.5-72B at 128k tokens in fp16 is ~43 GB)


def check_build_budget(spec, context_length: int, kv_bytes_per_element: int, *, context_from_user: bool) -> None:
    """Raise when the config (or --max-length) asks for allocations beyond the sane limits."""
    key = "--max-length" if context_from_user else "config.json: 'max_position_embeddings'"
    error = ConfigError if context_from_user else CheckpointError
    if spec.rope.rope_type == "dynamic":
        elements = context_length * (spec.rope.rotary_dim // 2)
        if elements > MAX_ROPE_TABLE_ELEMENTS:
            raise error(f"{key}: context {context_length} x rotary_dim {spec.rope.rotary_dim} needs a dynamic rope "
                        f"table of {elements} elements, above the limit of {MAX_ROPE_TABLE_ELEMENTS}")
    kv_bytes = 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * context_length * kv_bytes_per_element
    if kv_bytes > MAX_KV_CACHE_BYTES:
        raise error(f"{key}: context {context_length} needs a KV cache of {kv_bytes / 2**30:.0f} GiB per sequence "
                    f"({spec.num_layers} layers x {spec.num_kv_heads} kv heads x head_dim {spec.head_dim}), "
                    f"above the limit of {MAX_KV_CACHE_BYTES >> 30} GiB")
