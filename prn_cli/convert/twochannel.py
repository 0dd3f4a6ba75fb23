"""panopticapi's two-channel PNG (the panoptic segmentation paper's format, also deeplab2's default raw output):
R = category id, G = instance (0 for stuff), B ignored; R == ``--void`` (default 0) is void. One segment per
distinct (R, G), as ``converters/2channels2panoptic_coco_format.py`` makes them."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import fail
from .labels import LabelResolver
from .options import ConvertOptions
from .segments import from_class_instance

SUFFIXES = (".png",)


def from_2ch(rgb: Any, categories: Sequence[dict], options: ConvertOptions | None = None, *,
             where: Any = "2-channel prediction", resolver: LabelResolver | None = None) -> tuple[np.ndarray, list[dict]]:
    """``(ids, segments_info)`` in ``categories`` from an (H, W, >=2) array (R = category, G = instance)."""
    options = options or ConvertOptions()
    resolver = resolver or LabelResolver(categories, options.label_map_for("2ch"), options.id2label)
    if hasattr(rgb, "detach"):
        rgb = rgb.detach().cpu().numpy()
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 2:
        raise fail(where, f"has shape {tuple(rgb.shape)}, not (H, W, 2 or 3)", "save R = category, G = instance")
    classes = rgb[..., 0].astype(np.int64)
    void_label = options.void if options.void is not None else 0
    return from_class_instance(classes, rgb[..., 1].astype(np.int64), classes == void_label, resolver, where)
