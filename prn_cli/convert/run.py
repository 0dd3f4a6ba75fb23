"""Set level: a folder of one framework's prediction files -> a COCO panoptic set (``prn convert --from``), the
same conversion in memory for ``prn refine --base-format`` (:class:`ConvertedBase`), and a COCO panoptic set ->
files of another format (``prn convert --to``, in :mod:`.export`).

Nothing is half-written: the PNGs go first and the JSON last (``PanopticWriter``), and when a file turns out
inconsistent midway, the PNGs already written are removed before the one-line error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InvalidInputError, UsageError, fail
from ..panoptic import PanopticWriter, read_json, rgb2id, set_paths
from . import cityscapes, detectron2, divisor, hf, mmdet, twochannel
from .arrays import read_npy, read_png_values
from .labels import LabelResolver, load_categories
from .options import FORMATS, ConvertOptions

#: format -> the converter of one image's prediction (the in-memory API)
CONVERTERS: dict[str, Callable] = {
    "hf": hf.from_hf,
    "detectron2": detectron2.from_detectron2,
    "mmdet": mmdet.from_mmdet,
    "2ch": twochannel.from_2ch,
    "divisor": divisor.from_divisor,
    "cityscapes": cityscapes.from_cityscapes,
}

#: format -> file suffixes it reads
SUFFIXES = {"hf": hf.SUFFIXES, "detectron2": detectron2.SUFFIXES, "mmdet": mmdet.SUFFIXES,
            "2ch": twochannel.SUFFIXES, "divisor": divisor.SUFFIXES, "cityscapes": cityscapes.SUFFIXES}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def load_file(fmt: str, path: Path) -> tuple[Any, dict]:
    """One prediction file -> (the object its converter takes, extra keyword arguments)."""
    suffix = path.suffix.lower()
    if fmt in ("hf", "detectron2"):
        return hf.load_torch(path, "transformers result" if fmt == "hf" else "detectron2 panoptic_seg"), {}
    if fmt == "mmdet":
        if suffix == ".npy":
            return read_npy(path), {}
        return rgb2id(read_png_values(path, channels="rgb")).astype(np.int64), {"from_png": True}
    if fmt == "2ch":
        return read_png_values(path, channels="rgb"), {}
    if fmt == "divisor":
        return (read_npy(path) if suffix == ".npy" else read_png_values(path, channels="grey")), {}
    return read_png_values(path, channels="grey"), {}


def image_stem(fmt: str, path: Path) -> str:
    """The image a prediction file belongs to, from its name (``x_panoptic_seg.png`` and
    ``x_gtFine_instanceIds.png`` name image ``x``)."""
    stem = path.stem
    endings = {"mmdet": (mmdet.PNG_SUFFIX,), "cityscapes": cityscapes.FILE_SUFFIXES}.get(fmt, ())
    for ending in endings:
        if stem.endswith(ending) and len(stem) > len(ending):
            return stem[: -len(ending)]
    return stem


def list_prediction_files(fmt: str, source: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(image stem, file)`` for a file, or for every file of the format in a folder (Cityscapes: its city
    subfolders too), sorted by stem; two files for one image are an error."""
    source = Path(source)
    suffixes = SUFFIXES[fmt]
    if source.is_file():
        files = [source]
    elif source.is_dir():
        pattern = "**/*" if fmt == "cityscapes" else "*"
        files = sorted(p for p in source.glob(pattern) if p.is_file() and p.suffix.lower() in suffixes)
        if fmt == "cityscapes":
            files = [p for p in files if image_stem(fmt, p) != p.stem] or files
    else:
        raise fail(source, "no such file or folder", f"pass a {fmt} prediction file or a folder of them")
    if not files:
        raise fail(source, f"holds no {fmt} prediction files ({'/'.join(suffixes)})",
                   "pass the folder of the model's saved predictions, or check --from")
    seen: dict[str, Path] = {}
    for f in files:
        stem = image_stem(fmt, f)
        other = seen.setdefault(stem, f)
        if other != f:
            raise fail(f, f"belongs to the same image ({stem}) as {other}", "keep one prediction file per image")
    return sorted(seen.items())


def image_records(fmt: str, stems: Sequence[str], images_json: str | None) -> list[dict]:
    """COCO image records for the predictions: from ``images_json`` (matched by file stem; ``width``/``height``
    are checked against each map), else ids from numeric stems (COCO's naming), Cityscapes' ``<city>_<seq>_<frame>``
    string ids, or 1.. in order."""
    if images_json:
        data = read_json(Path(images_json), what="images JSON")
        records = data.get("images") if isinstance(data, dict) else None
        if not isinstance(records, list):
            raise fail(images_json, "has no 'images' list", "pass a COCO JSON such as the ground truth")
        by_stem = {}
        for r in records:
            if isinstance(r, dict) and "id" in r and "file_name" in r:
                stem = Path(str(r["file_name"])).stem
                by_stem[stem] = r
                if fmt == "cityscapes" and stem.endswith(cityscapes.IMAGE_SUFFIX):
                    by_stem[stem[: -len(cityscapes.IMAGE_SUFFIX)]] = r
        out = []
        for stem in stems:
            r = by_stem.get(stem)
            if r is None:
                raise fail(images_json, f"has no image record for {stem}", "pass the JSON whose 'images' list the "
                           "predicted images, or leave out --images-json")
            out.append(dict(r))
        return out
    if fmt == "cityscapes":
        return [{"id": s, "file_name": f"{s}{cityscapes.IMAGE_SUFFIX}.png"} for s in stems]
    if stems and all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [{"id": int(s), "file_name": f"{s}.jpg"} for s in stems]
    return [{"id": k, "file_name": f"{s}.jpg"} for k, s in enumerate(stems, start=1)]


def check_size(ids: np.ndarray, record: dict, path: Path, images_json: str | None) -> None:
    if "width" in record and "height" in record and ids.shape != (record["height"], record["width"]):
        raise fail(path, f"map is {ids.shape[1]}x{ids.shape[0]} but {images_json or 'its image record'} says image "
                   f"{record['id']} is {record['width']}x{record['height']}",
                   "save the prediction at the image's size (e.g. target_sizes in transformers)")


def make_resolver(fmt: str, categories: list[dict], options: ConvertOptions) -> LabelResolver:
    if fmt == "cityscapes" and options.label_map_for(fmt) == "name" and options.id2label is None:
        return LabelResolver(categories, "name", cityscapes.cityscapes_names())
    return LabelResolver(categories, options.label_map_for(fmt), options.id2label)


def convert_file(fmt: str, path: Path, categories: list[dict], options: ConvertOptions,
                 resolver: LabelResolver | None = None) -> tuple[np.ndarray, list[dict]]:
    """One prediction file -> ``(ids, segments_info)`` in ``categories``."""
    obj, extra = load_file(fmt, path)
    resolver = resolver or make_resolver(fmt, categories, options)
    return CONVERTERS[fmt](obj, categories, options, where=path, resolver=resolver, **extra)


def default_categories(fmt: str, categories) -> list[dict]:
    """CATS as given (a JSON path or a list); ``"cityscapes"`` (no such file) or, for ``--from cityscapes``,
    nothing: Cityscapes' 19 evaluated classes, whose id order is the trainId order (Panoptic-DeepLab's labels)."""
    named_cityscapes = isinstance(categories, (str, os.PathLike)) and str(categories) == "cityscapes" \
        and not Path(categories).exists()
    if named_cityscapes or (categories is None and fmt == "cityscapes"):
        return cityscapes.cityscapes_categories()
    if categories is None:
        raise UsageError(f"--from {fmt} needs --categories CATS (a panoptic JSON such as the ground truth, or a JSON "
                         "list of categories)")
    return load_categories(categories)


@dataclass
class ConvertResult:
    json_path: Path
    written: int
    segments: int


def convert(source: str | os.PathLike, fmt: str, out_dir: str | os.PathLike, *,
            categories: str | os.PathLike | Sequence[dict] | None, options: ConvertOptions = ConvertOptions(),
            overwrite: bool = False, progress: Callable[[int, int], None] | None = None) -> ConvertResult:
    """Convert the ``fmt`` predictions in ``source`` (a file or a folder) into the COCO panoptic set ``out_dir``
    (panoptic.json + panoptic/) with the categories ``categories`` (Cityscapes: its own when None)."""
    check_format(fmt)
    cats = default_categories(fmt, categories)
    resolver = make_resolver(fmt, cats, options)
    files = list_prediction_files(fmt, source)
    records = image_records(fmt, [s for s, _ in files], options.images_json)
    json_path, png_dir = set_paths(out_dir)
    created = [p for p in (Path(out_dir), png_dir) if not p.exists()]
    writer = PanopticWriter(json_path, png_dir, cats, overwrite=overwrite,
                            info={"description": f"prn convert --from {fmt}", "source": str(source)})
    segments = 0
    try:
        if progress:
            progress(0, len(files))
        for k, ((stem, path), record) in enumerate(zip(files, records), start=1):
            ids, segs = convert_file(fmt, path, cats, options, resolver)
            check_size(ids, record, path, options.images_json)
            image = {**record, "height": int(ids.shape[0]), "width": int(ids.shape[1])}
            writer.add(image, ids, segs, file_name=f"{Path(str(record['file_name'])).stem}.png")
            segments += len(segs)
            if progress:
                progress(k, len(files))
    except BaseException:
        for ann in writer.annotations:      # nothing half-written: no JSON, and no PNGs of this run
            (png_dir / ann["file_name"]).unlink(missing_ok=True)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    writer.commit()
    return ConvertResult(json_path, len(files), segments)


class ConvertedBase:
    """A folder of ``fmt`` predictions seen as a base set by ``prn refine``, converted one image at a time in
    memory (no set on disk). It has what refine reads of a :class:`~prn_cli.panoptic.PanopticSet`
    (``json_path``, ``png_dir``, ``categories``, ``images``, ``annotations``, ``images_by_id``); an annotation's
    ``segments_info`` is None until :meth:`read` converts its file."""

    def __init__(self, source: str | os.PathLike, fmt: str, categories: str | os.PathLike | Sequence[dict] | None,
                 options: ConvertOptions = ConvertOptions()):
        check_format(fmt)
        self.format = fmt
        self.options = options
        self.categories = default_categories(fmt, categories)
        self.resolver = make_resolver(fmt, self.categories, options)
        files = list_prediction_files(fmt, source)
        self.json_path = Path(source)
        self.png_dir = Path(source) if Path(source).is_dir() else Path(source).parent
        self.images = image_records(fmt, [s for s, _ in files], options.images_json)
        self._files: dict[str, Path] = {}
        self.annotations = []
        for (stem, path), record in zip(files, self.images):
            name = f"{Path(str(record['file_name'])).stem}.png"
            self._files[name] = path
            self.annotations.append({"image_id": record["id"], "file_name": name, "segments_info": None})
        self.extra: dict = {}

    @property
    def images_by_id(self) -> dict:
        return {im["id"]: im for im in self.images}

    def source_path(self, annotation: dict) -> Path:
        return self._files[annotation["file_name"]]

    def read(self, annotation: dict) -> tuple[Path, np.ndarray, list[dict]]:
        """``(prediction file, ids, segments_info)`` of one annotation, converted now."""
        path = self.source_path(annotation)
        ids, segs = convert_file(self.format, path, self.categories, self.options, self.resolver)
        record = self.images_by_id.get(annotation["image_id"], {})
        check_size(ids, record, path, self.options.images_json)
        return path, ids, segs


__all__ = ["CONVERTERS", "convert", "convert_file", "ConvertedBase", "ConvertResult", "InvalidInputError"]
