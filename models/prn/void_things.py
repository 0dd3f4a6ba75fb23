"""Things left void: find them where PRN reads a thing and its thing classifier names it.

A base model's fusion leaves void where its semantic head sees a thing that no detection covers, and a base can
miss an instance outright, giving its pixels to the stuff around it or to void. PRN's semantic head reads the image
and often still says "a thing" there, but no centre groups those pixels (the foreground branch follows the base's
foreground, which is empty there), so PRN's post-processing leaves them void. :func:`void_thing_regions` gives the
connected regions of pixels that the refined map leaves void and that PRN's semantic argmax gives to a thing class;
the predictor (``prn_cli.predictors.Refiner``) lets the thing classifier read each region as a thing mask and keeps
the regions it names with confidence (``PostProcessConfig.void_thing_confidence``). A region is taken as one
thing: where the base missed an instance, the void is that instance's shape.

numpy only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["connected_regions", "void_thing_regions"]


def connected_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """``(labels, count)``: the 4-connected regions of the (H, W) bool ``mask``, labelled 1..count in raster order
    of their first pixel (int32, 0 outside the mask).

    Vectorised union-find: every round hooks the larger root of each edge whose ends have different roots onto
    the smaller one, then compresses every pointer to its root; a few rounds suffice (about log of the longest
    region), each a handful of numpy operations over the mask's pixels.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    h, w = mask.shape
    labels = np.zeros((h, w), np.int32)
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return labels, 0
    position = np.full(h * w, -1, np.int64)
    position[flat] = np.arange(flat.size)
    right = (mask[:, :-1] & mask[:, 1:]).ravel()
    down = (mask[:-1, :] & mask[1:, :]).ravel()
    cols = np.arange(h * (w - 1))
    a_right = (cols // (w - 1)) * w + cols % (w - 1)
    a_down = np.arange((h - 1) * w)
    a = np.concatenate([a_right[right], a_down[down]])
    b = np.concatenate([a_right[right] + 1, a_down[down] + w])
    u, v = position[a], position[b]
    parent = np.arange(flat.size)
    while True:
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not differ.any():
            break
        low, high = np.minimum(pu[differ], pv[differ]), np.maximum(pu[differ], pv[differ])
        np.minimum.at(parent, high, low)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    # roots are each region's smallest pixel position, i.e. its first pixel in raster order
    _, dense = np.unique(parent, return_inverse=True)
    labels.ravel()[flat] = dense.astype(np.int32) + 1
    return labels, int(dense.max()) + 1


def void_thing_regions(refined_void: np.ndarray, thing_argmax: np.ndarray,
                       min_area: int) -> tuple[np.ndarray, list[int]]:
    """``(labels, kept)``: the connected regions (:func:`connected_regions`) of the pixels void in the refined map
    (``refined_void``) where PRN's semantic argmax is a thing class (``thing_argmax``), both (H, W) bool, and the
    labels of those with at least ``min_area`` pixels."""
    if refined_void.shape != thing_argmax.shape:
        raise ValueError(f"the masks must have one shape, got {refined_void.shape} and {thing_argmax.shape}")
    labels, count = connected_regions(refined_void & thing_argmax)
    if not count:
        return labels, []
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    return labels, [int(k) for k in np.flatnonzero(areas >= max(1, int(min_area))) if k > 0]
