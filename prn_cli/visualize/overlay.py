"""Overlays: one image's segments drawn over its photo (or a neutral grey), with borders, crowd hatching and
category labels. Integer blending only, so every platform draws the same bytes."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InvalidInputError
from ..panoptic import VOID
from .colors import category_color, instance_color
from .options import NEUTRAL_BACKGROUND, VizOptions
from .text import fit_text, get_font, line_extent, text_bbox

_CROWD_STRIPE = 4  # px: width of the hatch stripes over crowd regions (a power of two)


def segment_borders(ids: np.ndarray) -> np.ndarray:
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
    font = get_font(size)
    top, bottom = line_extent(font)
    margin = max(2, size // 5)
    points = _label_points(inverse, len(uniq))
    # Big segments first (ties by id): where labels would overlap, the larger segment keeps its label.
    wanted.sort(key=lambda k: (-int(counts[k]), int(uniq[k])))
    placed: list[tuple[int, int, int, int]] = []
    jobs = []
    for k in wanted:
        cat = categories.get(segs[int(uniq[k])]["category_id"], {})
        text = fit_text(font, cat.get("name", str(segs[int(uniq[k])]["category_id"])), w - 2 * margin)
        if not text:
            continue
        l, _, r, _ = text_bbox(font, text)
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
                   source: str | None = None, colors: dict[int, tuple[int, int, int]] | None = None) -> np.ndarray:
    """Draw one image's segments; returns (H, W, 3) uint8.

    With ``image`` ((H, W, 3) uint8, or (H, W) grey) segment colours are blended over it with ``options.alpha``;
    without, segments are drawn opaque on :data:`NEUTRAL_BACKGROUND`. Void (id 0) pixels keep the image (or the
    background) exactly. ``categories`` (id -> category dict) gives colours in category mode and label names;
    in instance mode without labels it may be empty. ``source`` names the image in error messages. ``colors``
    (segment id -> RGB) overrides ``options.color_by`` for the segments it lists (e.g. a prediction drawn in
    the colour of the GT instance it matches).

    Raises :class:`InvalidInputError` for a PNG id missing from ``segments_info`` or, where categories are
    needed, a segment whose category is not in ``categories``.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"ids must be (H, W), got shape {ids.shape}")
    h, w = ids.shape
    prefix = f"{source}: " if source else ""
    base = None
    if image is None:
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
    ids, known, index = _compact_ids(ids, segs, prefix)
    counts = np.bincount(index.ravel(), minlength=len(known))
    palette, seg_alpha, crowd = _segment_table(known, segs, categories, options, alpha, prefix, colors or {})
    hatch = None
    if options.hatch_crowd and crowd[counts > 0].any():
        yy = np.arange(h, dtype=np.int32)[:, None]
        xx = np.arange(w, dtype=np.int32)[None, :]
        # Between the stripes crowd regions are drawn at under half strength: hatched, unlike any instance.
        hatch = crowd[index] & (((xx + yy) & _CROWD_STRIPE) != 0)
    out = _blend(base, index, palette, seg_alpha, hatch)
    if options.boundaries:
        out[segment_borders(ids)] = options.boundary_color
    if options.labels:
        out = _draw_labels(out, index, known, counts, segs, categories, options)
    return out


def _compact_ids(ids: np.ndarray, segs: dict[int, dict], prefix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids as a 4-byte-or-wider integer array, the sorted listed ids with void, each pixel's index into them).

    A binary search over the listed ids: several times faster than np.unique on the pixels, and it finds PNG
    ids missing from segments_info on the way (an :class:`InvalidInputError`).
    """
    if ids.dtype.kind not in "ui" or ids.dtype.itemsize < 4:
        ids = ids.astype(np.int64)
    # Same dtype as the pixels: a mixed-type search would first convert every pixel. Listed ids that the pixel
    # type cannot hold cannot occur in the PNG either.
    lo, hi = np.iinfo(ids.dtype).min, np.iinfo(ids.dtype).max
    known = np.array(sorted({VOID, *(k for k in segs if lo <= k <= hi)}), dtype=ids.dtype)
    index = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    unlisted = known[index] != ids
    if unlisted.any():
        sid = int(ids[unlisted].min())
        raise InvalidInputError(f"{prefix}segment id {sid} is in the PNG but not in segments_info; "
                                "add it to segments_info or paint its pixels 0 (void)")
    return ids, known, index


def _segment_table(known: np.ndarray, segs: dict[int, dict], categories: dict[int, dict], options: VizOptions,
                   alpha: int, prefix: str, colors: dict[int, tuple[int, int, int]]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per entry of ``known``: colour (n, 3), opacity out of 256 (0 for void) and crowd flag."""
    n = len(known)
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
        palette[k] = colors[sid] if sid in colors else category_color(cat) if by_category else instance_color(sid)
        seg_alpha[k] = alpha
        crowd[k] = bool(seg.get("iscrowd", 0))
    return palette, seg_alpha, crowd


def _blend(base: np.ndarray | None, index: np.ndarray, palette: np.ndarray, seg_alpha: np.ndarray,
           hatch: np.ndarray | None) -> np.ndarray:
    """Segment colours over ``base`` (or :data:`NEUTRAL_BACKGROUND`), at reduced opacity where ``hatch``.

    Integer blending, (base * (256 - a) + colour * a + 128) >> 8: exact on every platform; a = 0 leaves void
    pixels bit-identical to the base, a = 256 gives the colour itself. The colour term (+128 for rounding) is
    looked up per segment, so the per-pixel work is one multiply, one add and one shift. (np.take of table
    rows is several times faster than table[index] here.)
    """
    keep = 256 - seg_alpha
    colour = palette * seg_alpha[:, None] + 128
    if hatch is not None:
        gap_alpha = (seg_alpha * 3) >> 3
        gap_keep = 256 - gap_alpha
        gap_colour = palette * gap_alpha[:, None] + 128
    if base is None:
        lut = ((np.array(NEUTRAL_BACKGROUND, dtype=np.uint16) * keep[:, None] + colour) >> 8).astype(np.uint8)
        out = np.take(lut, index, axis=0)
        if hatch is not None:
            gap_lut = ((np.array(NEUTRAL_BACKGROUND, dtype=np.uint16) * gap_keep[:, None] + gap_colour) >> 8)
            out[hatch] = gap_lut.astype(np.uint8)[index[hatch]]
        return out
    acc = base.astype(np.uint16)
    if hatch is None:
        acc *= keep[index][..., None]
        acc += np.take(colour, index, axis=0)
    else:
        acc *= np.where(hatch, gap_keep[index], keep[index])[..., None]
        acc += np.where(hatch[..., None], np.take(gap_colour, index, axis=0), np.take(colour, index, axis=0))
    acc >>= 8
    return acc.astype(np.uint8)

__all__ = ["render_overlay", "segment_borders"]
