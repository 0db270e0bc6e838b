"""Build work that does not change the bundle: a tied int4 head reuses the embedding's quantization."""

from __future__ import annotations

import onnx

from qwen_edge.build import BuildRequest, build
from qwen_edge.graph import linear as linear_mod
from qwen_edge.precision import Precision
from qwen_edge.checkpoint.tiny import TINY_QWEN2, make_tiny_checkpoint


def test_tied_int4_head_is_quantized_once_and_shares_the_embedding_bytes(tmp_path, monkeypatch):
    assert TINY_QWEN2["tie_word_embeddings"]
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", TINY_QWEN2)
    vocab, hidden = TINY_QWEN2["vocab_size"], TINY_QWEN2["hidden_size"]
    shapes = []
    real = linear_mod.quantize_blockwise

    def counting(w, spec, **kwargs):
        shapes.append(tuple(w.shape))
        return real(w, spec, **kwargs)

    monkeypatch.setattr(linear_mod, "quantize_blockwise", counting)
    build(BuildRequest(ckpt, tmp_path / "b", Precision.preset("int4")))
    assert shapes.count((vocab, hidden)) == 1
    graph = onnx.load(str(tmp_path / "b" / "model.onnx"), load_external_data=False).graph
    where = {i.name: {e.key: e.value for e in i.external_data}.get("offset") for i in graph.initializer}
    assert where["/lm_head/weight.packed"] == where["/model/embed_tokens/weight.packed"] is not None
