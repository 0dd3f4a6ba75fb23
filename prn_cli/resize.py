"""Nearest-neighbour resizing of integer id maps in numpy (torch-free): how a segmentation made at the processing
size is written at the photo's size, and how a base map is brought to the processing size.

The geometry is that of ``prn_cli.data.resize_ids`` (sampling at output pixel centres, the same alignment as
bilinear resizing with ``align_corners=False``), so an id map and the image it labels stay aligned.
"""

from __future__ import annotations

import numpy as np


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index (n_out,) int64 of each output pixel: floor((i + 0.5) * n_in / n_out), clamped."""
    src = np.floor((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.clip(src, 0, n_in - 1, out=src)


def resize_ids(ids: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) integer map resized to ``shape`` (h, w) by nearest neighbour, in ``ids``' dtype; ids are copied,
    never blended. Memory is the output plus one row-resized copy."""
    ids = np.asarray(ids)
    h, w = int(shape[0]), int(shape[1])
    if ids.shape == (h, w):
        return ids
    rows = ids[nearest_index(ids.shape[0], h)]
    return np.ascontiguousarray(rows[:, nearest_index(ids.shape[1], w)])
