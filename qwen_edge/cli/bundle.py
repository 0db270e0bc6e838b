"""The commands on built bundles as files: `inspect`, `keygen`, `sign`, `package`, `unpack`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .output import add_common, emit


def add_parsers(sub) -> None:
    i = sub.add_parser("inspect", help="summarise a bundle's manifest")
    i.add_argument("bundle")
    add_common(i)
    i.set_defaults(func=cmd_inspect)

    kg = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles (needs qwen-edge[sign])")
    kg.add_argument("-o", "--output", required=True, help="directory for private.pem and public.pem")
    add_common(kg)
    kg.set_defaults(func=cmd_keygen)

    sg = sub.add_parser("sign", help="sign a bundle's manifest with an Ed25519 private key (manifest.sig)")
    sg.add_argument("bundle")
    sg.add_argument("--key", required=True, help="private key PEM file")
    add_common(sg)
    sg.set_defaults(func=cmd_sign)

    pk = sub.add_parser("package", help="one reproducible .tar.gz per bundle (a bundle or a directory of them)")
    pk.add_argument("bundle")
    pk.add_argument("-o", "--output", default=".", help="directory for the archives (default: .)")
    add_common(pk)
    pk.set_defaults(func=cmd_package)

    up = sub.add_parser("unpack", help="safely extract a bundle archive and check its integrity")
    up.add_argument("archive")
    up.add_argument("-o", "--output", required=True, help="destination directory (replaced atomically)")
    add_common(up)
    up.set_defaults(func=cmd_unpack)


def _active_weight_lines(m: dict) -> list[str]:
    """Per-token figures (bundles built before they were recorded have none)."""
    w, moe = m["weights"], m["architecture"].get("moe")
    lines = []
    if moe:
        shared = f", shared expert {moe['shared_expert_intermediate_size']}" \
            if moe["shared_expert_intermediate_size"] else ""
        lines.append(f"experts:      {moe['num_experts']} x {moe['intermediate_size']} wide, top-{moe['top_k']}"
                     f"{' renormalised' if moe['norm_topk_prob'] else ''}, in {len(moe['sparse_layers'])} of "
                     f"{m['architecture']['num_layers']} layers{shared}")
    if "active_parameters" not in w:
        return lines
    return lines + [f"per token:    {w['active_parameters']:,} active of {w['parameters']:,} parameters, "
                    f"{w['bytes_read_per_token'] / 1e6:.2f} MB of weights read"]


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..bundle import manifest as manifest_mod

    m = manifest_mod.load(Path(args.bundle))
    size = sum(f["bytes"] for f in m["files"].values())
    arch = m["architecture"]
    text = "\n".join([
        f"bundle:       {args.bundle}",
        f"architecture: {m['source']['architecture']} ({arch['num_layers']} layers, hidden {arch['hidden_size']}, "
        f"{arch['num_heads']}/{arch['num_kv_heads']} heads, vocab {arch['vocab_size']})",
        f"precision:    {m['precision']['name']} (block {m['precision']['block_size']}, "
        f"{'symmetric' if m['precision']['symmetric'] else 'asymmetric'}, method {m['precision']['method']})",
        f"weights:      {m['weights']['parameters']:,} parameters, {m['weights']['bits_per_weight']:.2f} bits/weight",
    ] + _active_weight_lines(m) + [
        f"size:         {size / 1e6:.2f} MB in {len(m['files'])} files",
        f"context:      {m['io']['context_length']} tokens",
        f"target:       {m['target']['name']} ({m['target']['provider']})",
        f"built by:     qwen-edge {m['tool']['version']}",
    ] + ([f"quality:      {json.dumps(m['quality'])}"] if "quality" in m else []))
    emit(args, m | {"bundle_bytes": size}, text)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from ..bundle.signing import write_keypair

    private, public = write_keypair(Path(args.output))
    emit(args, {"private_key": str(private), "public_key": str(public)}, f"wrote {private} and {public}")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from ..bundle.signing import sign_bundle

    path = sign_bundle(Path(args.bundle), args.key)
    emit(args, {"signature": str(path)}, f"signed: {path}")
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    from ..bundle.archive import package

    archives = package(Path(args.bundle), Path(args.output))
    emit(args, {"archives": [str(a) for a in archives]}, "\n".join(str(a) for a in archives))
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    from ..bundle.archive import unpack

    bundle = unpack(Path(args.archive), Path(args.output))
    emit(args, {"bundle": str(bundle), "intact": True}, f"{bundle} (integrity checked)")
    return 0
