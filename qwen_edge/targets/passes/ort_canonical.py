"""Same .ort bytes for the same model: the kernel-type table rewritten in a fixed order.

onnxruntime (1.32) writes an ORT-format file's KernelTypeStrResolver from hash maps whose order
changes from process to process (absl's tables are seeded by addresses), so two conversions of one
model differ in the first few kB of the file although every table reads back the same. It writes
that table last, so it sits at the front of the buffer with the root table, before the model (and
the model table's vtable, written just before it), which flatbuffers addresses relative to itself.
This module keeps the model's bytes as they are and writes a new front: the same kernel-type
entries, sorted, and a root table pointing at them and the model. Flatbuffers aligns relative to the
buffer's end, so the model's bytes stay valid where they are.
"""

from __future__ import annotations

import struct

# InferenceSession's fields (ort.fbs): their vtable slots
_ORT_VERSION, _MODEL, _SESSION_STATE, _KERNEL_TYPE_STR_RESOLVER = 4, 6, 8, 10
_IDENTIFIER = b"ORTM"


def _field(table, slot: int) -> int | None:
    """Absolute position of the object a table's offset field points at (None when absent)."""
    offset = table._tab.Offset(slot)
    return table._tab.Indirect(table._tab.Pos + offset) if offset else None


def _kernel_type_entries(session) -> list[tuple[bytes, list[tuple[bytes, list[tuple[int, int]]]]]]:
    resolver = session.KernelTypeStrResolver()
    entries = []
    for i in range(resolver.OpKernelTypeStrArgsLength()):
        op = resolver.OpKernelTypeStrArgs(i)
        args = []
        for j in range(op.KernelTypeStrArgsLength()):
            entry = op.KernelTypeStrArgs(j)
            args.append((entry.KernelTypeStr(), [(entry.Args(k).ArgType(), entry.Args(k).Index())
                                                 for k in range(entry.ArgsLength())]))
        entries.append((op.OpId(), sorted(args)))
    return sorted(entries)


def canonical_ort(data: bytes) -> bytes:
    """The file with its front rewritten in a fixed order; unchanged when its layout is not the one
    described above (a newer onnxruntime may write it otherwise)."""
    import flatbuffers
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
        ArgTypeAndIndex as A,
        InferenceSession as S,
        KernelTypeStrArgsEntry as K,
        KernelTypeStrResolver as R,
        OpIdKernelTypeStrArgsEntry as O,
    )

    if len(data) < 8 or data[4:8] != _IDENTIFIER or len(data) % 8:
        return data
    session = S.InferenceSession.GetRootAs(data, 0)
    root = struct.unpack_from("<I", data, 0)[0]
    version, model, resolver = (_field(session, s) for s in (_ORT_VERSION, _MODEL, _KERNEL_TYPE_STR_RESOLVER))
    if None in (version, model, resolver) or _field(session, _SESSION_STATE) is not None \
            or not root < model <= version or not resolver < model:
        return data
    start = min(model, model - struct.unpack_from("<i", data, model)[0])  # the model table's vtable
    if not resolver < start:
        return data
    entries = _kernel_type_entries(session)
    tail = data[start:]
    builder = flatbuffers.Builder(len(tail) + 16 * 1024)
    builder.head -= len(tail)  # the model (and the version string after it) at the buffer's end, unchanged
    builder.Bytes[builder.head:builder.head + len(tail)] = tail
    builder.minalign = 8
    end = len(data)  # builder offsets count from the buffer's end

    def table_vector(start_vector, offsets: list[int]) -> int:
        start_vector(builder, len(offsets))
        for off in reversed(offsets):
            builder.PrependUOffsetTRelative(off)
        return builder.EndVector()

    ops = []
    for op_id, args in entries:
        kernel_entries = []
        for kernel_type_str, pairs in args:
            pair_offsets = []
            for arg_type, index in pairs:
                A.ArgTypeAndIndexStart(builder)
                A.ArgTypeAndIndexAddArgType(builder, arg_type)
                A.ArgTypeAndIndexAddIndex(builder, index)
                pair_offsets.append(A.ArgTypeAndIndexEnd(builder))
            vector = table_vector(K.KernelTypeStrArgsEntryStartArgsVector, pair_offsets)
            name = builder.CreateString(kernel_type_str)
            K.KernelTypeStrArgsEntryStart(builder)
            K.KernelTypeStrArgsEntryAddKernelTypeStr(builder, name)
            K.KernelTypeStrArgsEntryAddArgs(builder, vector)
            kernel_entries.append(K.KernelTypeStrArgsEntryEnd(builder))
        vector = table_vector(O.OpIdKernelTypeStrArgsEntryStartKernelTypeStrArgsVector, kernel_entries)
        name = builder.CreateString(op_id)
        O.OpIdKernelTypeStrArgsEntryStart(builder)
        O.OpIdKernelTypeStrArgsEntryAddOpId(builder, name)
        O.OpIdKernelTypeStrArgsEntryAddKernelTypeStrArgs(builder, vector)
        ops.append(O.OpIdKernelTypeStrArgsEntryEnd(builder))
    vector = table_vector(R.KernelTypeStrResolverStartOpKernelTypeStrArgsVector, ops)  # sorted by op id: a key
    R.KernelTypeStrResolverStart(builder)
    R.KernelTypeStrResolverAddOpKernelTypeStrArgs(builder, vector)
    new_resolver = R.KernelTypeStrResolverEnd(builder)
    S.InferenceSessionStart(builder)
    S.InferenceSessionAddOrtVersion(builder, end - version)
    S.InferenceSessionAddModel(builder, end - model)
    S.InferenceSessionAddKernelTypeStrResolver(builder, new_resolver)
    builder.Finish(S.InferenceSessionEnd(builder), file_identifier=_IDENTIFIER)
    return bytes(builder.Output())
