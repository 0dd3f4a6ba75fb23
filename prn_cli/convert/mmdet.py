"""mmdetection: panoptic maps whose pixels are ``label + instance * 1000`` (``INSTANCE_OFFSET``), stuff instance 0,
things from 1; ``label`` is contiguous (the i-th class of the dataset, COCO: categories in id order).

- raw arrays (``.npy``: 2.x ``result["pan_results"]`` or 3.x ``pred_panoptic_seg.sem_seg``, (H, W) or
  (1, H, W)): void is ``label == number of classes`` (``--void``, default the number of categories);
- ``DetInferencer``'s ``preds/<image>_panoptic_seg.png``: the same value as a COCO RGB PNG
  (``R + 256 G + 256^2 B``) with void set to 0.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .labels import LabelResolver
from .options import ConvertOptions
from .segments import as_2d_integer, from_class_instance

SUFFIXES = (".npy", ".png")
INSTANCE_OFFSET = 1000
PNG_SUFFIX = "_panoptic_seg"


def from_mmdet(pan: Any, categories: Sequence[dict], options: ConvertOptions | None = None, *,
               from_png: bool = False, where: Any = "mmdet prediction",
               resolver: LabelResolver | None = None) -> tuple[np.ndarray, list[dict]]:
    """``(ids, segments_info)`` in ``categories`` from a raw panoptic map, or (``from_png``) from the values of
    DetInferencer's PNG, where 0 is void."""
    options = options or ConvertOptions()
    resolver = resolver or LabelResolver(categories, options.label_map_for("mmdet"), options.id2label)
    values = as_2d_integer(pan, where, "panoptic map")
    labels, instances = values % INSTANCE_OFFSET, values // INSTANCE_OFFSET
    if from_png:
        void = values <= 0
    else:
        void_label = options.void if options.void is not None else len(resolver.categories)
        void = (values < 0) | (labels == void_label)
    return from_class_instance(labels, instances, void, resolver, where)
