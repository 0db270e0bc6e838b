"""Per-tensor precision under a budget, chosen by measured sensitivity.

Each projection (and the embedding table, with the tied lm_head when they share storage) is a
unit. Its sensitivity is the KL divergence of the model's next-token distribution, on a few
calibration windows, when only that unit is quantized, at each level of a ladder (base int4
block size, half that block size, int8). Units move up the ladder in order of KL saved per byte
added while the budget allows:

  * ``max_size_mb``: the bundle's predicted size (weights in their formats + the files that do not
    depend on precision) stays within the budget;
  * ``max_ppl_increase``: the predicted calibration-text perplexity increase falls within the
    budget. The prediction adds the units' measured KLs, scaled so that the all-base-format sum
    matches the measured mean NLL increase of the all-base-format model on the same windows.

Both may be given; the smaller selection satisfying both wins (the size cap is never exceeded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..bundle.files import TOKENIZER_FILES
from ..errors import ConfigError
from ..verify.metrics import log_softmax
from .blockwise import QuantSpec, quantize_blockwise
from .forward import EMBED_SCOPE, HEAD_SCOPE, LayerwiseForward, all_linear_scopes

# The top of every ladder: int8 spends a byte per weight already, so large blocks keep its scale
# overhead small, and its error is negligible next to int4's (its KL is taken as 0).
TOP_LEVEL = ("int8", 128)
SENSITIVITY_WINDOWS = 2
# Bytes a bundle holds besides the weight tensors and the copied tokenizer files: the graph proto
# (about 6.4 kB per layer on Qwen2 graphs), configs, external-data layout and the manifest with its
# quality and sensitivity reports (36 kB at 8 layers). A b64 build capped at 20.0 MB came out 53 kB
# over a prediction made with 7 kB per layer, so the per-layer allowance is 14 kB.
_OVERHEAD_PER_LAYER = 14_000
_OVERHEAD_FIXED = 24_000

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Budget:
    max_size_mb: float | None = None
    max_ppl_increase: float | None = None  # percent

    def __post_init__(self) -> None:
        if self.max_size_mb is None and self.max_ppl_increase is None:
            raise ConfigError("budget: give max_size_mb, max_ppl_increase or both")
        for key in ("max_size_mb", "max_ppl_increase"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0):
                raise ConfigError(f"budget: {key} {value!r} must be a positive number")

    def to_dict(self) -> dict[str, Any]:
        return {"max_size_mb": self.max_size_mb, "max_ppl_increase": self.max_ppl_increase}


def matrix_bytes(n: int, k: int, fmt: str, block_size: int, symmetric: bool, float_bytes: int = 4,
                 scale_bytes: int | None = None) -> int:
    """Stored bytes of an [n, k] matrix in `fmt` (MatMulNBits layout; scales of `scale_bytes`, by
    default the float type's)."""
    if fmt == "float":
        return n * k * float_bytes
    bits = 4 if fmt == "int4" else 8
    kb = -(-k // block_size)
    size = n * kb * block_size * bits // 8 + n * kb * (float_bytes if scale_bytes is None else scale_bytes)
    if not symmetric:
        size += n * (-(-kb * bits // 8))
    return size


@dataclass
class Unit:
    name: str  # the scope, or "embed+lm_head" for a shared table
    scopes: tuple[str, ...]
    shape: tuple[int, int]
    copies: int  # stored tables (1 when embedding and head share storage)
    kl: dict = None  # level (fmt, block_size) -> KL with only this unit at that level
    nll_increase: float = 0.0  # at the base level

    def bytes(self, level: tuple[str, int], precision) -> int:
        scale_bytes = np.dtype(precision.scale_numpy_dtype).itemsize
        return self.copies * matrix_bytes(*self.shape, level[0], level[1], precision.symmetric,
                                          float_bytes=np.dtype(precision.numpy_dtype).itemsize, scale_bytes=scale_bytes)


def _units(fwd: LayerwiseForward, spec, precision) -> list[Unit]:
    units = []
    for i in range(spec.num_layers):
        for scope, w in fwd.fused_weights(i).items():
            units.append(Unit(scope, (scope,), w.shape, 1))
    vocab_hidden = (spec.vocab_size, spec.hidden_size)
    if spec.tie_word_embeddings:
        units.append(Unit("embed+lm_head", (EMBED_SCOPE, HEAD_SCOPE), vocab_hidden, 1))
    else:
        units.append(Unit(EMBED_SCOPE, (EMBED_SCOPE,), vocab_hidden, 1))
        units.append(Unit(HEAD_SCOPE, (HEAD_SCOPE,), vocab_hidden, 1))
    return units


def _kl_and_nll(fwd: LayerwiseForward, ids: np.ndarray, ref_lp: list[np.ndarray], **kwargs) -> tuple[float, float]:
    kls, dn = [], []
    for row_ids, lp_ref, logits in zip(ids, ref_lp, fwd.logits(ids, **kwargs)):
        lp = log_softmax(logits)
        kls.append(float((np.exp(lp_ref) * (lp_ref - lp)).sum(-1).mean()))
        tgt = row_ids[1:]
        pos = np.arange(len(tgt))
        dn.append(float(lp_ref[pos, tgt].mean() - lp[pos, tgt].mean()))
    return float(np.mean(kls)), float(np.mean(dn))


def ladder(precision) -> list[tuple[str, int]]:
    """Storage levels a unit can take, cheapest first: the base format, int4 at half the block size
    (when the base is int4 with blocks of 32 or more), then int8."""
    base = (precision.weights, precision.block_size)
    levels = [base]
    if precision.weights == "int4" and precision.block_size >= 32:
        levels.append(("int4", precision.block_size // 2))
    if base != TOP_LEVEL:
        levels.append(TOP_LEVEL)
    return levels


def _unit_weight(fwd: LayerwiseForward, u: Unit) -> np.ndarray:
    if u.scopes[-1] == HEAD_SCOPE:
        return fwd.head_weight()
    if u.scopes[0] == EMBED_SCOPE:
        return fwd.tensor(fwd.adapter.GLOBAL_TENSORS["embed"])
    layer = int(u.name.split("layers.")[1].split("/")[0])
    return fwd.fused_weights(layer)[u.name]


def measure_sensitivity(fwd: LayerwiseForward, spec, precision, ids: np.ndarray,
                        progress: Progress | None = None) -> tuple[list[Unit], float]:
    """Per unit and level below int8: the KL with only that unit quantized there (int8's is taken
    as 0); and the mean NLL increase of the model with every unit at the base level."""
    levels = [lv for lv in ladder(precision) if lv != TOP_LEVEL]
    units = _units(fwd, spec, precision)
    ref_lp = [log_softmax(lg) for lg in fwd.logits(ids)]
    base_deq: dict[str, np.ndarray] = {}
    total, done = len(units) * len(levels) + 1, 0
    for u in units:
        u.kl = {TOP_LEVEL: 0.0}
        w = _unit_weight(fwd, u)
        for level in levels:
            if progress:
                progress("sensitivity", done, total)
            spec_ = QuantSpec(bits=4 if level[0] == "int4" else 8, block_size=level[1],
                              symmetric=precision.symmetric, method=precision.method)
            deq = quantize_blockwise(w, spec_, name=u.name).dequantize(precision.scale_numpy_dtype)
            kl, nll = _kl_and_nll(fwd, ids, ref_lp, **_substitution(u, deq))
            u.kl[level] = max(kl, 0.0)
            if level == levels[0]:
                base_deq[u.name] = deq
                u.nll_increase = nll
            done += 1
    weights: dict[str, np.ndarray] = {}
    embed_table = None
    for u in units:
        sub = _substitution(u, base_deq[u.name])
        weights.update(sub.get("weights", {}))
        embed_table = sub.get("embed_table", embed_table)
    _, all_nll = _kl_and_nll(fwd, ids, ref_lp, weights=weights, embed_table=embed_table)
    if progress:
        progress("sensitivity", total, total)
    return units, all_nll


def _substitution(u: Unit, deq: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"weights": {}}
    for scope in u.scopes:
        if scope == EMBED_SCOPE:
            out["embed_table"] = deq
        else:
            out["weights"][scope] = deq
    return out


def fixed_bytes(checkpoint, spec) -> int:
    """Bundle bytes that do not depend on the weights' formats: tokenizer files, norms, biases."""
    copied = [checkpoint.tokenizer_files[n] for n in TOKENIZER_FILES if n in checkpoint.tokenizer_files]
    gen = Path(checkpoint.path) / "generation_config.json"
    copied += [gen] if gen.is_file() else []
    files = sum(Path(p).stat().st_size for p in copied)
    files += len((checkpoint.chat_template or "").encode("utf-8"))
    floats = spec.num_layers * (2 * spec.hidden_size + (spec.q_size + 2 * spec.kv_size if spec.attention_bias else 0))
    floats += spec.hidden_size + spec.rope.rotary_dim
    return files + 4 * floats + _OVERHEAD_FIXED + _OVERHEAD_PER_LAYER * spec.num_layers


def select(units: list[Unit], all_nll: float, budget: Budget, precision, fixed: int) -> dict[str, Any]:
    """Each unit's level. Greedy on KL saved per byte added: at every step the single move (a unit
    to any higher level) with the best ratio that still fits the size cap is taken, until the
    predicted perplexity increase is within budget or nothing fits."""
    levels = ladder(precision)
    base = levels[0]
    for u in units:
        missing = [lv for lv in levels if lv not in (u.kl or {})]
        if missing:
            raise ConfigError(f"mixed precision: unit '{u.name}' has no sensitivity for level {missing[0]}")
    base_kl = sum(u.kl[base] for u in units)
    scale = all_nll / base_kl if base_kl > 0 and all_nll > 0 else 1.0
    cap = None if budget.max_size_mb is None else budget.max_size_mb * 1e6
    size = fixed + sum(u.bytes(base, precision) for u in units)
    if cap is not None and size > cap:
        raise ConfigError(f"budget: the all-{base[0]} bundle is already {size / 1e6:.2f} MB, "
                          f"over max_size_mb {budget.max_size_mb}")

    def predicted_increase(kl_left: float) -> float:
        return 100.0 * (math.exp(scale * kl_left) - 1.0)

    level = {u.name: 0 for u in units}
    kl_left = base_kl
    steps = []
    while budget.max_ppl_increase is None or predicted_increase(kl_left) > budget.max_ppl_increase:
        best = None
        for u in units:
            here = levels[level[u.name]]
            for j in range(level[u.name] + 1, len(levels)):
                gain = u.kl[here] - u.kl[levels[j]]
                cost = u.bytes(levels[j], precision) - u.bytes(here, precision)
                if gain <= 0 or (cap is not None and size + cost > cap):
                    continue
                ratio = gain / max(cost, 1)
                if best is None or ratio > best[0]:
                    best = (ratio, u, j, gain, cost)
        if best is None:
            break
        _, u, j, gain, cost = best
        level[u.name] = j
        size += cost
        kl_left -= gain
        steps.append({"unit": u.name, "to": list(levels[j]), "kl_saved": gain, "bytes_added": cost})
    predicted = predicted_increase(kl_left)
    return {
        "levels": [list(lv) for lv in levels],
        "chosen": {u.name: list(levels[level[u.name]]) for u in units if level[u.name] > 0},
        "steps": steps,
        "predicted_bytes": int(size),
        "predicted_ppl_increase": predicted,
        "budget_met": (cap is None or size <= cap) and (budget.max_ppl_increase is None
                                                         or predicted <= budget.max_ppl_increase),
        "sensitivity": {u.name: {"kl": {f"{lv[0]}-b{lv[1]}": u.kl[lv] for lv in levels},
                                 "nll_increase": u.nll_increase} for u in units},
        "all_base_nll_increase": all_nll,
    }


def choose_formats(checkpoint, adapter, spec, precision, config, budget: Budget, ids: np.ndarray,
                   progress: Progress | None = None) -> tuple[dict[str, str], dict[str, int], dict[str, Any]]:
    """Measure, select, and return per-scope formats and block sizes for the quantization plan."""
    if not isinstance(budget, Budget):
        raise ConfigError(f"budget: expected a Budget, got {type(budget).__name__}")
    fwd = LayerwiseForward(checkpoint, adapter, spec)
    sample = ids[:: max(1, len(ids) // SENSITIVITY_WINDOWS)][:SENSITIVITY_WINDOWS]
    units, all_nll = measure_sensitivity(fwd, spec, precision, sample, progress)
    selection = select(units, all_nll, budget, precision, fixed_bytes(checkpoint, spec))
    selection["budget"] = budget.to_dict()
    formats: dict[str, str] = {}
    block_sizes: dict[str, int] = {}
    by_name = {u.name: u for u in units}
    for name, (fmt, block_size) in selection["chosen"].items():
        for scope in by_name[name].scopes:
            formats[scope] = fmt
            block_sizes[scope] = block_size
    return formats, block_sizes, selection


__all__ = ["Budget", "choose_formats", "ladder", "matrix_bytes", "measure_sensitivity", "select", "all_linear_scopes"]
