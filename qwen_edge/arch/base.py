"""Architecture specs and the adapter registry.

An adapter turns a checkpoint's config.json into a frozen ArchSpec and names the checkpoint
tensors that feed each role in the graph. Adapters register themselves by Hugging Face class
name at their declaration; the graph builders never branch on architecture names, only on
the spec's feature flags (a sparse layer is `spec.moe.is_sparse(i)`, not "a Qwen3-MoE layer").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar

from ..errors import CheckpointError, UnsupportedArchitectureError
from .hybrid import HybridSpec
from .moe import MoeSpec, MoeTensors
from .rope import MropeSpec, RopeSpec

_REGISTRY: dict[str, type["ArchAdapter"]] = {}


def register(*hf_class_names: str):
    """Class decorator: make an adapter the handler of the given HF `architectures` names."""

    def wrap(cls: type[ArchAdapter]) -> type[ArchAdapter]:
        for name in hf_class_names:
            if name in _REGISTRY:
                raise RuntimeError(f"architecture {name} registered twice")
            _REGISTRY[name] = cls
        cls.hf_classes = tuple(hf_class_names)
        return cls

    return wrap


def supported_architectures() -> list[str]:
    return sorted(_REGISTRY)


def adapter_for(architecture: str) -> "ArchAdapter":
    try:
        return _REGISTRY[architecture]()
    except KeyError:
        raise UnsupportedArchitectureError(
            f"config.json: architecture '{architecture}' is not supported "
            f"(supported: {', '.join(supported_architectures())})"
        ) from None


@dataclass(frozen=True)
class ArchSpec:
    """Normalized hyper-parameters of a decoder-only Qwen model (one per checkpoint)."""

    architecture: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    max_positions: int
    tie_word_embeddings: bool
    attention_bias: bool
    qk_norm: bool
    rope: RopeSpec
    # Per layer: the sliding-window size, or 0 for full attention.
    sliding_windows: tuple[int, ...] = field(default=())
    # Mixture-of-experts layers (None for dense models).
    moe: MoeSpec | None = None
    # Linear-attention layers beside full attention (Qwen3.5); None for the classic decoders.
    hybrid: HybridSpec | None = None
    # Multimodal rotary positions (Qwen2.5-VL / Qwen3-VL): the decoder takes 3-D (t, h, w) position ids.
    mrope: MropeSpec | None = None

    def __post_init__(self) -> None:
        for key in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                    "intermediate_size", "vocab_size", "max_positions"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise CheckpointError(f"config.json: '{key}' must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise CheckpointError(
                f"config.json: num_attention_heads ({self.num_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if not (self.rms_norm_eps > 0 and math.isfinite(self.rms_norm_eps)):
            raise CheckpointError(f"config.json: 'rms_norm_eps' must be positive, got {self.rms_norm_eps}")
        if self.rope.rotary_dim > self.head_dim:
            raise CheckpointError(
                f"config.json: rotary dimension {self.rope.rotary_dim} exceeds head_dim {self.head_dim}"
            )
        if len(self.sliding_windows) != self.num_layers:
            raise CheckpointError(
                f"config.json: {len(self.sliding_windows)} sliding-window entries for {self.num_layers} layers"
            )
        if self.hybrid is not None and len(self.hybrid.layer_types) != self.num_layers:
            raise CheckpointError(f"config.json: 'layer_types' lists {len(self.hybrid.layer_types)} layers, "
                                  f"num_hidden_layers is {self.num_layers}")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def kv_layers(self) -> tuple[int, ...]:
        """The layers with a key/value cache (all but a hybrid model's linear-attention layers)."""
        return self.hybrid.full_layers if self.hybrid is not None else tuple(range(self.num_layers))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.hybrid is None:  # manifests of the classic decoders keep the keys they always had
            del d["hybrid"]
        if self.mrope is None:
            del d["mrope"]
        return d


def _get(config: dict, key: str, kind: type, default: Any = None, *, required: bool = True) -> Any:
    if key not in config or config[key] is None:
        if required and default is None:
            raise CheckpointError(f"config.json: required key '{key}' is missing")
        return default
    value = config[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise CheckpointError(f"config.json: '{key}' must be {kind.__name__}, got {value!r}")
    return value


def rope_from_config(config: dict, rotary_dim: int) -> RopeSpec:
    """Read RoPE settings from either dialect.

    transformers 4.x writes `rope_theta` plus an optional `rope_scaling` block (keyed `type` in
    older files, `rope_type` in newer); 5.x writes everything into `rope_parameters`.
    """
    params = config.get("rope_parameters")
    if params is not None and not isinstance(params, dict):
        raise CheckpointError("config.json: 'rope_parameters' must be an object")
    scaling = config.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise CheckpointError("config.json: 'rope_scaling' must be an object or null")
    block = dict(scaling or {})
    block.update(params or {})
    theta = block.get("rope_theta", config.get("rope_theta", 10000.0))
    rope_type = block.get("rope_type", block.get("type", "default"))
    if not isinstance(theta, (int, float)) or isinstance(theta, bool):
        raise CheckpointError(f"config.json: 'rope_theta' must be a number, got {theta!r}")
    if not isinstance(rope_type, str):
        raise CheckpointError(f"config.json: rope type must be a string, got {rope_type!r}")

    def number(key: str, default: float | None) -> float | None:
        value = block.get(key)
        if value is None:
            return default
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise CheckpointError(f"config.json: rope scaling '{key}' must be a number, got {value!r}")
        return float(value)

    original = block.get("original_max_position_embeddings")
    if original is not None and (not isinstance(original, int) or original <= 0):
        raise CheckpointError(
            f"config.json: rope scaling 'original_max_position_embeddings' must be a positive integer, got {original!r}"
        )
    factor = number("factor", None)
    if factor is None:
        if rope_type == "yarn" and original:
            factor = config.get("max_position_embeddings", original) / original
        elif rope_type != "default":
            raise CheckpointError(f"config.json: rope scaling of type '{rope_type}' needs a 'factor'")
        else:
            factor = 1.0
    return RopeSpec(
        theta=float(theta),
        rotary_dim=rotary_dim,
        rope_type=rope_type,
        factor=factor,
        original_max_positions=original,
        beta_fast=number("beta_fast", 32.0) or 32.0,
        beta_slow=number("beta_slow", 1.0) or 1.0,
        attention_factor=number("attention_factor", None),
        mscale=number("mscale", None),
        mscale_all_dim=number("mscale_all_dim", None),
        truncate=bool(block.get("truncate", True)),
    )


def sliding_windows_from_config(config: dict, num_layers: int) -> tuple[int, ...]:
    """Per-layer window sizes (0 = full attention) from either dialect.

    transformers 5.x lists `layer_types`; 4.x Qwen2 uses `use_sliding_window` with
    `max_window_layers` (layers at or above that index use the window).
    """
    window = config.get("sliding_window") or 0
    layer_types = config.get("layer_types")
    if isinstance(layer_types, list) and len(layer_types) == num_layers:
        return tuple(window if kind == "sliding_attention" else 0 for kind in layer_types)
    if config.get("use_sliding_window") and window:
        first = config.get("max_window_layers", num_layers)
        return tuple(window if i >= first else 0 for i in range(num_layers))
    return (0,) * num_layers


class ArchAdapter:
    """Base adapter for dense Qwen decoders. Subclasses override only what differs."""

    hf_classes: ClassVar[tuple[str, ...]] = ()
    # Prefix of the language model's tensors ("model.language_model." inside multimodal checkpoints).
    MODEL_PREFIX: ClassVar[str] = "model."
    # Checkpoint tensors a text-only build leaves out on purpose (a vision tower, an MTP head), by
    # name prefix; the build reports them instead of failing on unused tensors.
    LEFT_OUT_PREFIXES: ClassVar[tuple[str, ...]] = ()
    # int4/int8 without zero points unless the build asks otherwise (Precision.symmetric None).
    # Asymmetric is the default: on qwen2-code-30m it is the better quality for the same bytes.
    SYMMETRIC_INT: ClassVar[bool] = False

    # Global tensors: role -> checkpoint name.
    GLOBAL_TENSORS: ClassVar[dict[str, str]] = {
        "embed": "model.embed_tokens.weight",
        "final_norm": "model.norm.weight",
        "lm_head": "lm_head.weight",
    }
    # Per-layer tensors: role -> checkpoint name pattern with {i}.
    LAYER_TENSORS: ClassVar[dict[str, str]] = {
        "input_norm": "model.layers.{i}.input_layernorm.weight",
        "q_proj": "model.layers.{i}.self_attn.q_proj.weight",
        "k_proj": "model.layers.{i}.self_attn.k_proj.weight",
        "v_proj": "model.layers.{i}.self_attn.v_proj.weight",
        "o_proj": "model.layers.{i}.self_attn.o_proj.weight",
        "post_attention_norm": "model.layers.{i}.post_attention_layernorm.weight",
        "gate_proj": "model.layers.{i}.mlp.gate_proj.weight",
        "up_proj": "model.layers.{i}.mlp.up_proj.weight",
        "down_proj": "model.layers.{i}.mlp.down_proj.weight",
    }
    BIAS_TENSORS: ClassVar[dict[str, str]] = {
        "q_bias": "model.layers.{i}.self_attn.q_proj.bias",
        "k_bias": "model.layers.{i}.self_attn.k_proj.bias",
        "v_bias": "model.layers.{i}.self_attn.v_proj.bias",
    }
    QK_NORM_TENSORS: ClassVar[dict[str, str]] = {
        "q_norm": "model.layers.{i}.self_attn.q_norm.weight",
        "k_norm": "model.layers.{i}.self_attn.k_norm.weight",
    }

    def spec(self, config: dict, architecture: str) -> ArchSpec:
        raise NotImplementedError

    @property
    def moe_tensors(self) -> MoeTensors:
        return MoeTensors(self.MODEL_PREFIX)

    def split_unused(self, names: list[str]) -> tuple[dict[str, int], list[str]]:
        """Checkpoint tensors no graph read: those left out on purpose (counted per prefix), and the
        others, which are an error."""
        left_out: dict[str, int] = {}
        unexpected = []
        for name in names:
            prefix = next((p for p in self.LEFT_OUT_PREFIXES if name.startswith(p)), None)
            if prefix is None:
                unexpected.append(name)
            else:
                left_out[prefix] = left_out.get(prefix, 0) + 1
        return dict(sorted(left_out.items())), unexpected

    def layer_tensor_names(self, spec: ArchSpec, i: int) -> dict[str, str]:
        table = dict(self.LAYER_TENSORS)
        if spec.attention_bias:
            table.update(self.BIAS_TENSORS)
        if spec.qk_norm:
            table.update(self.QK_NORM_TENSORS)
        return {role: name.format(i=i) for role, name in table.items()}

    def expected_shapes(self, spec: ArchSpec, i: int) -> dict[str, tuple[int, ...]]:
        h, q, kv, m, d = spec.hidden_size, spec.q_size, spec.kv_size, spec.intermediate_size, spec.head_dim
        shapes = {
            "input_norm": (h,), "post_attention_norm": (h,),
            "q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
            "gate_proj": (m, h), "up_proj": (m, h), "down_proj": (h, m),
            "q_bias": (q,), "k_bias": (kv,), "v_bias": (kv,),
            "q_norm": (d,), "k_norm": (d,),
        }
        return {role: shapes[role] for role in self.layer_tensor_names(spec, i)}

    def global_shapes(self, spec: ArchSpec) -> dict[str, tuple[int, ...]]:
        return {
            "embed": (spec.vocab_size, spec.hidden_size),
            "final_norm": (spec.hidden_size,),
            "lm_head": (spec.vocab_size, spec.hidden_size),
        }

    def expected_tensors(self, spec: ArchSpec, has: Callable[[str], bool]) -> dict[str, tuple[int, ...]]:
        """Every tensor the graph reads, by checkpoint name, with the shape the config implies.
        `has(name)` answers layout questions (a MoE's stacked or per-expert weights)."""
        shapes = self.global_shapes(spec)
        out = {self.GLOBAL_TENSORS[role]: shape for role, shape in shapes.items()
               if not (role == "lm_head" and spec.tie_word_embeddings)}
        for i in range(spec.num_layers):
            names, layer = self.layer_tensor_names(spec, i), self.expected_shapes(spec, i)
            out |= {names[role]: layer[role] for role in names}
        return out

    def prepare_checkpoint(self, checkpoint, spec: ArchSpec) -> None:
        """Fit the checkpoint to the tensor table before anything reads it (the fused projections of
        Qwen3-Next become row views); nothing to do for most architectures."""

    def check_tensors(self, checkpoint, spec: ArchSpec) -> None:
        """Refuse, from the headers alone and before anything is built, a checkpoint that lacks a
        tensor the config implies or holds one of another shape."""
        self.check_shapes(checkpoint, self.expected_tensors(spec, checkpoint.has))

    def check_shapes(self, checkpoint, expected: dict[str, tuple[int, ...]]) -> None:
        """Each tensor named in `expected` is present with that shape, or one line says which is not."""
        for name, shape in expected.items():
            checkpoint.expect(name, shape, lambda name=name: self._missing_hint(checkpoint, name))

    def _missing_hint(self, checkpoint, name: str) -> str:
        """Where a tensor sits under another layout's prefix, say so: the config names the wrong one."""
        for prefix in ("model.language_model.", "model."):
            if prefix != self.MODEL_PREFIX and name.startswith(self.MODEL_PREFIX):
                other = prefix + name[len(self.MODEL_PREFIX):]
                if checkpoint.has(other):
                    return (f" (the checkpoint has '{other}': its tensors are not under the '{self.MODEL_PREFIX}' "
                            f"prefix that config.json's architecture implies)")
        return ""

    # Shared config parsing for the dense family.
    def _dense_spec(self, config: dict, architecture: str, *, attention_bias: bool, qk_norm: bool) -> ArchSpec:
        hidden = _get(config, "hidden_size", int)
        heads = _get(config, "num_attention_heads", int)
        layers = _get(config, "num_hidden_layers", int)
        head_dim = _get(config, "head_dim", int, hidden // heads if heads else 0, required=False)
        act = config.get("hidden_act", "silu")
        if act != "silu":
            raise CheckpointError(f"config.json: hidden_act '{act}' is not supported (only 'silu')")
        partial = config.get("partial_rotary_factor", 1.0)
        return ArchSpec(
            architecture=architecture,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=_get(config, "num_key_value_heads", int, heads, required=False),
            head_dim=head_dim,
            intermediate_size=_get(config, "intermediate_size", int),
            vocab_size=_get(config, "vocab_size", int),
            rms_norm_eps=_get(config, "rms_norm_eps", float, 1e-6, required=False),
            max_positions=_get(config, "max_position_embeddings", int, 32768, required=False),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_bias=attention_bias,
            qk_norm=qk_norm,
            rope=rope_from_config(config, int(head_dim * partial)),
            sliding_windows=sliding_windows_from_config(config, layers),
        )
