"""Other frameworks' panoptic predictions <-> prn's COCO panoptic (id map + segments_info).

One converter per format, each taking one image's prediction as the framework hands it over in Python and
returning ``(ids, segments_info)`` in prn's categories (``ids`` (H, W) uint32, 0 = void; ``segments_info``
``{"id", "category_id", "iscrowd"[, "score"]}``), which :class:`~prn_cli.predictors.Refiner` takes as it is::

    from prn_cli.convert import from_hf, ConvertOptions
    from prn_cli.predictors import Refiner

    refiner = Refiner(device="cpu")
    result = processor.post_process_panoptic_segmentation(outputs, target_sizes=[rgb.shape[:2]])[0]
    base = from_hf(result, refiner.categories, ConvertOptions(id2label=model.config.id2label))
    refined = refiner(rgb, base)

======================  =============================================================  ===================
format                  input (one image)                                              converter
======================  =============================================================  ===================
``hf``                  transformers' ``post_process_panoptic_segmentation`` dict      :func:`from_hf`
``detectron2``          ``outputs["panoptic_seg"]``: ``(ids, segments_info)`` or       :func:`from_detectron2`
                        Panoptic-DeepLab's ``(category * D + instance, None)``
``mmdet``               ``label + instance * 1000`` map (or DetInferencer's PNG)      :func:`from_mmdet`
``2ch``                 panopticapi's 2-channel array (R category, G instance)         :func:`from_2ch`
``divisor``             ``category * D + instance`` (deeplab2, Panoptic-DeepLab)       :func:`from_divisor`
``cityscapes``          ``*_instanceIds.png`` values                                   :func:`from_cityscapes`
======================  =============================================================  ===================

At set level, :func:`convert` writes a folder of prediction files as a COCO panoptic set, :class:`ConvertedBase`
converts them one image at a time for ``prn refine --base-format``, and :func:`export` writes a COCO panoptic
set in ``2ch``, ``divisor`` or ``cityscapes``. No torch is imported here (only to load ``.pt`` files).
"""

from __future__ import annotations

from .cityscapes import cityscapes_categories, from_cityscapes
from .detectron2 import from_detectron2
from .divisor import from_divisor
from .export import ExportResult, export
from .hf import from_hf
from .labels import LabelResolver, load_categories, load_id2label
from .mmdet import from_mmdet
from .options import EXPORT_FORMATS, FORMATS, LABEL_MAPS, ConvertOptions
from .run import CONVERTERS, ConvertedBase, ConvertResult, convert, convert_file
from .twochannel import from_2ch

__all__ = ["ConvertOptions", "FORMATS", "EXPORT_FORMATS", "LABEL_MAPS", "CONVERTERS", "from_hf", "from_detectron2",
           "from_mmdet", "from_2ch", "from_divisor", "from_cityscapes", "cityscapes_categories", "convert",
           "convert_file", "ConvertedBase", "ConvertResult", "export", "ExportResult", "load_categories",
           "load_id2label", "LabelResolver"]
