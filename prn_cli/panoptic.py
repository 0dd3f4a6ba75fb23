"""The COCO panoptic format: the contract between every prn command.

A *panoptic set* is one JSON (``images``, ``annotations``, ``categories``) plus a folder of PNGs. Each
PNG pixel (R, G, B) encodes a segment id ``R + 256*G + 256**2*B``; id 0 is void. Every non-zero id in a PNG
appears once in its annotation's ``segments_info`` and vice versa.

On the command line one path names a whole set (see :func:`resolve_set`):

- ``annotations/panoptic_val2017.json`` -> its PNG folder is ``annotations/panoptic_val2017/`` (COCO layout);
- a folder ``DIR`` that prn wrote with ``--out DIR`` -> ``DIR/panoptic.json`` + ``DIR/panoptic/``;
- a dataset root made by ``prn synth`` -> its single ``annotations/panoptic_<split>.json``.

Writing is atomic at the set level (:class:`PanopticWriter`): PNGs first, each through a temporary file and a
rename, the JSON last, so an interrupted run never leaves a JSON that names missing PNGs.

This module needs numpy and Pillow only (no torch), so commands built on it start fast.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .errors import InvalidInputError, fail
from .io import prepare_output_dir, refuse_file_as_folder, write_json_atomic, write_png_atomic

VOID = 0
#: Largest encodable id + 1 (ids are 24-bit).
OFFSET = 256 ** 3
SET_JSON_NAME = "panoptic.json"
SET_PNG_DIRNAME = "panoptic"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}


# --------------------------------------------------------------------------------------------------------------
# ids <-> RGB


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint32 ids, ``R + 256*G + 256**2*B``."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"rgb2id expects an (H, W, 3) array, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        rgb = rgb.astype(np.uint8)
    return _pack_pixels(rgb[..., :3] if rgb.shape[2] > 3 else rgb)


def _pack_pixels(pixels: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 with C = 3 or 4 -> (H, W) uint32 ids from the first three bytes of each pixel.

    Each pixel's 4 bytes starting at its R are read as one little-endian word (an unaligned strided view, no
    copy) and masked to 24 bits: one pass over the pixels, several times faster than widening and shifting
    three channels. With 3 channels the last pixel's word would read past the end, so it is packed on its own.
    """
    h, w, channels = pixels.shape
    n = h * w
    out = np.empty(n, dtype=np.uint32)
    if n == 0:
        return out.reshape(h, w)
    flat = np.ascontiguousarray(pixels).reshape(-1)
    whole = n if channels == 4 else n - 1
    if whole:
        words = np.lib.stride_tricks.as_strided(flat[:4].view("<u4"), shape=(whole,), strides=(channels,))
        np.bitwise_and(words, np.uint32(0xFFFFFF), out=out[:whole])
    if whole < n:
        r, g, b = (int(v) for v in flat[-3:])
        out[-1] = r + (g << 8) + (b << 16)
    return out.reshape(h, w)


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) integer ids -> (H, W, 3) uint8 RGB. Ids must lie in [0, 256**3)."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= OFFSET):
        raise ValueError(f"segment ids must lie in [0, {OFFSET}), got [{ids.min()}, {ids.max()}]")
    packed = np.ascontiguousarray(ids, dtype="<u4")
    return packed.view(np.uint8).reshape(*ids.shape, 4)[..., :3].copy()


# --------------------------------------------------------------------------------------------------------------
# reading PNGs


def _png_header(path: Path, head: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, color type) from a PNG's IHDR, or None when ``head`` is not a PNG."""
    if len(head) < 29 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width = int.from_bytes(head[16:20], "big")
    height = int.from_bytes(head[20:24], "big")
    return width, height, head[24], head[25]


#: PNG decoders in the order :func:`png_decoder` prefers them, and the module each needs.
PNG_DECODERS = {"wuffs": "pywuffs", "pyspng": "pyspng", "pillow": "PIL"}
_available_modules: dict[str, bool] = {}


def _module_available(name: str) -> bool:
    if name not in _available_modules:
        try:
            importlib.import_module(name)
        except ImportError:
            _available_modules[name] = False
        else:
            _available_modules[name] = True
    return _available_modules[name]


def png_decoder() -> str:
    """The PNG decoder :func:`read_id_png` uses: the first installed of ``"wuffs"`` (Wuffs, through the optional
    ``pywuffs``: ``pip install "prn[fast]"``), ``"pyspng"`` (libspng, a base dependency) and ``"pillow"``.

    ``PRN_PNG_DECODER=wuffs|pyspng|pillow`` asks for one; a missing one falls back down the same list. All give
    the same ids and the same errors. On prn's and COCO's panoptic PNGs Wuffs decodes in about half of libspng's
    time and libspng in about half of Pillow's (``benchmarks/bench_eval.py`` measures them); decoding is most of
    what ``prn eval`` does.
    """
    wanted = os.environ.get("PRN_PNG_DECODER", "").strip().lower()
    names = list(PNG_DECODERS)
    if wanted:
        if wanted not in PNG_DECODERS:
            raise ValueError(f"PRN_PNG_DECODER must be one of {', '.join(names)}, not {wanted!r}")
        names = names[names.index(wanted):]
    for name in names[:-1]:
        if _module_available(PNG_DECODERS[name]):
            return name
    return "pillow"


_wuffs_state = threading.local()


def _decode_wuffs(data: bytes) -> np.ndarray:
    """(H, W, 4) RGBA: 4 bytes a pixel, so the ids are one aligned 32-bit word each (see :func:`_pack_pixels`)."""
    decoder = getattr(_wuffs_state, "decoder", None)
    if decoder is None:  # one per thread: a Wuffs decoder keeps state between images
        from pywuffs import ImageDecoderType, PixelFormat, aux

        config = aux.ImageDecoderConfig()
        config.enabled_decoders = [ImageDecoderType.PNG]
        config.pixel_format = PixelFormat.RGBA_NONPREMUL
        decoder = _wuffs_state.decoder = aux.ImageDecoder(config)
    result = decoder.decode(data)
    if result.error_message:
        raise ValueError(result.error_message)
    return result.pixbuf


def _decode_pyspng(data: bytes) -> np.ndarray:
    import pyspng

    return pyspng.load(data)


def _decode_pillow(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img)


_DECODE = {"wuffs": _decode_wuffs, "pyspng": _decode_pyspng, "pillow": _decode_pillow}


def read_id_png(path: str | os.PathLike, *, what: str = "panoptic PNG") -> np.ndarray:
    """Read a panoptic PNG into (H, W) uint32 segment ids, refusing anything that is not 8-bit RGB.

    Palette, grayscale, 16-bit and JPEG files cannot hold ids faithfully, so they are errors that say why,
    instead of the reference evaluator's numpy crash. RGBA is accepted only when its alpha is opaque
    everywhere (the alpha channel carries no id bits). The decoder is :func:`png_decoder`'s.
    """
    from PIL import UnidentifiedImageError

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise fail(path, f"{what} is missing", "check the annotation's file_name and the PNG folder") from None
    except IsADirectoryError:
        raise fail(path, f"{what} is a directory, not a file", "check the annotation's file_name") from None
    except OSError as exc:
        raise fail(path, f"{what} cannot be read ({exc.__class__.__name__}: {exc})",
                   "check the file's permissions") from None
    header = _png_header(path, data[:33])
    if header is None:
        if data[:3] == b"\xff\xd8\xff":
            raise fail(path, f"{what} is a JPEG file, not a PNG: lossy saving has corrupted its segment ids",
                       "export the ids again as lossless 8-bit RGB PNG")
        raise fail(path, f"{what} is not a PNG file (bad signature)",
                   "export the ids as 8-bit RGB PNG (id = R + 256*G + 256^2*B)")
    _, _, depth, color_type = header
    if color_type not in (2, 6) or depth != 8:
        kind = _PNG_COLOR_TYPES.get(color_type, f"color type {color_type}")
        hint = ("ids above 255 cannot be stored and a lossy or palette saving may have corrupted them"
                if color_type in (0, 3, 4) else "ids are stored in 8-bit R, G, B only")
        raise fail(path, f"{what} is {depth}-bit {kind}, not 8-bit RGB ({hint})",
                   "save the ids as 8-bit RGB PNG with id = R + 256*G + 256^2*B")
    decode = _DECODE[png_decoder()]
    try:
        pixels = decode(data)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError) as exc:
        raise fail(path, f"{what} cannot be decoded ({exc.__class__.__name__}: {exc})",
                   "the file is corrupt or truncated; write it again") from None
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or pixels.dtype != np.uint8:
        raise fail(path, f"{what} decoded as {pixels.dtype} with shape {pixels.shape}, not 8-bit RGB",
                   "save it as 8-bit RGB PNG")
    # Only an RGBA file's own alpha counts: Wuffs always gives 4 channels, with an RGB file's tRNS applied
    if color_type == 6 and pixels.shape[2] == 4 and not (pixels[..., 3] == 255).all():
        raise fail(path, f"{what} is RGBA with data in its alpha channel (ids use R, G, B only)",
                   "save it as 8-bit RGB PNG without alpha")
    return _pack_pixels(pixels)


def write_id_png(path: str | os.PathLike, ids: np.ndarray) -> None:
    """Write (H, W) ids as an 8-bit RGB PNG atomically (temporary file in the same folder, then rename)."""
    write_png_atomic(path, id2rgb(ids), compress_level=4)


# --------------------------------------------------------------------------------------------------------------
# segment statistics


def raster_runs(*planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat start index and length of every horizontal run over which all ``planes`` (same (H, W)) are constant.

    Panoptic maps are mostly long runs, so working on one value per run instead of one per pixel cuts the
    per-pixel work to a few comparisons. Runs never wrap to the next row.
    """
    h, w = planes[0].shape
    n = h * w
    change = np.zeros(n, dtype=bool)
    change[::w] = True
    for plane in planes:
        flat = plane.reshape(-1)
        change[1:] |= flat[1:] != flat[:-1]
    starts = np.flatnonzero(change)
    return starts, np.diff(starts, append=n)


def index_ids(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Map each value to 1 + its position in ``known`` (distinct ids), and any value not in ``known`` to 0."""
    known = np.asarray(known, dtype=np.int64)
    values = np.asarray(values)
    if len(known) == 0:
        return np.zeros(values.shape, dtype=np.int32)
    order = np.argsort(known, kind="stable")
    ordered = known[order]
    pos = np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)
    return np.where(ordered[pos] == values, order[pos] + 1, 0).astype(np.int32)


def segment_stats(ids: np.ndarray, known: Iterable[int] | None = None) -> dict[int, tuple[int, list[int]]]:
    """Per non-void id in ``ids``: (area in pixels, bbox [x, y, w, h]), computed on horizontal runs.

    ``known`` is accepted for symmetry with callers that know the ids to expect; every id present is reported.
    """
    ids = np.asarray(ids)
    h, w = ids.shape
    starts, lengths = raster_runs(ids)
    values = ids.reshape(-1)[starts]
    labels, label_of_run = np.unique(values, return_inverse=True)
    k = len(labels)
    area = np.bincount(label_of_run, weights=lengths, minlength=k).astype(np.int64)
    y, x_first = np.divmod(starts, w)
    x_last = x_first + lengths - 1
    x0 = np.full(k, w, dtype=np.int64)
    y0 = np.full(k, h, dtype=np.int64)
    x1 = np.full(k, -1, dtype=np.int64)
    y1 = np.full(k, -1, dtype=np.int64)
    np.minimum.at(x0, label_of_run, x_first)
    np.minimum.at(y0, label_of_run, y)
    np.maximum.at(x1, label_of_run, x_last)
    np.maximum.at(y1, label_of_run, y)
    return {sid: (int(area[j]), [int(x0[j]), int(y0[j]), int(x1[j] - x0[j] + 1), int(y1[j] - y0[j] + 1)])
            for j, sid in enumerate(labels.tolist()) if sid != VOID}


# --------------------------------------------------------------------------------------------------------------
# sets


def _is_safe_relative(name: str) -> bool:
    if not name or "\x00" in name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return False
    parts = name.replace("\\", "/").split("/")
    return ".." not in parts


def safe_join(folder: Path, name: Any, json_path: Path, what: str) -> Path:
    """``folder / name`` for a file name read from a JSON, refusing names that escape ``folder``."""
    if not isinstance(name, str) or not _is_safe_relative(name):
        raise fail(json_path, f"{what} {name!r} escapes its folder (absolute path or '..')",
                   "file names must be relative to the set's folder; fix the JSON")
    return folder / name


@dataclass
class PanopticSet:
    """One panoptic set: its JSON content and where its PNGs live.

    ``categories``, ``images`` and ``annotations`` are the JSON lists as read (plain dicts, file order kept).
    A prediction JSON may have no ``categories`` or ``images``; they are then empty lists.
    """

    json_path: Path
    png_dir: Path
    categories: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        p = self.json_path
        return p.parent.name if p.name == SET_JSON_NAME else p.stem

    @property
    def categories_by_id(self) -> dict[int, dict]:
        return {c["id"]: c for c in self.categories}

    @property
    def images_by_id(self) -> dict[Any, dict]:
        return {im["id"]: im for im in self.images}

    def annotations_by_image(self) -> dict[Any, dict]:
        """image_id -> annotation; when an image_id repeats, the last one wins (as in the reference)."""
        return {a["image_id"]: a for a in self.annotations}

    def png_path(self, annotation: dict) -> Path:
        return safe_join(self.png_dir, annotation["file_name"], self.json_path, "file_name")

    def read_ids(self, annotation: dict) -> np.ndarray:
        return read_id_png(self.png_path(annotation))


def resolve_set(path: str | os.PathLike) -> tuple[Path, Path]:
    """(json_path, png_dir) for a path that names a whole set (see the module docstring)."""
    p = Path(path)
    if p.is_dir():
        own = p / SET_JSON_NAME
        if own.is_file():
            return own, p / SET_PNG_DIRNAME
        found = sorted((p / "annotations").glob("panoptic_*.json")) if (p / "annotations").is_dir() else []
        if len(found) == 1:
            return found[0], found[0].with_suffix("")
        if len(found) > 1:
            names = ", ".join(f.name for f in found)
            raise fail(p, f"folder holds several panoptic sets ({names})",
                       "name the JSON of the one you mean, e.g. " + str(found[0]))
        raise fail(p, f"folder holds no panoptic set (no {SET_JSON_NAME}, no annotations/panoptic_*.json)",
                   "pass the set's JSON file, or the folder that prn wrote with --out")
    if p.suffix == ".json":
        if not p.exists():
            raise fail(p, "JSON file is missing", "check the path")
        return p, p.with_suffix("")
    if not p.exists():
        raise fail(p, "no such file or folder", "pass a panoptic JSON or a folder written by prn with --out")
    raise fail(p, "is neither a panoptic JSON nor a folder", "pass a .json file or a folder")


def read_json(path: Path, what: str = "panoptic JSON") -> Any:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise fail(path, f"{what} is missing", "check the path") from None
    except IsADirectoryError:
        raise fail(path, f"{what} is a directory", "pass the JSON file") from None
    except UnicodeDecodeError as exc:
        raise fail(path, f"{what} is not UTF-8 text ({exc.reason})", "pass a JSON file") from None
    except json.JSONDecodeError as exc:
        raise fail(path, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                   "fix or regenerate the file") from None


def _check_structure(data: Any, json_path: Path, *, need_categories: bool) -> None:
    def bad(problem: str, fix: str = "fix or regenerate the file") -> InvalidInputError:
        return fail(json_path, problem, fix)

    if not isinstance(data, dict):
        raise bad(f"top level is a {type(data).__name__}, not an object with 'annotations'")
    anns = data.get("annotations")
    if not isinstance(anns, list):
        raise bad("has no 'annotations' list", "a COCO panoptic JSON holds images, annotations and categories")
    cats = data.get("categories")
    if need_categories and not isinstance(cats, list):
        raise bad("has no 'categories' list", "ground truth must carry its categories")
    if cats is not None:
        if not isinstance(cats, list):
            raise bad("'categories' is not a list")
        seen = set()
        for i, c in enumerate(cats):
            if not isinstance(c, dict) or "id" not in c or (need_categories and "name" not in c):
                raise bad(f"categories[{i}] lacks 'id'" + (" or 'name'" if need_categories else ""))
            if c["id"] in seen:
                raise bad(f"category id {c['id']} is listed twice", "give each category a unique id")
            seen.add(c["id"])
    images = data.get("images")
    if images is not None:
        if not isinstance(images, list):
            raise bad("'images' is not a list")
        # two records with one id make every pairing by image_id ambiguous (refine would pair a PNG with the
        # wrong photo, eval would keep either size): refuse them here, for every command
        first_name: dict = {}
        for i, im in enumerate(images):
            if not isinstance(im, dict) or "id" not in im:
                raise bad(f"images[{i}] lacks 'id'")
            key = json.dumps(im["id"], sort_keys=True)
            if key in first_name:
                raise bad(f"image id {im['id']!r} is used by two image records ({first_name[key]!r} and "
                          f"{im.get('file_name')!r})", "give each image record a unique id")
            first_name[key] = im.get("file_name")
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise bad(f"annotations[{i}] is not an object")
        for key in ("image_id", "file_name", "segments_info"):
            if key not in ann:
                raise bad(f"annotations[{i}] has no '{key}'")
        if not isinstance(ann["segments_info"], list):
            raise bad(f"annotations[{i}] (image {ann['image_id']}): segments_info is not a list")
        for j, seg in enumerate(ann["segments_info"]):
            if not isinstance(seg, dict) or "id" not in seg or "category_id" not in seg:
                raise bad(f"image {ann['image_id']}: segments_info[{j}] lacks 'id' or 'category_id'")
            if not isinstance(seg["id"], int) or isinstance(seg["id"], bool) or not 0 <= seg["id"] < OFFSET:
                raise bad(f"image {ann['image_id']}: segment id {seg['id']!r} is not an integer in [0, 2^24)",
                          "ids must be R + 256*G + 256^2*B of the PNG colour")
        if not isinstance(ann["file_name"], str) or not _is_safe_relative(ann["file_name"]):
            raise bad(f"image {ann['image_id']}: file_name {ann['file_name']!r} escapes its folder "
                      "(absolute path or '..')", "file names must be relative to the set's PNG folder")


def load_set(path: str | os.PathLike | None = None, *, json_path: str | os.PathLike | None = None,
             png_dir: str | os.PathLike | None = None, need_categories: bool = True) -> PanopticSet:
    """Read a panoptic set's JSON and check its structure (PNGs are read later, on demand).

    Either ``path`` (a whole set, see :func:`resolve_set`) or ``json_path`` (with an optional ``png_dir``;
    by default the JSON path without ``.json``).
    """
    if path is not None:
        jp, pd = resolve_set(path)
        if png_dir is not None:
            pd = Path(png_dir)
    elif json_path is not None:
        jp = Path(json_path)
        pd = Path(png_dir) if png_dir is not None else jp.with_suffix("")
    else:
        raise ValueError("load_set needs a path or a json_path")
    data = read_json(jp)
    _check_structure(data, jp, need_categories=need_categories)
    if not pd.is_dir():
        raise fail(pd, f"PNG folder of {jp.name} does not exist",
                   f"put the PNGs in {pd.name}/ beside the JSON, or name their folder (prn eval: --gt-json with "
                   "--gt-dir, --pred-json with --pred-dir)")
    extra = {k: v for k, v in data.items() if k not in ("categories", "images", "annotations")}
    return PanopticSet(json_path=jp, png_dir=pd, categories=list(data.get("categories") or []),
                       images=list(data.get("images") or []), annotations=data["annotations"], extra=extra)


# --------------------------------------------------------------------------------------------------------------
# validation


def where(pset: PanopticSet, annotation: dict) -> str:
    """How messages name an image: ``<json>: image <id> (<png>)``."""
    return f"{pset.json_path}: image {annotation['image_id']} ({pset.png_dir / str(annotation['file_name'])})"


def check_annotation(pset: PanopticSet, annotation: dict, ids: np.ndarray, categories: dict[int, dict],
                     *, check_area: bool = True, image_info: dict | None = None) -> list[str]:
    """Check one annotation against its decoded PNG; raise on errors, return warnings.

    Errors: duplicate segment ids, unknown category, a PNG id missing from segments_info, a segments_info id
    with no pixels, a PNG whose size disagrees with the image's ``width``/``height``. Warning: ``area`` that
    disagrees with the PNG's pixel count.
    """
    loc = where(pset, annotation)
    warnings: list[str] = []
    seen: dict[int, dict] = {}
    for seg in annotation["segments_info"]:
        if seg["id"] in seen:
            raise InvalidInputError(f"{loc}: segment id {seg['id']} is listed twice in segments_info; "
                                    "give each segment a unique id")
        seen[seg["id"]] = seg
        if seg["category_id"] not in categories:
            raise InvalidInputError(f"{loc}: segment {seg['id']} has unknown category_id {seg['category_id']}; "
                                    "use a category id listed in the ground truth's categories")
    info = image_info
    if info is not None and "width" in info and "height" in info:
        if ids.shape != (info["height"], info["width"]):
            raise InvalidInputError(f"{loc}: PNG is {ids.shape[1]}x{ids.shape[0]} but the image is "
                                    f"{info['width']}x{info['height']}; write the PNG at the image's size")
    in_png = {sid: area for sid, (area, _) in segment_stats(ids, known=seen).items()}
    for sid in sorted(in_png):
        if sid not in seen:
            raise InvalidInputError(f"{loc}: segment id {sid} is in the PNG but not in segments_info; "
                                    "add it to segments_info or paint its pixels 0 (void)")
    missing = [sid for sid in seen if sid not in in_png]
    if missing:
        raise InvalidInputError(f"{loc}: segment ids {missing} are in segments_info but have no pixels in "
                                "the PNG; remove them from segments_info")
    if check_area:
        for sid, seg in seen.items():
            if "area" in seg and seg["area"] != in_png[sid]:
                warnings.append(f"{loc}: segment {sid} has area {seg['area']} in the JSON but "
                                f"{in_png[sid]} pixels in the PNG")
    return warnings


def validate_set(pset: PanopticSet, categories: dict[int, dict] | None = None, *, check_area: bool = True,
                 images: Iterable[dict] | None = None) -> list[str]:
    """Check every annotation of a set against its PNG. Raises on the first error; returns the warnings."""
    categories = categories if categories is not None else pset.categories_by_id
    warnings: list[str] = []
    seen_images: set = set()
    infos = pset.images_by_id
    for ann in (images if images is not None else pset.annotations):
        if ann["image_id"] in seen_images:
            raise InvalidInputError(f"{pset.json_path}: image {ann['image_id']} has two annotations; "
                                    "keep one annotation per image")
        seen_images.add(ann["image_id"])
        ids = read_id_png(pset.png_path(ann))
        warnings += check_annotation(pset, ann, ids, categories, check_area=check_area,
                                     image_info=infos.get(ann["image_id"]))
    return warnings


# --------------------------------------------------------------------------------------------------------------
# writing


def set_paths(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """(json_path, png_dir) of the set that a command writes with ``--out DIR``."""
    out = Path(out_dir)
    return out / SET_JSON_NAME, out / SET_PNG_DIRNAME


def category_dict(id: int, name: str, isthing: bool, color: Iterable[int] | None = None,
                  supercategory: str | None = None) -> dict:
    c = {"id": int(id), "name": name, "isthing": int(bool(isthing))}
    if color is not None:
        c["color"] = [int(v) for v in color]
    if supercategory is not None:
        c["supercategory"] = supercategory
    return c


class PanopticWriter:
    """Write a panoptic set atomically: PNGs as they come, the JSON last (via a temporary file + rename).

    Use as a context manager; the JSON is written only when the block ends without an exception::

        with PanopticWriter(json_path, png_dir, categories, overwrite=False) as w:
            w.add(image_info, ids, segments_info)

    An existing set at ``json_path`` is refused unless ``overwrite``; with ``overwrite`` its JSON is removed
    before the first PNG is written, so an interrupted re-run leaves no JSON naming stale or missing PNGs.
    ``area`` and ``bbox`` are always recomputed from the ids, so they cannot disagree with the PNG.
    """

    def __init__(self, json_path: str | os.PathLike, png_dir: str | os.PathLike, categories: list[dict], *,
                 overwrite: bool = False, info: dict | None = None, flag: str = "--overwrite"):
        self.json_path = Path(json_path)
        self.png_dir = Path(png_dir)
        self.categories = categories
        self.info = info
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.adopted_names: set[str] = set()
        self._file_names: set[str] = set()
        refuse_file_as_folder(self.png_dir)
        if prepare_output_dir(self.json_path.parent, overwrite=overwrite, marker_names=[self.json_path.name],
                              flag=flag):
            stale = self._listed_pngs()
            self.json_path.unlink()   # first, so an interrupted re-run leaves no JSON naming stale PNGs
            for png in stale:
                png.unlink(missing_ok=True)
        self.png_dir.mkdir(parents=True, exist_ok=True)

    def _listed_pngs(self) -> list[Path]:
        """The PNGs that the set being replaced names (only safe names inside the PNG folder)."""
        try:
            data = json.loads(self.json_path.read_text(encoding="utf-8"))
            names = [a.get("file_name") for a in data.get("annotations", [])]
        except (OSError, ValueError, AttributeError):
            return []
        return [self.png_dir / n for n in names if isinstance(n, str) and _is_safe_relative(n)]

    def add(self, image: dict, ids: np.ndarray, segments_info: list[dict], file_name: str | None = None) -> dict:
        """Write one image's PNG and record its annotation. ``image`` is the COCO image record."""
        ids = np.asarray(ids)
        if file_name is None:
            file_name = Path(str(image["file_name"])).with_suffix(".png").as_posix()
        if not _is_safe_relative(file_name):
            raise ValueError(f"unsafe PNG file name {file_name!r}")
        if file_name in self._file_names:
            raise ValueError(f"two images write the same PNG {file_name!r}")
        listed = {s["id"] for s in segments_info}
        stats = segment_stats(ids, known=listed)
        if listed != set(stats):
            raise ValueError(f"image {image['id']}: PNG ids {sorted(stats)} != segments_info ids {sorted(listed)}")
        segs = []
        for s in segments_info:
            area, bbox = stats[s["id"]]
            segs.append({**s, "id": int(s["id"]), "category_id": int(s["category_id"]),
                         "iscrowd": int(s.get("iscrowd", 0)), "area": area, "bbox": bbox})
        target = self.png_dir / file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        write_id_png(target, ids)
        self._file_names.add(file_name)
        ann = {"image_id": image["id"], "file_name": file_name, "segments_info": segs}
        self.images.append(dict(image))
        self.annotations.append(ann)
        return ann

    def adopt(self, image: dict, annotation: dict) -> None:
        """Record an image whose PNG an earlier, interrupted run already wrote (used to resume)."""
        name = annotation["file_name"]
        if not _is_safe_relative(name) or not (self.png_dir / name).is_file():
            raise ValueError(f"cannot adopt {name!r}: no such PNG in {self.png_dir}")
        if name in self._file_names:
            raise ValueError(f"two images write the same PNG {name!r}")
        self._file_names.add(name)
        self.adopted_names.add(image["file_name"])
        self.images.append(dict(image))
        self.annotations.append(dict(annotation))

    def add_records(self, images: list[dict], annotations: list[dict]) -> None:
        """Record images whose PNGs another process of the same run wrote into this set's folder (torchrun)."""
        for image, annotation in zip(images, annotations):
            name = annotation["file_name"]
            if name in self._file_names:
                raise ValueError(f"two images write the same PNG {name!r}")
            self._file_names.add(name)
            self.images.append(dict(image))
            self.annotations.append(dict(annotation))

    def reorder(self, key: Callable[[dict, dict], Any]) -> None:
        """Order the images (each with its annotation) by ``key(image, annotation)`` before :meth:`commit`."""
        pairs = sorted(zip(self.images, self.annotations), key=lambda pair: key(*pair))
        self.images = [image for image, _ in pairs]
        self.annotations = [annotation for _, annotation in pairs]

    def commit(self) -> Path:
        data: dict[str, Any] = {}
        if self.info is not None:
            data["info"] = self.info
        data.update(images=self.images, annotations=self.annotations, categories=self.categories)
        write_json_atomic(self.json_path, data)
        return self.json_path

    def __enter__(self) -> "PanopticWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()


def iter_pairs(gt: PanopticSet, pred: PanopticSet) -> Iterator[tuple[dict, dict]]:
    """(gt annotation, pred annotation) in GT order; a GT image with no prediction is an error."""
    by_image = pred.annotations_by_image()
    for ann in gt.annotations:
        p = by_image.get(ann["image_id"])
        if p is None:
            raise fail(pred.json_path, f"no prediction for the image with id {ann['image_id']} "
                       f"(listed in {gt.json_path})", "predict every ground-truth image, or evaluate a subset GT")
        yield ann, p
