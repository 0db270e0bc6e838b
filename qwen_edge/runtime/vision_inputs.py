"""What the vision graph and the M-RoPE decoder need besides pixels, computed in numpy from the
images' (t, h, w) grids: the window order of merge blocks, rotary (h, w) positions, attention
window / frame ids (graph/vision.py), and the 3-D text positions (transformers' `get_rope_index`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

Grid = tuple[int, int, int]


def vision_feeds(grids: Sequence[Grid], merge: int, window_size: int, patch_size: int) -> dict[str, np.ndarray]:
    """Feeds of vision.onnx but pixel_values, for the images' patches concatenated in order."""
    unit = merge * merge
    window_index, window_ids, frame_ids, positions = [], [], [], []
    block_offset = window_offset = frame_offset = 0
    merger_window = window_size // (merge * patch_size) if window_size else 0
    for t, h, w in grids:
        lh, lw = h // merge, w // merge
        # (h, w) of each patch, in merge-block order (as the processor lays the patches out)
        hpos = np.arange(h).reshape(lh, merge, 1, 1).repeat(lw, 2).repeat(merge, 3)
        wpos = np.arange(w).reshape(1, 1, lw, merge).repeat(lh, 0).repeat(merge, 1)
        pos = np.stack([hpos.transpose(0, 2, 1, 3).reshape(-1), wpos.transpose(0, 2, 1, 3).reshape(-1)], -1)
        for frame in range(t):
            index = np.arange(lh * lw).reshape(lh, lw)
            if merger_window:
                wh, ww = -(-lh // merger_window), -(-lw // merger_window)
                windows = (np.arange(lh)[:, None] // merger_window) * ww + np.arange(lw)[None, :] // merger_window
                order = np.argsort(windows.reshape(-1), kind="stable")
                block_window = windows.reshape(-1)[order]
            else:
                order = index.reshape(-1)
                block_window = np.zeros(lh * lw, np.int64)
            window_index.append(order + block_offset)
            window_ids.append(np.repeat(block_window + window_offset, unit))
            frame_ids.append(np.full(lh * lw * unit, frame_offset, np.int64))
            positions.append(pos.reshape(lh * lw, unit, 2)[order].reshape(-1, 2))
            block_offset += lh * lw
            window_offset += (wh * ww) if merger_window else 1
            frame_offset += 1
    index = np.concatenate(window_index).astype(np.int64)
    return {"window_index": index, "reverse_index": np.argsort(index).astype(np.int64),
            "rotary_pos_ids": np.concatenate(positions).astype(np.int64),
            "window_ids": np.concatenate(window_ids).astype(np.int64),
            "frame_ids": np.concatenate(frame_ids).astype(np.int64)}


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


__all__ = ["Grid", "rope_positions", "vision_feeds"]
