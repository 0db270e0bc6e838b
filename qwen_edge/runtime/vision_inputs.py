"""The 3-D text positions of a prompt with images (transformers' `get_rope_index`), in numpy from the
images' (t, h, w) grids; the vision graph computes its own indices from the grids (graph/vision.py)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

Grid = tuple[int, int, int]


def rope_positions(ids: Sequence[int], image_token_id: int, grids: Sequence[Grid], merge: int) -> tuple[np.ndarray, int]:
    """3-D positions [3, 1, len(ids)] of one prompt, and the delta that continues them (the next
    token's position is its index + delta on all three rows), as `get_rope_index` computes them: text
    counts up; each run of image-pad tokens is one image's (t, h / merge, w / merge) grid offset by the
    position it starts at, after which text resumes at that position + max(h, w) / merge."""
    ids = np.asarray(ids, np.int64)
    out = np.zeros((3, len(ids)), np.int64)
    grids = list(grids)
    i = current = used = 0
    while i < len(ids):
        if ids[i] != image_token_id:
            out[:, i] = current
            current += 1
            i += 1
            continue
        if used >= len(grids):
            raise ValueError(f"the prompt has more image-pad runs than the {len(grids)} image(s) given")
        t, h, w = grids[used]
        used += 1
        lh, lw = h // merge, w // merge
        n = t * lh * lw
        if i + n > len(ids) or not (ids[i:i + n] == image_token_id).all():
            raise ValueError(f"image {used} needs {n} image-pad tokens in a row")
        tt, hh, ww = np.meshgrid(np.arange(t), np.arange(lh), np.arange(lw), indexing="ij")
        out[:, i:i + n] = np.stack([tt.reshape(-1), hh.reshape(-1), ww.reshape(-1)]) + current
        current += max(h, w) // merge
        i += n
    if used != len(grids):
        raise ValueError(f"{len(grids)} image(s) given, the prompt has {used} image-pad run(s)")
    delta = int(out.max()) + 1 - len(ids) if len(ids) else 0
    return out[:, None, :], delta


__all__ = ["Grid", "rope_positions"]
