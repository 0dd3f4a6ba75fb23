"""Cityscapes' ``*_gtFine_instanceIds.png`` (and predictions saved the same way): a 16-bit PNG whose pixels are
``labelId * 1000 + k`` for instances (k from 0), or a plain ``labelId`` below 1000 for stuff and for crowd
regions of thing classes. As cityscapesScripts' ``createPanopticImgs.py`` does: the category id is the labelId,
labels ignored in evaluation are void, a thing class below 1000 is a crowd region (``iscrowd`` 1), and the
segment id is the pixel value itself. The default categories are Cityscapes' 19 evaluated classes."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .labels import LabelResolver
from .options import ConvertOptions
from .segments import as_2d_integer, from_class_instance

SUFFIXES = (".png",)
FILE_SUFFIXES = ("_gtFine_instanceIds", "_instanceIds")
IMAGE_SUFFIX = "_leftImg8bit"

# name, labelId, trainId, category, hasInstances, ignoreInEval, color (cityscapesscripts/helpers/labels.py)
LABELS = [
    ("unlabeled", 0, 255, "void", False, True, (0, 0, 0)),
    ("ego vehicle", 1, 255, "void", False, True, (0, 0, 0)),
    ("rectification border", 2, 255, "void", False, True, (0, 0, 0)),
    ("out of roi", 3, 255, "void", False, True, (0, 0, 0)),
    ("static", 4, 255, "void", False, True, (0, 0, 0)),
    ("dynamic", 5, 255, "void", False, True, (111, 74, 0)),
    ("ground", 6, 255, "void", False, True, (81, 0, 81)),
    ("road", 7, 0, "flat", False, False, (128, 64, 128)),
    ("sidewalk", 8, 1, "flat", False, False, (244, 35, 232)),
    ("parking", 9, 255, "flat", False, True, (250, 170, 160)),
    ("rail track", 10, 255, "flat", False, True, (230, 150, 140)),
    ("building", 11, 2, "construction", False, False, (70, 70, 70)),
    ("wall", 12, 3, "construction", False, False, (102, 102, 156)),
    ("fence", 13, 4, "construction", False, False, (190, 153, 153)),
    ("guard rail", 14, 255, "construction", False, True, (180, 165, 180)),
    ("bridge", 15, 255, "construction", False, True, (150, 100, 100)),
    ("tunnel", 16, 255, "construction", False, True, (150, 120, 90)),
    ("pole", 17, 5, "object", False, False, (153, 153, 153)),
    ("polegroup", 18, 255, "object", False, True, (153, 153, 153)),
    ("traffic light", 19, 6, "object", False, False, (250, 170, 30)),
    ("traffic sign", 20, 7, "object", False, False, (220, 220, 0)),
    ("vegetation", 21, 8, "nature", False, False, (107, 142, 35)),
    ("terrain", 22, 9, "nature", False, False, (152, 251, 152)),
    ("sky", 23, 10, "sky", False, False, (70, 130, 180)),
    ("person", 24, 11, "human", True, False, (220, 20, 60)),
    ("rider", 25, 12, "human", True, False, (255, 0, 0)),
    ("car", 26, 13, "vehicle", True, False, (0, 0, 142)),
    ("truck", 27, 14, "vehicle", True, False, (0, 0, 70)),
    ("bus", 28, 15, "vehicle", True, False, (0, 60, 100)),
    ("caravan", 29, 255, "vehicle", True, True, (0, 0, 90)),
    ("trailer", 30, 255, "vehicle", True, True, (0, 0, 110)),
    ("train", 31, 16, "vehicle", True, False, (0, 80, 100)),
    ("motorcycle", 32, 17, "vehicle", True, False, (0, 0, 230)),
    ("bicycle", 33, 18, "vehicle", True, False, (119, 11, 32)),
]
_EVALUATED = {label_id for _, label_id, _, _, _, ignored, _ in LABELS if not ignored}
_HAS_INSTANCES = {label_id for _, label_id, _, _, things, _, _ in LABELS if things}


def cityscapes_categories() -> list[dict]:
    """Cityscapes' 19 evaluated classes as COCO panoptic categories (id = labelId), as createPanopticImgs.py
    writes them."""
    return [{"id": label_id, "name": name, "supercategory": category, "isthing": int(things), "color": list(color)}
            for name, label_id, _, category, things, ignored, color in LABELS if not ignored]


def cityscapes_names() -> dict[int, str]:
    return {label_id: name for name, label_id, *_ in LABELS}


def from_cityscapes(instance_ids: Any, categories: Sequence[dict] | None = None,
                    options: ConvertOptions | None = None, *, where: Any = "Cityscapes instanceIds",
                    resolver: LabelResolver | None = None) -> tuple[np.ndarray, list[dict]]:
    """``(ids, segments_info)`` from an instanceIds map; ``categories`` default to :func:`cityscapes_categories`
    (labelIds are matched by id, or with ``label_map="name"`` by Cityscapes' class names)."""
    options = options or ConvertOptions()
    if resolver is None:
        label_map = options.label_map_for("cityscapes")
        resolver = LabelResolver(categories if categories is not None else cityscapes_categories(), label_map,
                                 options.id2label if options.id2label is not None else cityscapes_names())
    values = as_2d_integer(instance_ids, where, "instanceIds map")
    labels = np.where(values >= 1000, values // 1000, values)
    void = (values < 0) | ~np.isin(labels, sorted(_EVALUATED))
    crowd = (values < 1000) & np.isin(labels, sorted(_HAS_INSTANCES))
    return from_class_instance(labels, np.where(values >= 1000, values, 0), void, resolver, where, crowd=crowd,
                               keep_ids=values)
