"""Data-aware quantization of a whole checkpoint: run the calibration text through the model layer
by layer, and quantize every projection against its own inputs.

Methods (per projection, over the graph's fused projections):
  * ``gptq``   second-order error feedback over the input channels (quant/gptq.py);
  * ``awq``    activation-aware channel scaling: W' = W diag(s), s = E|x|^alpha with alpha searched
               on the output error, 1/s folded exactly into the preceding RMSNorm weight (q|k|v and
               gate|up; elsewhere it falls back to ``search``), then importance-weighted search;
  * ``search`` the error-minimising scale search weighted by each input channel's E[x^2];
  * ``rtn``    round to nearest (no calibration effect; a control).
Quantization is sequential by default: layer i+1 calibrates on the outputs of the already
quantized layers 0..i, as the bundle will compute them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np

from ..closed import from_closed_dict
from ..errors import ConfigError
from .blockwise import BlockQuantized, QuantSpec, quantize_blockwise
from .calibration import BUILTIN, load_calibration_text, token_windows
from .forward import EMBED_SCOPE, FOLDABLE_ROLES, HEAD_SCOPE, LayerwiseForward, layer_scopes
from .gptq import gptq_quantize

DATA_AWARE_METHODS = ("gptq", "awq", "search", "rtn")
FORMAT_BITS = {"int4": 4, "int8": 8}
AWQ_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Rows of X used to score AWQ's alpha candidates (output error is cheap on a subsample).
_AWQ_SCORE_ROWS = 4096

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CalibrationConfig:
    """How the calibration text is chosen and used. Closed: unknown keys are errors."""

    method: str = "gptq"
    source: str = BUILTIN  # "builtin" or a text file
    tokens: int = 8192
    window: int = 512
    sequential: bool = True

    def __post_init__(self) -> None:
        if self.method not in DATA_AWARE_METHODS:
            raise ConfigError(f"calibration: method '{self.method}' is not one of {', '.join(DATA_AWARE_METHODS)}")
        if not isinstance(self.tokens, int) or self.tokens < self.window:
            raise ConfigError(f"calibration: tokens {self.tokens!r} must be an integer >= window {self.window}")
        if not isinstance(self.window, int) or self.window < 16:
            raise ConfigError(f"calibration: window {self.window!r} must be an integer >= 16")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "CalibrationConfig":
        return from_closed_dict(cls, values, "calibration")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class QuantPlan:
    """What the graph builder stores instead of quantizing by itself.

    `quantized`: scope -> the finished matrix; `formats`: scope -> "float" | "int8" | "int4" for
    every scope whose storage differs from the precision's default; `tensor_overrides`: checkpoint
    tensor name -> replacement values (AWQ's folded norm weights).
    """

    quantized: dict[str, BlockQuantized] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)
    block_sizes: dict[str, int] = field(default_factory=dict)
    tensor_overrides: dict[str, np.ndarray] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


def hessian(x: np.ndarray) -> np.ndarray:
    """X^T X / rows in float64 (float32 products summed in chunks)."""
    out = np.zeros((x.shape[1], x.shape[1]))
    for r0 in range(0, len(x), 4096):
        chunk = x[r0:r0 + 4096]
        out += (chunk.T @ chunk).astype(np.float64)
    return out / max(len(x), 1)


def output_error(x: np.ndarray, w: np.ndarray, w_hat: np.ndarray) -> float:
    """Mean squared output error ||X (W - W_hat)^T||^2 / rows."""
    diff = (w - w_hat).astype(np.float32)
    return float(np.mean(np.square(x @ diff.T)) * diff.shape[0])


def awq_scales(x: np.ndarray, alpha: float) -> np.ndarray:
    """Per-input-channel scales E|x|^alpha, normalised to a geometric mean of 1 (AWQ's form)."""
    mean_abs = np.maximum(np.abs(x).mean(axis=0).astype(np.float64), 1e-8)
    s = mean_abs ** alpha
    return s / np.exp(np.log(s).mean())


class ProjectionQuantizer:
    """Quantizes one projection given its calibration inputs, by the configured method."""

    def __init__(self, method: str, grid_method: str, symmetric: bool):
        self.method = method
        self.grid_method = grid_method
        self.symmetric = symmetric

    def spec(self, bits: int, block_size: int, method: str | None = None) -> QuantSpec:
        return QuantSpec(bits=bits, block_size=block_size, symmetric=self.symmetric,
                         method=method or self.grid_method)

    def quantize(self, scope: str, x: np.ndarray, w: np.ndarray, bits: int, block_size: int,
                 foldable: bool) -> tuple[BlockQuantized, np.ndarray | None, dict[str, float]]:
        """Returns (matrix, AWQ input scales or None, report). The matrix is in the scaled basis
        when scales are returned: dequantize(matrix) / scales approximates w."""
        h = hessian(x)
        importance = np.diag(h).copy()
        if self.method == "rtn":
            bq = quantize_blockwise(w, self.spec(bits, block_size, "rtn"), name=scope)
            return bq, None, {}
        if self.method == "gptq" and bits == 4:
            return gptq_quantize(w, h, self.spec(bits, block_size), name=scope), None, {}
        if self.method == "awq" and foldable:
            return self._awq(scope, x, w, bits, block_size, importance)
        return quantize_blockwise(w, self.spec(bits, block_size, "search"), name=scope,
                                  importance=importance), None, {}

    def _awq(self, scope, x, w, bits, block_size, importance):
        sample = x[:: max(1, len(x) // _AWQ_SCORE_ROWS)]
        best = None
        for alpha in AWQ_ALPHAS:
            s = awq_scales(x, alpha)
            bq = quantize_blockwise(w * s[None, :], self.spec(bits, block_size, "search"), name=scope,
                                    importance=importance / (s * s))
            err = output_error(sample, w, bq.dequantize() / s[None, :])
            if best is None or err < best[0]:
                best = (err, alpha, s, bq)
        err, alpha, s, bq = best
        return bq, (None if alpha == 0.0 else s), {"alpha": alpha}


def calibration_ids(checkpoint, config: CalibrationConfig) -> tuple[np.ndarray, dict[str, Any]]:
    from tokenizers import Tokenizer

    text = load_calibration_text(config.source)
    tokenizer = Tokenizer.from_file(str(checkpoint.tokenizer_files["tokenizer.json"]))
    ids = tokenizer.encode(text.text).ids
    windows = token_windows(ids, config.window, config.tokens)
    return windows, text.to_dict() | {"tokens_available": len(ids), "windows": int(windows.shape[0]),
                                      "window": config.window}


def plan_quantization(checkpoint, adapter, spec, precision, config: CalibrationConfig,
                      formats: dict[str, str] | None = None, block_sizes: dict[str, int] | None = None,
                      ids: np.ndarray | None = None, progress: Progress | None = None) -> QuantPlan:
    """Quantize every projection of `checkpoint` that `precision` (and `formats`) store as int4/int8."""
    progress = progress or (lambda stage, done, total: None)
    precision = precision.resolved(adapter.SYMMETRIC_INT)
    formats = dict(formats or {})
    block_sizes = dict(block_sizes or {})
    info: dict[str, Any] = {}
    if ids is None:
        ids, info = calibration_ids(checkpoint, config)
    fwd = LayerwiseForward(checkpoint, adapter, spec)
    quantizer = ProjectionQuantizer(config.method, precision.method, precision.symmetric)
    plan = QuantPlan(formats=formats, block_sizes=block_sizes)
    details: dict[str, Any] = {}
    n_layers = spec.num_layers

    def fmt_of(scope: str, default: str) -> str:
        return formats.get(scope, default)

    def handle(scope: str, x: np.ndarray, w: np.ndarray, foldable: bool):
        fmt = fmt_of(scope, precision.weights if scope != HEAD_SCOPE else precision.lm_head)
        if fmt == "float":
            return None, None
        bq, scales, extra = quantizer.quantize(scope, x, w, FORMAT_BITS[fmt],
                                               block_sizes.get(scope, precision.block_size), foldable)
        plan.quantized[scope] = bq
        deq = bq.dequantize(precision.scale_numpy_dtype)
        if scales is not None:
            deq = deq / scales[None, :].astype(np.float32)
        details[scope] = extra | {"format": fmt, "block_size": bq.spec.block_size,
                                  "output_error": output_error(x[:: max(1, len(x) // _AWQ_SCORE_ROWS)], w, deq)}
        return deq, scales

    h = fwd.embed(ids)
    offset = np.float32(fwd.norm_offset)
    for i in range(n_layers):
        progress("calibration", i, n_layers + 1)
        sc = layer_scopes(i, spec)
        names = adapter.layer_tensor_names(spec, i)
        foldable = {sc[role]: (norm_role, readers) for role, norm_role, readers in FOLDABLE_ROLES if role in sc}
        folded: dict[str, np.ndarray] = {}

        def hook(scope: str, x: np.ndarray, w: np.ndarray):
            deq, scales = handle(scope, x, w, scope in foldable)
            if scales is not None:
                folded[scope] = scales
            return deq if config.sequential else None

        h = fwd.run_layer(i, h, hook)
        for scope, (norm_role, readers) in foldable.items():
            if scope in folded:  # the norm scales by offset + w: store the w that scales by (offset + w) / s
                gamma = fwd.tensor(names[norm_role]) + offset
                plan.tensor_overrides[names[norm_role]] = (gamma / folded[scope] - offset).astype(np.float32)
                for role in readers:
                    plan.tensor_overrides[names[role]] = (fwd.tensor(names[role]) * folded[scope][None, :]
                                                          ).astype(np.float32)
    progress("calibration", n_layers, n_layers + 1)
    x = fwd.final_hidden(h).reshape(-1, spec.hidden_size)
    deq, _ = handle(HEAD_SCOPE, x, fwd.head_weight(), False)
    if spec.tie_word_embeddings and HEAD_SCOPE in plan.quantized \
            and fmt_of(EMBED_SCOPE, precision.embeddings) == fmt_of(HEAD_SCOPE, precision.lm_head):
        # One table serves both: the embedding gathers from the head's quantized storage.
        plan.quantized[EMBED_SCOPE] = plan.quantized[HEAD_SCOPE]
    progress("calibration", n_layers + 1, n_layers + 1)
    plan.report = {"config": config.to_dict(), "text": info, "projections": details}
    return plan
