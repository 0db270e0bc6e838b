"""Loading a built npu-qnn bundle onto the HTP backend (or CPU, for comparison)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import manifest as manifest_mod
from ..errors import BundleError
from .runner import StaticGeometry, StaticRunner, session_runner
from .session import cpu_session, htp_session, placement


@dataclass
class QnnBundle:
    path: Path
    manifest: dict
    runner: StaticRunner
    placement: dict
    tokenizer: object

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    @property
    def context_length(self) -> int:
        return self.runner.geo.context

    def logits(self, ids) -> np.ndarray:
        return self.runner.logits(ids)


def load_qnn_bundle(bundle_dir: Path, *, backend: str = "htp", use_context_binaries: bool = True) -> QnnBundle:
    from tokenizers import Tokenizer

    path = Path(bundle_dir)
    manifest = manifest_mod.load(path)
    if manifest["target"].get("builder") != "qnn-static":
        raise BundleError(f"{path}: not an npu-qnn bundle (target '{manifest['target']['name']}')")
    io = manifest["io"]
    files = dict(io["graphs"])
    if use_context_binaries and io.get("context_binaries"):
        files = dict(io["context_binaries"])
    sessions = {}
    for key, name in files.items():
        if not (path / name).is_file():
            raise BundleError(f"{path / name}: graph file missing")
        sessions[key] = htp_session(path / name) if backend == "htp" else cpu_session(path / name)
    if backend == "htp":
        where = {key: placement(s).to_dict() for key, s in sessions.items()}
    else:
        where = {key: {"by_provider": {"CPUExecutionProvider": "all"}} for key in sessions}
    runner = StaticRunner(StaticGeometry.from_manifest(manifest), session_runner(sessions["prefill"]),
                          session_runner(sessions["decode"]))
    try:
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception as exc:
        raise BundleError(f"{path / 'tokenizer.json'}: could not load the tokenizer: {exc}") from exc
    return QnnBundle(path, manifest, runner, where, tokenizer)
