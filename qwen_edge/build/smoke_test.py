"""The build's smoke test: load the built graph in onnxruntime and run a two-token prefill, so that
a broken graph never lands."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import GraphError
from ..graph.decoder_io import empty_feeds
from ..precision import Precision
from . import lean_session


def smoke_test(model_path: Path, spec, precision: Precision) -> None:
    import onnxruntime as ort

    try:
        # Expert-heavy graphs load without pre-packing: experts stay memory-mapped, only routed ones are read.
        opts = lean_session.smoke_test_session_options(spec, precision)
        session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        logits = session.run(["logits"], empty_feeds(spec, precision.dtype, 2))[0]
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise GraphError(f"{model_path.name}: onnxruntime could not run the built graph: {exc}".splitlines()[0]) from exc
    if logits.shape != (1, 2, spec.vocab_size) or not np.isfinite(logits).all():
        raise GraphError(f"{model_path.name}: smoke test produced logits of shape {logits.shape} with non-finite values")
