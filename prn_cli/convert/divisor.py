"""``category * D + instance`` maps, as Panoptic-DeepLab and deeplab2 save them (``.npy``, or a 16-bit PNG):
``--label-divisor D`` (Panoptic-DeepLab and Cityscapes 1000, deeplab2 COCO 256), ``--void V`` (the class that
means void, e.g. deeplab2's ignore label 255; negative values are always void), ``--label-map index|id``
(contiguous labels, or category ids as deeplab2's eval ids)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .labels import LabelResolver
from .options import ConvertOptions
from .segments import as_2d_integer, from_class_instance

SUFFIXES = (".npy", ".png")


def from_divisor(values: Any, categories: Sequence[dict], options: ConvertOptions | None = None, *,
                 where: Any = "divisor prediction", resolver: LabelResolver | None = None) -> tuple[np.ndarray, list[dict]]:
    """``(ids, segments_info)`` in ``categories`` from an (H, W) ``category * D + instance`` map."""
    options = options or ConvertOptions()
    resolver = resolver or LabelResolver(categories, options.label_map_for("divisor"), options.id2label)
    values = as_2d_integer(values, where, "panoptic map")
    divisor = int(options.label_divisor)
    classes, instances = values // divisor, values % divisor
    void = values < 0
    if options.void is not None:
        void |= classes == options.void
    return from_class_instance(classes, instances, void, resolver, where)
