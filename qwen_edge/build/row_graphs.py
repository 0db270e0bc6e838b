"""Add row-attention verify graphs (graph/row_attention.py) to a built bundle: one per pass length, listed in the
manifest's `io.verify_rows` and file table, so that the runtime's speculative decoding verifies with plain
decoding's exact logits. The graphs share the bundle's model.onnx.data (they differ only in their attention
nodes, a few dozen kilobytes each); each loaded one is an onnxruntime session with its own copy of the weights.

Not yet a `build` option: `python -m qwen_edge.build.row_graphs BUNDLE --rows 2 3 ... 9` rewrites BUNDLE's
manifest in place (it drops a signature, which no longer covers the manifest).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import onnx

from ..bundle import manifest as manifest_mod
from ..graph.row_attention import row_attention_model


def row_graph_name(rows: int) -> str:
    return f"verify_rows_{rows}.onnx"


def add_row_graphs(bundle_dir: Path, rows) -> dict[str, str]:
    """Write one verify graph per pass length in `rows` (each >= 2) and record them in the manifest."""
    bundle_dir = Path(bundle_dir)
    manifest = manifest_mod.load(bundle_dir)
    io = manifest["io"]
    model = onnx.load(str(bundle_dir / io["model_file"]), load_external_data=False)
    table = dict(io.get("verify_rows", {}))
    for n in sorted(set(int(r) for r in rows)):
        name = row_graph_name(n)
        data = row_attention_model(model, n).SerializeToString()
        (bundle_dir / name).write_bytes(data)
        manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        table[str(n)] = name
    io["verify_rows"] = table
    manifest.pop("signature", None)
    (bundle_dir / manifest_mod.MANIFEST_NAME).write_text(manifest_mod.dumps(manifest_mod.seal(manifest)), encoding="utf-8")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--rows", type=int, nargs="+", default=list(range(2, 10)))
    args = ap.parse_args()
    add_row_graphs(Path(args.bundle), args.rows)


if __name__ == "__main__":
    main()
