"""The two shapes every framework's prediction takes, turned into prn's (id map, segments_info):

- an id map with a per-id record (transformers, detectron2): :func:`from_id_map`;
- a class map and an instance map (Panoptic-DeepLab, mmdetection, panopticapi's 2-channel PNG, deeplab2,
  Cityscapes): :func:`from_class_instance`, one segment per distinct (class, instance) pair.

Both return ``(ids, segments)``: ``ids`` (H, W) uint32 with 0 = void, ``segments`` a list of
``{"id", "category_id", "iscrowd"[, "score"]}`` whose ids are exactly the non-zero ids of the map (COCO
panoptic ``segments_info`` without area and bbox, which the writer computes).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import fail
from ..panoptic import OFFSET
from .labels import LabelResolver

Segments = list[dict]


def as_2d_integer(array: Any, where: Any, what: str) -> np.ndarray:
    """A (H, W) integer array from a numpy array or tensor; a leading axis of 1 ((1, H, W), mmdetection 3.x) is
    dropped. Floats are accepted only when they hold whole numbers (transformers' ``-1``-filled no-segment map)."""
    if hasattr(array, "detach"):          # a torch tensor, without importing torch here
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.size == 0:
        raise fail(where, f"{what} has shape {tuple(array.shape)}, not (H, W)", "save the map of one image")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise fail(where, f"{what} holds non-integer values", "save the integer segment map")
        array = array.astype(np.int64)
    elif array.dtype.kind not in "iub":
        raise fail(where, f"{what} has dtype {array.dtype}, not integers", "save the integer segment map")
    return array.astype(np.int64, copy=False)


def from_id_map(id_map: np.ndarray, records: Mapping[int, dict], resolver: LabelResolver, where: Any) -> tuple[np.ndarray, Segments]:
    """``id_map`` (H, W) int: 0 or negative = void, other values are segment ids listed in ``records``
    (segment id -> ``{"label", "isthing" (or None), "score" (or None)}``). A listed id without pixels is left
    out (it holds nothing); a pixel id that is not listed is an error."""
    present = np.unique(id_map)
    present = present[present > 0]
    missing = [int(v) for v in present if int(v) not in records]
    if missing:
        raise fail(where, f"segment id {missing[0]} is in the map but not in segments_info"
                   + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                   "save the segmentation together with its own segments_info")
    ids = np.where(id_map > 0, id_map, 0)
    if present.size and int(present.max()) >= OFFSET:
        # COCO ids are 24-bit: renumber, keeping the order
        lut_keys = present
        ids = np.searchsorted(lut_keys, ids) + 1
        ids[id_map <= 0] = 0
        new_of = {int(v): k + 1 for k, v in enumerate(lut_keys)}
    else:
        new_of = {int(v): int(v) for v in present}
    segments = []
    for v in present:
        rec = records[int(v)]
        cat = resolver.category(rec["label"], where, isthing=rec.get("isthing"))
        seg = {"id": new_of[int(v)], "category_id": int(cat["id"]), "iscrowd": 0}
        if rec.get("score") is not None:
            seg["score"] = float(rec["score"])
        segments.append(seg)
    return ids.astype(np.uint32), segments


def from_class_instance(classes: np.ndarray, instances: np.ndarray, void: np.ndarray, resolver: LabelResolver,
                        where: Any, *, crowd: np.ndarray | None = None,
                        keep_ids: np.ndarray | None = None) -> tuple[np.ndarray, Segments]:
    """One segment per distinct (class, instance) pair of the non-``void`` pixels, numbered 1.. in (class,
    instance) order, or ``keep_ids`` (an (H, W) map of ids to keep, e.g. Cityscapes' own values) when given.
    ``crowd`` marks pixels whose segment is a crowd region (``iscrowd`` 1)."""
    classes = np.asarray(classes, dtype=np.int64)
    instances = np.asarray(instances, dtype=np.int64)
    keep = ~np.asarray(void, dtype=bool)
    ids = np.zeros(classes.shape, dtype=np.uint32)
    if not keep.any():
        return ids, []
    span = int(instances[keep].max()) + 1
    key = classes * span + instances
    uniq, inverse = np.unique(key[keep], return_inverse=True)
    if keep_ids is not None:
        chosen = np.zeros(len(uniq), dtype=np.int64)
        chosen[inverse] = np.asarray(keep_ids)[keep]
        new_ids = chosen
    else:
        new_ids = np.arange(1, len(uniq) + 1)
    ids[keep] = new_ids[inverse].astype(np.uint32)
    crowd_of = np.zeros(len(uniq), dtype=bool)
    if crowd is not None:
        crowd_of[inverse] = np.asarray(crowd, dtype=bool)[keep]
    segments = []
    for k, value in enumerate(uniq.tolist()):
        label = value // span
        cat = resolver.category(label, where)
        segments.append({"id": int(new_ids[k]), "category_id": int(cat["id"]), "iscrowd": int(crowd_of[k])})
    return ids, segments
