"""What a conversion needs besides the prediction itself: one typed options object shared by every format, the
set-level converter and the ``prn convert`` / ``prn refine --base-format`` flags (one name per concept)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

#: Formats ``prn convert --from`` reads (``coco`` is prn's own: only ``prn refine --base-format`` takes it).
FORMATS = ("hf", "detectron2", "mmdet", "2ch", "divisor", "cityscapes")
#: Formats ``prn convert --to`` writes from a COCO panoptic set.
EXPORT_FORMATS = ("2ch", "divisor", "cityscapes")

#: How a prediction's class label becomes a category of CATS:
#:  - ``index``: label i is the i-th category of CATS in id order (detectron2's and mmdetection's contiguous ids);
#:  - ``id``: the label is the category id itself (DETR, panopticapi's 2-channel PNG, deeplab2's eval ids);
#:  - ``name``: the label's name in ``id2label`` matches a category's name (transformers' ``config.id2label``);
#:  - ``separated``: detectron2's PanopticFPN "separated" metadata: thing label i is the i-th thing category,
#:    stuff label j (from 1; 0 means "things") the j-th stuff category; segments_info's ``isthing`` decides.
LABEL_MAPS = ("index", "id", "name", "separated")

#: The label map each format uses when none is given.
DEFAULT_LABEL_MAP = {"hf": "name", "detectron2": "index", "mmdet": "index", "2ch": "id", "divisor": "index",
                     "cityscapes": "id"}

Id2Label = Union[Mapping[int, str], Sequence[str]]


@dataclass
class ConvertOptions:
    """Options of every converter; a format reads the ones that concern it.

    ``label_map`` None = the format's default (:data:`DEFAULT_LABEL_MAP`). ``id2label``: label -> class name
    (a dict, a list, or a path to a ``{"0": "name"}`` JSON / transformers ``config.json`` / JSON list), needed
    by ``label_map="name"``. ``label_divisor``: the D of ``category * D + instance`` (``divisor`` and
    detectron2's ``(tensor, None)`` form). ``void``: the class label that means "no segment" (``divisor`` and
    ``2ch``: default -1 resp. 0; ``mmdet`` raw arrays: default the number of categories); negative values are
    always void. ``images_json``: a COCO JSON whose ``images`` give image ids, file names and sizes.
    """

    label_map: str | None = None
    id2label: Id2Label | str | None = None
    label_divisor: int = 1000
    void: int | None = None
    images_json: str | None = None

    def __post_init__(self) -> None:
        from ..errors import UsageError

        if self.label_map is not None and self.label_map not in LABEL_MAPS:
            raise UsageError(f"--label-map must be one of {', '.join(LABEL_MAPS)}, got {self.label_map!r}")
        if int(self.label_divisor) < 1:
            raise UsageError(f"--label-divisor must be at least 1, got {self.label_divisor}")

    def label_map_for(self, fmt: str) -> str:
        return self.label_map or DEFAULT_LABEL_MAP[fmt]
