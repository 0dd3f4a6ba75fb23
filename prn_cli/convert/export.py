"""A COCO panoptic set -> one file per image in another framework's format (``prn convert --to``):

- ``2ch``: panopticapi's two-channel PNG, R = category id, G = instance (things 1.. per category, crowd
  regions 255 as in panopticapi's samples, stuff 0), B = 0, void R = 0;
- ``divisor``: ``.npy`` int32 of ``class * D + instance`` (``--label-map index|id``, things 1.., stuff 0),
  void -1 (or ``--void V``: ``V * D``), as Panoptic-DeepLab and deeplab2 read them;
- ``cityscapes``: ``<image>_instanceIds.png``, 16-bit, ``labelId * 1000 + k`` for things (k from 0 per class),
  the plain labelId for stuff and crowd regions, 0 for void (the categories must be Cityscapes labelIds).

Every file is written atomically; on an error the files of this run are removed.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import OutputExistsError, UsageError, fail
from ..io import refuse_file_as_folder, write_bytes_atomic
from ..panoptic import load_set, read_id_png
from .options import EXPORT_FORMATS, ConvertOptions


def _instance_numbers(segments: list[dict], categories: dict[int, dict], first: int, crowd: int | None) -> dict[int, int]:
    """segment id -> instance number: things first.. per category in segments_info order, stuff 0, crowd
    regions ``crowd`` when given."""
    counters: dict[int, int] = {}
    out = {}
    for s in segments:
        cat = int(s["category_id"])
        if not categories[cat].get("isthing"):
            out[s["id"]] = 0
        elif s.get("iscrowd") and crowd is not None:
            out[s["id"]] = crowd
        else:
            out[s["id"]] = counters.get(cat, first)
            counters[cat] = out[s["id"]] + 1
    return out


def _pixel_values(ids: np.ndarray, segments: list[dict], value_of: dict[int, int], void_value: int) -> np.ndarray:
    uniq, inverse = np.unique(ids, return_inverse=True)
    lut = np.array([void_value if int(u) == 0 else value_of[int(u)] for u in uniq], dtype=np.int64)
    return lut[inverse].reshape(ids.shape)


def _png_bytes(array: np.ndarray, mode: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    if mode == "I;16":
        Image.fromarray(array.astype(np.uint16)).save(buffer, format="PNG")
    else:
        Image.fromarray(array.astype(np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def encode(fmt: str, ids: np.ndarray, segments: list[dict], categories: list[dict], options: ConvertOptions,
           where) -> tuple[str, bytes]:
    """One image's (ids, segments_info) -> (file suffix, file bytes) in ``fmt``."""
    cats = {int(c["id"]): c for c in categories}
    if fmt == "2ch":
        inst = _instance_numbers(segments, cats, 1, 255)
        if any(v > 255 for v in inst.values()) or any(int(s["category_id"]) > 255 for s in segments):
            raise fail(where, "a category id or an instance number exceeds 255, which a 2-channel PNG cannot hold",
                       "use --to divisor")
        rgb = np.zeros((*ids.shape, 3), dtype=np.uint8)
        rgb[..., 0] = _pixel_values(ids, segments, {s["id"]: int(s["category_id"]) for s in segments}, 0)
        rgb[..., 1] = _pixel_values(ids, segments, inst, 0)
        return ".png", _png_bytes(rgb, "RGB")
    if fmt == "divisor":
        d = int(options.label_divisor)
        label_map = options.label_map or "index"
        if label_map not in ("index", "id"):
            raise UsageError("--to divisor takes --label-map index or id")
        index = {int(c["id"]): i for i, c in enumerate(sorted(categories, key=lambda c: int(c["id"])))}
        inst = _instance_numbers(segments, cats, 1, None)
        if inst and max(inst.values()) >= d:
            raise fail(where, f"an image has {max(inst.values())} instances of one category, not below the label "
                       f"divisor {d}", "pass a larger --label-divisor")
        value_of = {s["id"]: (index[int(s["category_id"])] if label_map == "index" else int(s["category_id"])) * d
                    + inst[s["id"]] for s in segments}
        void_value = -1 if options.void is None or options.void < 0 else int(options.void) * d
        values = _pixel_values(ids, segments, value_of, void_value)
        if values.max(initial=0) >= 2 ** 31:
            raise fail(where, "values exceed int32", "pass a smaller --label-divisor")
        buffer = io.BytesIO()
        np.save(buffer, values.astype(np.int32), allow_pickle=False)
        return ".npy", buffer.getvalue()
    # cityscapes
    from .cityscapes import cityscapes_names

    names = cityscapes_names()
    counters: dict[int, int] = {}
    value_of = {}
    for s in segments:
        cat = int(s["category_id"])
        expected = names.get(cat)
        if expected is None or expected.casefold() != str(cats[cat].get("name", "")).strip().casefold():
            raise fail(where, f"category {cat} ({cats[cat].get('name')!r}) is not a Cityscapes labelId"
                       + (f" (labelId {cat} is {expected!r})" if expected else ""),
                       "export a set whose categories are Cityscapes' labelIds (as `prn convert --from cityscapes` "
                       "or cityscapesScripts' createPanopticImgs.py without --use-train-id write them)")
        if cats[cat].get("isthing") and not s.get("iscrowd"):
            k = counters.get(cat, 0)
            counters[cat] = k + 1
            if k >= 1000:
                raise fail(where, f"more than 1000 instances of category {cat}", "Cityscapes ids cannot hold them")
            value_of[s["id"]] = cat * 1000 + k
        else:
            value_of[s["id"]] = cat
    return ".png", _png_bytes(_pixel_values(ids, segments, value_of, 0), "I;16")


@dataclass
class ExportResult:
    out_dir: Path
    written: int


def export(source: str | os.PathLike, fmt: str, out_dir: str | os.PathLike, *,
           options: ConvertOptions = ConvertOptions(), overwrite: bool = False,
           progress: Callable[[int, int], None] | None = None) -> ExportResult:
    """Write every image of the COCO panoptic set ``source`` into ``out_dir`` in ``fmt`` (one file per image,
    named by the image's stem; Cityscapes ``<stem>_instanceIds.png``)."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--to must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    pset = load_set(source)
    out = Path(out_dir)
    refuse_file_as_folder(out)
    suffix = ".npy" if fmt == "divisor" else ".png"
    targets = []
    for ann in pset.annotations:
        stem = Path(str(ann["file_name"])).stem
        if fmt == "cityscapes":
            stem = stem[: -len("_leftImg8bit")] if stem.endswith("_leftImg8bit") else stem
            stem += "_instanceIds"
        targets.append(out / f"{stem}{suffix}")
    if len(set(targets)) != len(targets):
        raise fail(pset.json_path, "two annotations have the same file stem", "give each image its own file_name")
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]} already exists; pass --overwrite to replace it or choose another --out")
    infos = pset.images_by_id
    written: list[Path] = []
    created = not out.exists()
    try:
        if progress:
            progress(0, len(targets))
        for k, (ann, target) in enumerate(zip(pset.annotations, targets), start=1):
            from ..panoptic import check_annotation

            ids = read_id_png(pset.png_path(ann))
            check_annotation(pset, ann, ids, pset.categories_by_id, check_area=False,
                             image_info=infos.get(ann["image_id"]))
            _, data = encode(fmt, ids, ann["segments_info"], pset.categories, options, pset.png_path(ann))
            write_bytes_atomic(target, data, fsync=False)
            written.append(target)
            if progress:
                progress(k, len(targets))
    except BaseException:
        for t in written:
            t.unlink(missing_ok=True)
        if created:
            try:
                out.rmdir()
            except OSError:
                pass
        raise
    return ExportResult(out, len(written))
