"""Verify graphs whose attention runs one row at a time: speculative decoding with output identical to plain decoding.

Why. onnxruntime 1.32's CPU GroupQueryAttention computes probs x V with one MLAS SGEMM per head whose M is the
number of new tokens; for M = 1 MLAS takes its matrix-vector kernel (`KernelM1Routine`, taken when M == 1 and
alpha == 1), for M > 1 the blocked kernel, and the two round differently (about 1e-6 in the attention output).
MatMulNBits at accuracy_level 4 quantizes its activations to int8 per block, which turns a 1e-6 difference
into a different int8 value now and then: over the trained 30M model's layers the logits of a verify pass
differ from one-token decode steps by up to 0.21. Every other operator of the decoders gives each row the
same bits whatever the number of rows (MatMulNBits level 4 included: tests/graph/test_row_attention.py).

What. The same decoder with each GroupQueryAttention node replaced by `rows` nodes of one new token each, in
order, on the same shared key/value buffers: row i attends to the cache plus rows 0..i-1, exactly as the
i-th of `rows` one-token decode steps does, and takes the same kernels, so its logits are bit-identical to
plain decoding's. Everything else (MatMulNBits, norms, linear attention) still runs once over all rows,
which is where a verify pass saves its time. Row i's sequence length is the last row's minus rows-1-i; it is
computed from row i-1's output shape, which orders the nodes (onnxruntime would otherwise be free to run
row i before row i-1 has written its key and value). Each extra node writes the present key/value of its
row to a graph output `present.L.key.rowI`, which the runtime binds to the same buffer as the cache.

The number of rows is fixed per graph (GroupQueryAttention refuses an empty row), so a bundle carries one
verify graph per pass length it verifies, sharing model.onnx.data.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

GQA = "GroupQueryAttention"


def row_output_name(present: str, row: int) -> str:
    """The graph output of row `row`'s present key or value (bound to the same buffer as `present`)."""
    return f"{present}.row{row}"


def row_attention_model(model: onnx.ModelProto, rows: int) -> onnx.ModelProto:
    """A copy of the decoder `model` for passes of exactly `rows` new tokens, attention one row at a time."""
    if rows < 2:
        raise ValueError(f"a row-attention verify graph needs rows >= 2, got {rows}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    nodes, extra = [], []
    found = 0
    for n in g.node:
        if n.op_type != GQA or n.domain != "com.microsoft":
            nodes.append(n)
            continue
        found += 1
        qkv, k_in, v_in, past_k, past_v, seqlens, total = (list(n.input) + [""] * 7)[:7]
        tail = list(n.input[7:])
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        out_name, present_k, present_v = n.output
        p = n.name or out_name
        split = {}  # query (or packed q|k|v), key and value: one piece per row
        for role, name in (("q", qkv), ("k", k_in), ("v", v_in)):
            if name:
                split[role] = [f"{p}/row{i}/{role}" for i in range(rows)]
                nodes.append(helper.make_node("Split", [name], split[role], name=f"{p}/rows/{role}/Split", axis=1,
                                              num_outputs=rows))
        off = f"{p}/row0/seqlens_offset"
        g.initializer.append(helper.make_tensor(off, TensorProto.INT32, [1], [-(rows - 1)]))
        nodes.append(helper.make_node("Add", [seqlens, off], [f"{p}/row0/seqlens"], name=f"{p}/row0/seqlens/Add"))
        outs = []
        for i in range(rows):
            if i:
                prev = outs[-1]
                nodes.append(helper.make_node("Shape", [prev], [f"{p}/row{i}/after"], name=f"{p}/row{i}/after/Shape",
                                              start=0, end=1))  # [batch] = [1]: the dependency on row i-1
                nodes.append(helper.make_node("Cast", [f"{p}/row{i}/after"], [f"{p}/row{i}/one"],
                                              name=f"{p}/row{i}/one/Cast", to=TensorProto.INT32))
                nodes.append(helper.make_node("Add", [f"{p}/row{i - 1}/seqlens", f"{p}/row{i}/one"],
                                              [f"{p}/row{i}/seqlens"], name=f"{p}/row{i}/seqlens/Add"))
            presents = (present_k, present_v) if i == rows - 1 else \
                (row_output_name(present_k, i), row_output_name(present_v, i))
            if i < rows - 1:
                extra += presents
            o = f"{p}/row{i}/output"
            nodes.append(helper.make_node(GQA, [*(split[r][i] if r in split else "" for r in "qkv"), past_k, past_v, f"{p}/row{i}/seqlens", total, *tail],
                                          [o, *presents], name=f"{p}/row{i}", domain="com.microsoft", **attrs))
            outs.append(o)
        nodes.append(helper.make_node("Concat", outs, [out_name], name=f"{p}/rows/Concat", axis=1))
    if not found:
        raise ValueError("row attention: the model has no GroupQueryAttention node")
    del g.node[:]
    g.node.extend(nodes)
    for name in extra:
        g.output.append(helper.make_empty_tensor_value_info(name))
    return out


__all__ = ["row_attention_model", "row_output_name"]
