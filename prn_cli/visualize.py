"""Overlays and side-by-side panels of panoptic sets (``prn viz``).

Colours are a pure function of ids: an instance's colour comes from its segment id, a category's from its
``color`` field (or from its id when it has none). The same id therefore has the same colour in every panel and
every run, unlike peer tools that jitter colours with an unseeded RNG. Every output is a pure function of the
inputs: integer blending, no RNG, no dict/set iteration order in what is drawn, and Pillow's embedded default font
(never the system's fonts), so two runs write byte-identical PNGs.

Output folder (``visualize``)::

    out_dir/
      <set title>/<stem>.png   one overlay per set and image (``overlays=True``)
      panels/<stem>.png        [image |] set 1 | set 2 | ... with a title over each tile (two tiles or more)
      index.html               static gallery of the panels (or of the overlays when there are no panels)
      viz.json                 what was drawn and which files were written; marks the folder as prn viz output

``<stem>`` is the first set's PNG ``file_name`` (sub-folders kept). Each file is written through a temporary file
and a rename, so an interrupted run never leaves a truncated PNG.

This module needs numpy and Pillow only, so ``prn viz`` starts fast.
"""

from __future__ import annotations

import colorsys
import html as htmlmod
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import quote

import numpy as np

from .errors import InvalidInputError, OutputExistsError, fail
from .panoptic import VOID, PanopticSet, read_json, safe_join, where, write_json_atomic

COLOR_BY = ("instance", "category", "panoptic")
#: Where there is no photo, segments are drawn on this; mid grey keeps both light and dark colours visible.
NEUTRAL_BACKGROUND = (128, 128, 128)
PANELS_DIRNAME = "panels"
INDEX_NAME = "index.html"
MANIFEST_NAME = "viz.json"
IMAGE_TILE_TITLE = "image"
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")

_MASK64 = (1 << 64) - 1
#: 2**64 / golden ratio: multiplying ids by it spreads consecutive ids evenly over the hue circle.
_GOLDEN64 = 0x9E3779B97F4A7C15
_CATEGORY_SALT = 0x5A17C0DE
_CROWD_STRIPE = 4  # px: width of the hatch stripes over crowd regions (a power of two)


@dataclass(frozen=True)
class VizOptions:
    """How overlays and panels look. The defaults suit photos and the no-photo (neutral background) case."""

    #: "instance": a colour per segment id (as the paper's figures); "category": the categories' ``color``;
    #: "panoptic": stuff by its category's colour and things by segment id, so one stuff class has one colour
    #: in every panel while touching instances stay apart (detectron2's convention).
    color_by: str = "instance"
    #: Opacity of segment colours over a photo (0 = photo only, 1 = colours only). Without a photo segments
    #: are always drawn opaque on the neutral background.
    alpha: float = 0.55
    #: Draw a line on the inner side of every segment border (both sides where two segments touch).
    boundaries: bool = True
    boundary_color: tuple[int, int, int] = (255, 255, 255)
    #: Write the category name inside each segment, on a dark box.
    labels: bool = False
    #: Only segments with at least this many pixels get a label (tiny fragments would be hidden by their text).
    area_threshold: int = 100
    #: Hatch crowd regions (stripes at full and at reduced opacity) so they stand apart from instances.
    hatch_crowd: bool = True
    #: Label text size in px; None = from the image size.
    label_font_size: int | None = None
    #: Panel title bar height in px; None = from the title font size.
    title_height: int | None = None
    #: Title text size in px; None = from the tile height.
    title_font_size: int | None = None
    #: Gap between the tiles of a panel, in px.
    padding: int = 4

    def __post_init__(self):
        if self.color_by not in COLOR_BY:
            raise ValueError(f"color_by must be one of {COLOR_BY}, not {self.color_by!r}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], not {self.alpha}")
        if self.area_threshold < 0:
            raise ValueError(f"area_threshold must be >= 0, not {self.area_threshold}")
        if self.padding < 0:
            raise ValueError(f"padding must be >= 0, not {self.padding}")
        for name in ("label_font_size", "title_height", "title_font_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        if len(self.boundary_color) != 3 or not all(0 <= int(v) <= 255 for v in self.boundary_color):
            raise ValueError(f"boundary_color must be three values in [0, 255], not {self.boundary_color}")


# --------------------------------------------------------------------------------------------------------------
# colours


def _mix64(x: int) -> int:
    """splitmix64's finalizer: a fixed bijection that scatters nearby integers (no RNG state)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def instance_color(segment_id: int, *, salt: int = 0) -> tuple[int, int, int]:
    """A distinct, stable colour for an id: the same id gives the same colour in every run and panel.

    The hue is ``frac(id / golden ratio)`` in exact integer arithmetic, so consecutive ids (1, 2, 3, ...) land as
    far apart on the hue circle as possible; saturation and brightness vary with a hash of the id, so two ids
    whose hues happen to be close still differ in shade. Saturation and brightness stay high, which keeps every
    colour apart from the grey background and the white boundaries.
    """
    sid = int(segment_id) ^ salt
    hue = ((sid * _GOLDEN64) & _MASK64) / 2.0 ** 64
    h = _mix64(sid)
    sat = (0.85, 0.7, 0.55)[h % 3]
    val = (1.0, 0.9, 0.78)[(h >> 16) % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def category_color(category: dict) -> tuple[int, int, int]:
    """A category's ``color`` [r, g, b]; a deterministic colour from its id when it has none (or a bad one)."""
    color = category.get("color")
    if (isinstance(color, (list, tuple)) and len(color) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color)):
        return int(color[0]), int(color[1]), int(color[2])
    return instance_color(int(category["id"]), salt=_CATEGORY_SALT)


# --------------------------------------------------------------------------------------------------------------
# text


@lru_cache(maxsize=32)
def _font(size: int):
    from PIL import ImageFont

    # Pillow's embedded font: the same glyphs on every machine, whatever fonts the system has.
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):
        # A Pillow built without FreeType has only its fixed-size bitmap font; smaller, but still legible.
        return ImageFont.load_default()


def _printable(text: str) -> str:
    # The embedded font covers ASCII only; other characters would render as empty boxes.
    return "".join(ch if " " <= ch <= "~" else "?" for ch in str(text))


def _text_size(font, text: str) -> tuple[int, int, int, int]:
    """Ink bbox (left, top, right, bottom) of ``text`` drawn with its origin at (0, 0)."""
    return tuple(int(v) for v in font.getbbox(text))  # type: ignore[return-value]


def _fit(font, text: str, width: int) -> str:
    """``text``, shortened with '...' until it is at most ``width`` px wide."""
    text = _printable(text)
    l, _, r, _ = _text_size(font, text)
    if r - l <= width:
        return text
    for n in range(len(text) - 1, 0, -1):
        short = text[:n].rstrip() + "..."
        l, _, r, _ = _text_size(font, short)
        if r - l <= width:
            return short
    return ""


def _line_extent(font) -> tuple[int, int]:
    """(top, bottom) of a line of text relative to its origin, the same for every string, so lines align."""
    _, top, _, bottom = _text_size(font, "Hgjy|")
    return top, bottom


# --------------------------------------------------------------------------------------------------------------
# overlays


def _borders(ids: np.ndarray) -> np.ndarray:
    """Non-void pixels with a 4-neighbour of another id: both sides of a segment/segment border, the segment
    side of a segment/void border (void pixels stay the photo)."""
    edge = np.zeros(ids.shape, dtype=bool)
    h_diff = ids[:, 1:] != ids[:, :-1]
    v_diff = ids[1:, :] != ids[:-1, :]
    edge[:, 1:] |= h_diff
    edge[:, :-1] |= h_diff
    edge[1:, :] |= v_diff
    edge[:-1, :] |= v_diff
    edge &= ids != VOID
    return edge


def _run_depth(labels: np.ndarray, axis: int) -> np.ndarray:
    """Per pixel, the distance to the nearest change of label along ``axis`` (1 at a run's ends)."""
    n = labels.shape[axis]
    # 16-bit positions halve the memory traffic of the scans, the bulk of the cost.
    dt = np.int16 if n < 2 ** 15 else np.int32
    shape = [1, 1]
    shape[axis] = n
    pos = np.broadcast_to(np.arange(n, dtype=dt).reshape(shape), labels.shape)
    same = np.diff(labels, axis=axis) == 0
    same_prev = np.zeros(labels.shape, dtype=bool)
    same_next = np.zeros(labels.shape, dtype=bool)
    if axis == 1:
        same_prev[:, 1:] = same
        same_next[:, :-1] = same
    else:
        same_prev[1:] = same
        same_next[:-1] = same
    start = np.where(same_prev, dt(0), pos)
    np.maximum.accumulate(start, axis=axis, out=start)
    end = np.flip(np.minimum.accumulate(np.flip(np.where(same_next, dt(n - 1), pos), axis), axis=axis), axis)
    return np.minimum(pos - start, end - pos) + 1


def _label_points(inverse: np.ndarray, n: int) -> np.ndarray:
    """(n, 2) [y, x] per compact label: the pixel deepest inside its segment.

    Depth is the smaller of the horizontal and vertical run depths (a cheap stand-in for the distance to the
    border, and it treats the image edge as a border, which keeps labels inside the picture). Ties go to the
    first pixel in raster order, so the point is deterministic.
    """
    h, w = inverse.shape
    depth = np.minimum(_run_depth(inverse, 1), _run_depth(inverse, 0)).astype(np.int64)
    size = h * w
    key = depth.ravel() * size + (size - 1 - np.arange(size, dtype=np.int64))
    best = np.full(n, -1, dtype=np.int64)
    np.maximum.at(best, inverse.ravel(), key)
    flat = np.where(best >= 0, size - 1 - best % size, 0)
    return np.stack(np.divmod(flat, w), axis=1)


def _draw_labels(out: np.ndarray, inverse: np.ndarray, uniq: np.ndarray, counts: np.ndarray,
                 segs: dict[int, dict], categories: dict[int, dict], options: VizOptions) -> np.ndarray:
    from PIL import Image, ImageDraw

    h, w = inverse.shape
    wanted = [k for k, sid in enumerate(uniq.tolist())
              if sid != VOID and counts[k] > 0 and counts[k] >= options.area_threshold]
    if not wanted:
        return out
    size = options.label_font_size or int(min(28, max(10, round(min(h, w) / 30))))
    font = _font(size)
    top, bottom = _line_extent(font)
    margin = max(2, size // 5)
    points = _label_points(inverse, len(uniq))
    # Big segments first (ties by id): where labels would overlap, the larger segment keeps its label.
    wanted.sort(key=lambda k: (-int(counts[k]), int(uniq[k])))
    placed: list[tuple[int, int, int, int]] = []
    jobs = []
    for k in wanted:
        cat = categories.get(segs[int(uniq[k])]["category_id"], {})
        text = _fit(font, cat.get("name", str(segs[int(uniq[k])]["category_id"])), w - 2 * margin)
        if not text:
            continue
        l, _, r, _ = _text_size(font, text)
        bw, bh = r - l + 2 * margin, bottom - top + 2 * margin
        if bw > w or bh > h:
            continue
        cy, cx = (int(v) for v in points[k])
        x0 = min(max(cx - bw // 2, 0), w - bw)
        y0 = min(max(cy - bh // 2, 0), h - bh)
        box = (x0, y0, x0 + bw, y0 + bh)
        if any(box[0] < p[2] and p[0] < box[2] and box[1] < p[3] and p[1] < box[3] for p in placed):
            continue
        placed.append(box)
        jobs.append((box, (x0 + margin - l, y0 + margin - top), text))
    for (x0, y0, x1, y1), _, _ in jobs:
        # A dark translucent box: the text reads on any colour, the segment still shows through.
        region = out[y0:y1, x0:x1].astype(np.uint16)
        out[y0:y1, x0:x1] = ((region * 80 + 128) >> 8).astype(np.uint8)
    img = Image.fromarray(out)
    draw = ImageDraw.Draw(img)
    for _, origin, text in jobs:
        draw.text(origin, text, font=font, fill=(255, 255, 255))
    return np.asarray(img).copy()


def render_overlay(image: np.ndarray | None, ids: np.ndarray, segments_info: Sequence[dict],
                   categories: dict[int, dict], options: VizOptions = VizOptions(), *,
                   source: str | None = None) -> np.ndarray:
    """Draw one image's segments; returns (H, W, 3) uint8.

    With ``image`` ((H, W, 3) uint8, or (H, W) grey) segment colours are blended over it with ``options.alpha``;
    without, segments are drawn opaque on :data:`NEUTRAL_BACKGROUND`. Void (id 0) pixels keep the image (or the
    background) exactly. ``categories`` (id -> category dict) gives colours in category mode and label names;
    in instance mode without labels it may be empty. ``source`` names the image in error messages.

    Raises :class:`InvalidInputError` for a PNG id missing from ``segments_info`` or, where categories are
    needed, a segment whose category is not in ``categories``.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"ids must be (H, W), got shape {ids.shape}")
    h, w = ids.shape
    prefix = f"{source}: " if source else ""
    if image is None:
        base = np.empty((h, w, 3), dtype=np.uint8)
        base[...] = NEUTRAL_BACKGROUND
        alpha = 256
    else:
        base = np.asarray(image)
        if base.ndim == 2:
            base = np.repeat(base[..., None], 3, axis=2)
        if base.shape[:2] != (h, w) or base.ndim != 3 or base.shape[2] < 3:
            raise ValueError(f"image is {base.shape}, ids are {ids.shape}: sizes differ")
        base = base[..., :3].astype(np.uint8, copy=False)
        alpha = int(round(float(options.alpha) * 256))

    # Later entries win for a repeated id, as the reference evaluator reads segments_info.
    segs = {int(s["id"]): s for s in segments_info}
    # Compact indices through a binary search over the listed ids: several times faster than np.unique on the
    # pixels, and it finds PNG ids missing from segments_info on the way.
    if ids.dtype.kind not in "ui" or ids.dtype.itemsize < 4:
        ids = ids.astype(np.int64)
    # Same dtype as the pixels: a mixed-type search would first convert every pixel. Listed ids that the pixel
    # type cannot hold cannot occur in the PNG either.
    lo, hi = np.iinfo(ids.dtype).min, np.iinfo(ids.dtype).max
    known = np.array(sorted({VOID, *(k for k in segs if lo <= k <= hi)}), dtype=ids.dtype)
    n = len(known)
    index = np.minimum(np.searchsorted(known, ids), n - 1)
    unlisted = known[index] != ids
    if unlisted.any():
        sid = int(ids[unlisted].min())
        raise InvalidInputError(f"{prefix}segment id {sid} is in the PNG but not in segments_info; "
                                "add it to segments_info or paint its pixels 0 (void)")
    counts = np.bincount(index.ravel(), minlength=n)
    palette = np.zeros((n, 3), dtype=np.uint16)
    seg_alpha = np.zeros(n, dtype=np.uint16)
    crowd = np.zeros(n, dtype=bool)
    need_category = options.color_by in ("category", "panoptic") or options.labels
    for k, sid in enumerate(known.tolist()):
        if sid == VOID:
            continue
        seg = segs[sid]
        cat = categories.get(seg["category_id"])
        if cat is None and need_category:
            raise InvalidInputError(f"{prefix}segment {sid} has unknown category_id {seg['category_id']}; "
                                    "use a category id listed in the set's categories")
        by_category = options.color_by == "category" or (options.color_by == "panoptic"
                                                          and not cat.get("isthing", 1))
        palette[k] = category_color(cat) if by_category else instance_color(sid)
        seg_alpha[k] = alpha
        crowd[k] = bool(seg.get("iscrowd", 0))

    # Integer blending, (base * (256 - a) + colour * a + 128) >> 8: exact on every platform; a = 0 leaves void
    # pixels bit-identical to the base, a = 256 gives the colour itself. The colour term (+128 for rounding) is
    # looked up per segment, so the per-pixel work is one multiply, one add and one shift. (np.take of table
    # rows is several times faster than table[index] here.)
    keep = 256 - seg_alpha
    colour = palette * seg_alpha[:, None] + 128
    hatch = None
    if options.hatch_crowd and crowd[counts > 0].any():
        yy = np.arange(h, dtype=np.int32)[:, None]
        xx = np.arange(w, dtype=np.int32)[None, :]
        # Between the stripes crowd regions are drawn at under half strength: hatched, unlike any instance.
        hatch = crowd[index] & (((xx + yy) & _CROWD_STRIPE) != 0)
        gap_alpha = (seg_alpha * 3) >> 3
        gap_keep = 256 - gap_alpha
        gap_colour = palette * gap_alpha[:, None] + 128
    if image is None:
        lut = ((np.array(NEUTRAL_BACKGROUND, dtype=np.uint16) * keep[:, None] + colour) >> 8).astype(np.uint8)
        out = np.take(lut, index, axis=0)
        if hatch is not None:
            gap_lut = ((np.array(NEUTRAL_BACKGROUND, dtype=np.uint16) * gap_keep[:, None] + gap_colour) >> 8)
            out[hatch] = gap_lut.astype(np.uint8)[index[hatch]]
    else:
        acc = base.astype(np.uint16)
        if hatch is None:
            acc *= keep[index][..., None]
            acc += np.take(colour, index, axis=0)
        else:
            acc *= np.where(hatch, gap_keep[index], keep[index])[..., None]
            acc += np.where(hatch[..., None], np.take(gap_colour, index, axis=0), np.take(colour, index, axis=0))
        acc >>= 8
        out = acc.astype(np.uint8)
    if options.boundaries:
        out[_borders(ids)] = options.boundary_color
    if options.labels:
        out = _draw_labels(out, index, known, counts, segs, categories, options)
    return out


# --------------------------------------------------------------------------------------------------------------
# panels

_PANEL_BACKGROUND = (255, 255, 255)
_TITLE_BACKGROUND = (34, 34, 34)
_TITLE_COLOR = (255, 255, 255)
_MISSING_BACKGROUND = (72, 72, 72)


def _auto_title_size(tile_height: int) -> int:
    return int(min(32, max(12, round(tile_height / 22))))


def _draw_centered(draw, font, box: tuple[int, int, int, int], text: str, fill) -> None:
    x0, y0, x1, y1 = box
    text = _fit(font, text, x1 - x0 - 4)
    if not text:
        return
    l, _, r, _ = _text_size(font, text)
    top, bottom = _line_extent(font)
    x = x0 + (x1 - x0 - (r - l)) // 2 - l
    y = y0 + (y1 - y0 - (bottom - top)) // 2 - top
    draw.text((x, y), text, font=font, fill=fill)


def text_tile(height: int, width: int, lines: Sequence[str], *, font_size: int | None = None) -> np.ndarray:
    """A dark tile with centred lines of text: stands in for a set that lacks an image."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), _MISSING_BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = _font(font_size or _auto_title_size(height))
    top, bottom = _line_extent(font)
    line_h = int((bottom - top) * 1.4)
    y = (height - line_h * len(lines)) // 2
    for text in lines:
        _draw_centered(draw, font, (0, y, width, y + line_h), text, (230, 230, 230))
        y += line_h
    return np.asarray(img).copy()


def compose_panel(tiles: Sequence[np.ndarray], titles: Sequence[str], *, title_height: int | None = None,
                  title_font_size: int | None = None, padding: int = 4) -> np.ndarray:
    """Tiles side by side, each under a dark title bar (as the paper's figures: image | base | refined | GT).

    Width = sum of tile widths + ``padding`` between neighbours; height = title bar + tallest tile (shorter tiles
    are top-aligned on white). Titles too wide for their tile are shortened with '...'.
    """
    from PIL import Image, ImageDraw

    if len(tiles) != len(titles):
        raise ValueError(f"{len(tiles)} tiles but {len(titles)} titles")
    if not tiles:
        raise ValueError("compose_panel needs at least one tile")
    tiles = [np.asarray(t) for t in tiles]
    tiles = [np.repeat(t[..., None], 3, axis=2) if t.ndim == 2 else t[..., :3] for t in tiles]
    tile_h = max(t.shape[0] for t in tiles)
    font = _font(title_font_size or _auto_title_size(tile_h))
    top, bottom = _line_extent(font)
    bar = title_height or (bottom - top) + 2 * max(4, (bottom - top) // 2)
    width = sum(t.shape[1] for t in tiles) + padding * (len(tiles) - 1)
    panel = np.empty((bar + tile_h, width, 3), dtype=np.uint8)
    panel[...] = _PANEL_BACKGROUND
    boxes = []
    x = 0
    for t in tiles:
        th, tw = t.shape[:2]
        panel[:bar, x:x + tw] = _TITLE_BACKGROUND
        panel[bar:bar + th, x:x + tw] = t
        boxes.append((x, 0, x + tw, bar))
        x += tw + padding
    img = Image.fromarray(panel)
    draw = ImageDraw.Draw(img)
    for box, title in zip(boxes, titles):
        _draw_centered(draw, font, box, title, _TITLE_COLOR)
    return np.asarray(img).copy()


# --------------------------------------------------------------------------------------------------------------
# files


def _tmp_path(path: Path) -> Path:
    # A plain open() (not mkstemp, which creates mode 0600) keeps the user's umask: a gallery must be readable.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_png_atomic(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array as PNG through a temporary file and a rename. No metadata, so the bytes
    depend on the pixels only."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) array, got shape {rgb.shape}")
        Image.fromarray(rgb).save(tmp, format="PNG", compress_level=6)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _folder_names(titles: Sequence[str]) -> list[str]:
    """Safe, distinct folder names for set titles (case-insensitively distinct, for macOS and Windows)."""
    used = {PANELS_DIRNAME.lower()}
    names = []
    for title in titles:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", str(title)).strip("._") or "set"
        name, k = base, 2
        while name.lower() in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name.lower())
        names.append(name)
    return names


def _read_photo(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            # No EXIF rotation: COCO sizes and PNGs refer to the stored pixel grid, as in panopticapi.
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise fail(path, "image file is missing", "check the images folder") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise fail(path, f"image cannot be decoded ({exc.__class__.__name__}: {exc})",
                   "the file is corrupt or not an image") from None


def _find_photo(images_dir: Path, records: list[tuple[PanopticSet, dict]], stem: str) -> tuple[Path | None, list]:
    """The photo of one image: the ``file_name`` of its ``images`` records, else ``<stem>.<ext>``."""
    tried: list[Path] = []
    for pset, rec in records:
        name = rec.get("file_name")
        if isinstance(name, str):
            p = safe_join(images_dir, name, pset.json_path, "image file_name")
            if p not in tried:
                if p.is_file():
                    return p, tried
                tried.append(p)
    for ext in PHOTO_EXTENSIONS:
        p = images_dir / (stem + ext)
        if p not in tried:
            if p.is_file():
                return p, tried
            tried.append(p)
    return None, tried


def _gallery_html(titles: Sequence[str], entries: list[tuple[str, str]]) -> str:
    """A static page: one figure per (relative PNG path, caption). Inline CSS only, no scripts or remote assets."""
    heading = htmlmod.escape(" | ".join(titles))
    figures = "\n".join(
        f'<figure><a href="{htmlmod.escape(quote(rel))}"><img src="{htmlmod.escape(quote(rel))}" '
        f'alt="{htmlmod.escape(caption)}" loading="lazy"></a>'
        f'<figcaption>{htmlmod.escape(caption)}</figcaption></figure>'
        for rel, caption in entries)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>prn viz: {heading}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; background: #f4f4f4; color: #222; }}
figure {{ margin: 0 0 24px 0; }}
img {{ max-width: 100%; height: auto; border: 1px solid #ccc; }}
figcaption {{ font-size: 14px; padding-top: 4px; }}
</style>
</head>
<body>
<h1>prn viz: {heading}</h1>
<p>{len(entries)} images</p>
{figures}
</body>
</html>
"""


# --------------------------------------------------------------------------------------------------------------
# the command


def _lookup(by_image: dict, by_str: dict, image_id: Any):
    """A set's annotation of ``image_id``; ids that differ only in type (1 vs "1") still match."""
    ann = by_image.get(image_id)
    return ann if ann is not None else by_str.get(str(image_id))


def _categories_of(sets: Sequence[tuple[str, PanopticSet]]) -> tuple[dict[int, dict], PanopticSet | None]:
    for _, pset in sets:
        if pset.categories:
            # Prediction JSONs are loaded without category checks; a malformed list must not crash here.
            for i, c in enumerate(pset.categories):
                if not isinstance(c, dict) or "id" not in c:
                    raise fail(pset.json_path, f"categories[{i}] lacks 'id'", "fix or regenerate the file")
            return pset.categories_by_id, pset
    return {}, None


def _select(first: PanopticSet, image_ids: Sequence[Any] | None, limit: int | None) -> list[dict]:
    by_image = first.annotations_by_image()
    # First-appearance order of image ids, each with its winning (last) annotation, as the evaluator reads them.
    order = list(dict.fromkeys(a["image_id"] for a in first.annotations))
    anns = [by_image[i] for i in order]
    if image_ids is not None:
        wanted = {str(v) for v in image_ids}
        keep = [a for a in anns
                if str(a["image_id"]) in wanted or Path(str(a["file_name"])).stem in wanted]
        found = {str(a["image_id"]) for a in keep} | {Path(str(a["file_name"])).stem for a in keep}
        unknown = [str(v) for v in image_ids if str(v) not in found]
        if unknown:
            raise fail(first.json_path, f"no annotation for image {', '.join(unknown[:5])}"
                       + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""),
                       "pass image ids (or PNG stems) listed in the first set")
        anns = keep
    if limit is not None:
        anns = anns[:max(0, int(limit))]
    return anns


def visualize(sets: Sequence[tuple[str, PanopticSet]], out_dir: str | os.PathLike, *,
              images_dir: str | os.PathLike | None = None, options: VizOptions = VizOptions(),
              image_ids: Sequence[Any] | None = None, limit: int | None = None, panels: bool = True,
              overlays: bool = True, html: bool = False, overwrite: bool = False,
              progress: Callable[[int, int], None] | None = None) -> dict:
    """Draw overlays and side-by-side panels of one or more panoptic sets into ``out_dir``.

    - ``sets``: (title, set) pairs, in tile order. The first set decides which images are drawn (in its order);
      the others are matched by ``image_id``. A set that lacks an image gets a dark "missing" tile in the panel
      and no overlay file; it is not an error (the summary counts them per set under ``missing``).
    - ``images_dir``: folder of the photos. Each image's photo is its ``images`` record's ``file_name`` (first
      set that has one), else ``<PNG stem>.jpg/.jpeg/.png``. With photos, colours are blended over them and
      panels start with an ``image`` tile; without, segments are drawn on a neutral grey.
    - ``image_ids``: draw only these images (ids or PNG stems, compared as text); ``limit``: at most this many.
    - ``overlays``: write ``<title>/<stem>.png`` per set; ``panels``: write ``panels/<stem>.png`` when a panel
      has two tiles or more (several sets, or one set and its photos); ``html``: write ``index.html``.
    - Categories (colours, names) come from the first set that lists any.

    Refuses (:class:`OutputExistsError`) an ``out_dir`` holding earlier output unless ``overwrite``; then the
    files that the earlier run listed in its ``viz.json`` and this run does not write are removed.
    Returns ``{"out_dir", "images", "files_written", "overlays", "panels", "index_html", "sets"}``, ``sets``
    being ``[{"title", "folder", "missing"}]`` in set order (``missing``: images that the set lacks).
    """
    if not sets:
        raise ValueError("visualize needs at least one (title, set) pair")
    titles = [str(t) for t, _ in sets]
    psets = [s for _, s in sets]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise fail(out, "output path is a file, not a folder", "choose an output folder")
    photos_dir = Path(images_dir) if images_dir is not None else None
    if photos_dir is not None and not photos_dir.is_dir():
        raise fail(photos_dir, "images folder does not exist", "pass the folder that holds the photos")

    categories, cat_source = _categories_of(sets)
    if cat_source is None and (options.color_by == "category" or options.labels):
        raise fail(psets[0].json_path, "no set lists categories, so category colours and labels are unknown",
                   "include the ground-truth set, whose JSON lists the categories")

    anns = _select(psets[0], image_ids, limit)
    lookups = []
    for pset in psets:
        by_image = pset.annotations_by_image()
        lookups.append((by_image, {str(k): v for k, v in by_image.items()}))
    folders = _folder_names(titles)
    with_photo = photos_dir is not None
    n_tiles = len(sets) + int(with_photo)
    write_panels = panels and n_tiles >= 2

    # Plan every file first: the overwrite check, the input-clobber check and the manifest all need the list.
    plan = []
    seen_rel: dict[str, Any] = {}
    for ann in anns:
        rel = Path(str(ann["file_name"])).with_suffix(".png").as_posix()
        if rel in seen_rel:
            raise fail(psets[0].json_path, f"images {seen_rel[rel]} and {ann['image_id']} both have the PNG "
                       f"name {rel}", "give each image its own file_name")
        seen_rel[rel] = ann["image_id"]
        per_set = [_lookup(by_image, by_str, ann["image_id"]) for by_image, by_str in lookups]
        plan.append((ann, rel, per_set))
    # Unknown categories are found in the JSONs alone: fail before drawing anything rather than midway.
    if categories:
        for _, _, per_set in plan:
            for pset, set_ann in zip(psets, per_set):
                for seg in set_ann["segments_info"] if set_ann is not None else ():
                    if seg["category_id"] not in categories:
                        raise InvalidInputError(
                            f"{where(pset, set_ann)}: segment {seg['id']} has unknown category_id "
                            f"{seg['category_id']}; use a category id listed in {cat_source.json_path}")
    files: list[str] = []
    for ann, rel, per_set in plan:
        if overlays:
            files += [f"{folder}/{rel}" for folder, a in zip(folders, per_set) if a is not None]
        if write_panels:
            files.append(f"{PANELS_DIRNAME}/{rel}")
    gallery = [f"{PANELS_DIRNAME}/{rel}" for _, rel, _ in plan] if write_panels else \
        [f"{folders[0]}/{rel}" for _, rel, _ in plan] if overlays else []
    if html:
        files.append(INDEX_NAME)

    inputs = {p.png_dir.resolve() for p in psets} | ({photos_dir.resolve()} if photos_dir else set())
    for folder in {Path(f).parts[0] for f in files if "/" in f}:
        if (out / folder).resolve() in inputs:
            raise fail(out / folder, "is an input folder; writing there would replace input files",
                       "choose another output folder")

    manifest = out / MANIFEST_NAME
    old_files: list[str] = []
    if manifest.exists():
        if not overwrite:
            raise OutputExistsError(f"{out} already holds prn viz output ({manifest.name}); pass --overwrite to "
                                    "replace it or choose another output folder")
        try:
            old = read_json(manifest, what="prn viz manifest")
            old_files = [f for f in old.get("files", []) if isinstance(f, str)] if isinstance(old, dict) else []
        except InvalidInputError:
            old_files = []
    elif not overwrite:
        clash = next((f for f in files if (out / f).exists()), None)
        if clash is not None:
            raise OutputExistsError(f"{out / clash} already exists; pass --overwrite to replace it or choose "
                                    "another output folder")

    photo_paths: dict[int, Path] = {}
    if photos_dir is not None:
        records_by_set = [p.images_by_id for p in psets]
        missing_photos = []
        for k, (ann, rel, _) in enumerate(plan):
            records = [(p, r[ann["image_id"]]) for p, r in zip(psets, records_by_set) if ann["image_id"] in r]
            path, tried = _find_photo(photos_dir, records, rel[:-len(".png")])
            if path is None:
                missing_photos.append((ann["image_id"], tried))
            else:
                photo_paths[k] = path
        if missing_photos:
            image_id, tried = missing_photos[0]
            more = f" (and {len(missing_photos) - 1} more images)" if len(missing_photos) > 1 else ""
            raise fail(photos_dir, f"no photo for image {image_id}{more}; looked for "
                       + ", ".join(p.name for p in tried[:4]),
                       "pass the folder that holds the photos, named as the images' file_name")

    # Stale files of the earlier run go first, so an interrupted run never mixes two runs under one manifest.
    if overwrite and manifest.exists():
        manifest.unlink()
        keep = set(files)
        for f in old_files:
            if f not in keep and f != MANIFEST_NAME and _is_plain_relative(f):
                target = out / f
                if target.is_file():
                    target.unlink()
                    # A set dropped since the last run leaves no empty folder behind.
                    if target.parent != out and not any(target.parent.iterdir()):
                        target.parent.rmdir()

    total = len(plan)
    if progress is not None:
        progress(0, total)
    missing = [0] * len(sets)
    written = 0
    n_overlays = n_panels = 0
    for k, (ann, rel, per_set) in enumerate(plan):
        photo = _read_photo(photo_paths[k]) if k in photo_paths else None
        tiles = [photo] if photo is not None else []
        tile_titles = [IMAGE_TILE_TITLE] if photo is not None else []
        shape = None
        for j, (title, folder, pset, set_ann) in enumerate(zip(titles, folders, psets, per_set)):
            if set_ann is None:
                missing[j] += 1
                tiles.append(None)
                tile_titles.append(title)
                continue
            loc = where(pset, set_ann)
            ids = pset.read_ids(set_ann)
            if photo is not None and photo.shape[:2] != ids.shape:
                raise InvalidInputError(
                    f"{photo_paths[k]} is {photo.shape[1]}x{photo.shape[0]} but its panoptic PNG "
                    f"{pset.png_path(set_ann)} is {ids.shape[1]}x{ids.shape[0]}; the PNG must have the photo's size")
            tile = render_overlay(photo, ids, set_ann["segments_info"], categories, options, source=loc)
            shape = shape or tile.shape[:2]
            if overlays:
                write_png_atomic(out / folder / rel, tile)
                written += 1
                n_overlays += 1
            tiles.append(tile)
            tile_titles.append(title)
        if write_panels:
            h, w = shape or (photo.shape[:2] if photo is not None else (240, 320))
            tiles = [t if t is not None else text_tile(h, w, ["missing", f"no annotation of image {ann['image_id']}"])
                     for t in tiles]
            write_png_atomic(out / PANELS_DIRNAME / rel,
                             compose_panel(tiles, tile_titles, title_height=options.title_height,
                                           title_font_size=options.title_font_size, padding=options.padding))
            written += 1
            n_panels += 1
        if progress is not None:
            progress(k + 1, total)

    index_html = None
    if html:
        entries = [(f, f"image {ann['image_id']} ({rel})") for f, (ann, rel, _) in zip(gallery, plan)]
        # Single-set galleries link only overlays that exist (the first set may not lack images, but be safe).
        entries = [(f, c) for f, c in entries if (out / f).is_file()]
        index_html = out / INDEX_NAME
        _write_text_atomic(index_html, _gallery_html(titles, entries))
        written += 1
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(manifest, {
        "tool": "prn viz",
        "sets": [{"title": t, "json": str(p.json_path), "png_dir": str(p.png_dir)} for t, p in zip(titles, psets)],
        "images_dir": str(photos_dir) if photos_dir is not None else None,
        "images": [ann["image_id"] for ann, _, _ in plan],
        "files": files,
    })
    return {"out_dir": str(out), "images": total, "files_written": written, "overlays": n_overlays,
            "panels": n_panels, "index_html": str(index_html) if index_html else None,
            "sets": [{"title": t, "folder": f, "missing": m} for t, f, m in zip(titles, folders, missing)]}


def _is_plain_relative(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and ".." not in parts and "\\" not in name and ":" not in name


__all__ = ["VizOptions", "instance_color", "category_color", "render_overlay", "compose_panel", "text_tile",
           "write_png_atomic", "visualize", "NEUTRAL_BACKGROUND"]
