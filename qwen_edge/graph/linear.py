"""Linear projections, embeddings and the output head in float or block-quantized form."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import GraphError
from ..precision import Precision
from ..quant import BlockQuantized, QuantSpec, quantize_blockwise
from .builder import MS_DOMAIN, NP_TO_ONNX, GraphBuilder

FORMAT_BITS = {"int4": 4, "int8": 8}


@dataclass
class WeightStats:
    """What the build stored, for the manifest's bits-per-weight and size report."""

    parameters: int = 0
    stored_bytes: int = 0
    by_format: dict[str, int] = field(default_factory=dict)
    # Per generated token: parameters used (experts count k/E of their size; an embedding table
    # counts fully, by convention) and weight bytes read (an embedding table: one row).
    active_parameters: float = 0.0
    bytes_read_per_token: float = 0.0

    def add(self, fmt: str, parameters: int, stored_bytes: int, *, active: float = 1.0,
            read: float | None = None) -> None:
        """`active`: the fraction of these weights one token uses; `read`: the fraction of their bytes
        one token reads (default: `active`)."""
        self.parameters += parameters
        self.stored_bytes += stored_bytes
        self.by_format[fmt] = self.by_format.get(fmt, 0) + parameters
        self.active_parameters += parameters * active
        self.bytes_read_per_token += stored_bytes * (active if read is None else read)

    def add_read(self, nbytes: int) -> None:
        """Bytes read per token from weights counted elsewhere (a head tied to the embedding)."""
        self.bytes_read_per_token += nbytes

    def to_dict(self) -> dict:
        bits = 8.0 * self.stored_bytes / self.parameters if self.parameters else 0.0
        return {
            "parameters": self.parameters,
            "stored_bytes": self.stored_bytes,
            "bits_per_weight": round(bits, 4),
            "parameters_by_format": dict(sorted(self.by_format.items())),
            "active_parameters": int(round(self.active_parameters)),
            "bytes_read_per_token": int(round(self.bytes_read_per_token)),
        }


class LinearFactory:
    """Emits the nodes for y = x @ W.T (+ b) given W in the HF [out, in] layout."""

    def __init__(self, g: GraphBuilder, precision: Precision, stats: WeightStats, plan=None):
        self.g = g
        self.precision = precision
        self.stats = stats
        self.plan = plan  # quant.data_aware.QuantPlan: matrices quantized ahead, per-scope formats
        self.float_dtype = precision.numpy_dtype
        self.scale_dtype = precision.scale_numpy_dtype
        # (format, quantized table) of the last quantized embedding: a tied output head in the same
        # format reuses it instead of quantizing the largest matrix of the model a second time.
        self.embedding_table: tuple[str, BlockQuantized] | None = None

    def scales(self, scope: str, scales: np.ndarray) -> str:
        """The block scales of `scope` as a value of the graph's float type: stored as given, and
        cast in the graph when stored narrower (onnxruntime folds that Cast when it loads the model)."""
        if scales.dtype == self.float_dtype:
            return self.g.weight(f"{scope}/weight.scales", scales)
        stored = self.g.weight(f"{scope}/weight.scales_{np.dtype(scales.dtype).name}", scales)
        return self.g.one("Cast", [stored], f"{scope}/weight.scales/Cast", to=NP_TO_ONNX[np.dtype(self.float_dtype)])

    def _quant_spec(self, fmt: str, scope: str = "") -> QuantSpec:
        p = self.precision
        block_size = self.plan.block_sizes.get(scope, p.block_size) if self.plan is not None else p.block_size
        return QuantSpec(bits=FORMAT_BITS[fmt], block_size=block_size, symmetric=p.symmetric, method=p.method)

    def _planned(self, scope: str, fmt: str, weight: np.ndarray, importance=None):
        """The plan's format for `scope` and its matrix (quantized here when the plan has none)."""
        if self.plan is not None:
            fmt = self.plan.formats.get(scope, fmt)
            planned = self.plan.quantized.get(scope)
            if planned is not None and fmt != "float":
                return fmt, planned
        if fmt == "float":
            return fmt, None
        return fmt, quantize_blockwise(weight, self._quant_spec(fmt, scope), name=scope, importance=importance)

    def linear(self, x: str, weight: np.ndarray | None, scope: str, fmt: str, *,
               bias: np.ndarray | None = None, importance: np.ndarray | None = None,
               shared_storage: bool = False, quantized: BlockQuantized | None = None) -> str:
        """`shared_storage` marks a weight whose bytes another tensor already stored (tied heads);
        `quantized` is an already quantized weight (then `weight` may be None)."""
        g = self.g
        if quantized is not None:
            n, k, bq = quantized.n, quantized.k, quantized
        else:
            n, k = weight.shape
            fmt, bq = self._planned(scope, fmt, weight, importance)
        if bq is None:
            w = g.weight(f"{scope}/weight", np.ascontiguousarray(weight.T.astype(self.float_dtype)))
            y = g.one("MatMul", [x, w], f"{scope}/MatMul")
            self.stats.add(fmt, n * k, n * k * np.dtype(self.float_dtype).itemsize)
        else:
            tensors = bq.matmul_nbits_tensors(self.scale_dtype)
            inputs = [x, g.weight(f"{scope}/weight.packed", tensors["B"]), self.scales(scope, tensors["scales"])]
            if "zero_points" in tensors:
                inputs.append(g.weight(f"{scope}/weight.zero_points", tensors["zero_points"]))
            y = g.one("MatMulNBits", inputs, f"{scope}/MatMulNBits", domain=MS_DOMAIN,
                      K=k, N=n, bits=bq.spec.bits, block_size=bq.spec.block_size,
                      accuracy_level=self.precision.accuracy_level)
            if not shared_storage:
                self.stats.add(fmt, n * k, bq.nbytes(self.scale_dtype))
            else:
                self.stats.add_read(bq.nbytes(self.scale_dtype))
        if bias is not None:
            b = g.weight(f"{scope}/bias", bias.astype(self.float_dtype))
            y = g.one("Add", [y, b], f"{scope}/Add")
            self.stats.add("float", bias.size, bias.size * np.dtype(self.float_dtype).itemsize)
        return y

    def linear_parts(self, x: str, weight: np.ndarray, scope: str, fmt: str,
                     parts: list[tuple[str, int]]) -> list[str]:
        """x @ weight.T as one projection per (scope, rows) part, quantized (or planned) as the one
        matrix `scope`: rows quantize independently, so the parts are the whole's exact slices. No Split
        follows (at the 0.8B Qwen3.5 shape, 72 fewer nodes: profiled decode kernel time -9%)."""
        if sum(rows for _, rows in parts) != weight.shape[0]:
            raise GraphError(f"{scope}: parts of {[rows for _, rows in parts]} rows do not make {weight.shape[0]}")
        fmt, bq = self._planned(scope, fmt, weight)
        outs, start = [], 0
        for part_scope, rows in parts:
            if bq is None:
                outs.append(self.linear(x, weight[start:start + rows], part_scope, "float"))
            else:
                outs.append(self.linear(x, None, part_scope, fmt, quantized=bq.rows(start, start + rows, part_scope)))
            start += rows
        return outs

    def embedding(self, ids: str, table: np.ndarray, scope: str, fmt: str) -> str:
        g = self.g
        vocab, hidden = table.shape
        fmt, bq = self._planned(scope, fmt, table)
        if bq is None:
            w = g.weight(f"{scope}/weight", table.astype(self.float_dtype))
            self.stats.add(fmt, table.size, table.size * np.dtype(self.float_dtype).itemsize, read=1.0 / vocab)
            return g.one("Gather", [w, ids], f"{scope}/Gather")
        self.embedding_table = (fmt, bq)
        tensors = bq.gather_block_quantized_tensors(self.scale_dtype)
        inputs = [g.weight(f"{scope}/weight.packed", tensors["data"]), ids, self.scales(scope, tensors["scales"])]
        if "zero_points" in tensors:
            inputs.append(g.weight(f"{scope}/weight.zero_points", tensors["zero_points"]))
        self.stats.add(fmt, table.size, bq.nbytes(self.scale_dtype), read=1.0 / vocab)
        return g.one("GatherBlockQuantized", inputs, f"{scope}/GatherBlockQuantized", domain=MS_DOMAIN,
                     gather_axis=0, quantize_axis=1, block_size=bq.spec.block_size, bits=bq.spec.bits)

    def tied_float_head(self, x: str, embedding_weight_name: str, scope: str, nbytes: int = 0) -> str:
        """logits = x @ E.T reusing the embedding table (of `nbytes`), without storing a transposed copy."""
        self.stats.add_read(nbytes)
        return self.g.one("FusedMatMul", [x, embedding_weight_name], f"{scope}/FusedMatMul",
                          domain=MS_DOMAIN, transB=1, alpha=1.0)
