"""detectron2: ``outputs["panoptic_seg"]`` saved with ``torch.save`` (PanopticFPN, Mask2Former, Panoptic-DeepLab).

- ``(pred, segments_info)``: ``pred`` (H, W) int ids, 0 = void; each ``segments_info`` record has ``id``,
  ``isthing`` and a contiguous ``category_id`` (``--label-map index``: the i-th category of CATS in id order,
  detectron2's standard COCO panoptic metadata; ``separated``: PanopticFPN's separated thing/stuff labels).
  ``isthing`` is checked against the category, which catches a wrong label map.
- ``(pred, None)`` (Panoptic-DeepLab): ``pred = category * label_divisor + instance``, -1 = void, stuff
  instance 0, things from 1. Contiguous class 0 stuff gives value 0, which is not void.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from ..errors import fail
from .hf import load_torch
from .labels import LabelResolver
from .options import ConvertOptions
from .segments import as_2d_integer, from_class_instance, from_id_map

SUFFIXES = (".pt",)


def from_detectron2(panoptic_seg: Any, categories: Sequence[dict], options: ConvertOptions | None = None, *,
                    where: Any = "detectron2 prediction",
                    resolver: LabelResolver | None = None) -> tuple[np.ndarray, list[dict]]:
    """``(ids, segments_info)`` in ``categories`` from ``outputs["panoptic_seg"]`` (a pair ``(pred,
    segments_info)`` or ``(pred, None)``)."""
    options = options or ConvertOptions()
    resolver = resolver or LabelResolver(categories, options.label_map_for("detectron2"), options.id2label)
    if not isinstance(panoptic_seg, (tuple, list)) or len(panoptic_seg) != 2:
        raise fail(where, "is not detectron2's panoptic_seg pair (pred, segments_info)",
                   "save outputs['panoptic_seg'] as it is, e.g. torch.save(outputs['panoptic_seg'], path)")
    pred, infos = panoptic_seg
    pred = as_2d_integer(pred, where, "panoptic_seg's map")
    if infos is None:
        divisor = int(options.label_divisor)
        void = pred < 0
        return from_class_instance(pred // divisor, pred % divisor, void, resolver, where)
    if not isinstance(infos, (list, tuple)):
        raise fail(where, "segments_info is neither a list nor None", "save outputs['panoptic_seg'] unchanged")
    records: dict[int, dict] = {}
    for i, info in enumerate(infos):
        if not isinstance(info, dict) or "id" not in info or "category_id" not in info:
            raise fail(where, f"segments_info[{i}] lacks 'id' or 'category_id'", "save outputs['panoptic_seg'] "
                       "unchanged")
        sid = int(info["id"])
        if sid in records:
            raise fail(where, f"segment id {sid} is listed twice in segments_info", "give each segment one record")
        isthing = info.get("isthing")
        records[sid] = {"label": int(info["category_id"]),
                        "isthing": None if isthing is None else bool(isthing), "score": info.get("score")}
    return from_id_map(pred, records, resolver, where)


def read_detectron2(path: str | os.PathLike) -> Any:
    from pathlib import Path

    return load_torch(Path(path), "detectron2 panoptic_seg")
