"""Corrupt ground truth the way base panoptic models fail, to get (prediction, ground truth) pairs for free.

The demo uses a corrupted set as a stand-in for a base model's output, the benchmark as a prediction to
evaluate, and the refiner's training as unlimited base predictions (docs/design.md, "PRN", "Training data").
The failure modes are those of real base models:

- ``coarse_boundary``: a thing mask re-rendered through a 28x28 grid in a slightly wrong box, then upsampled
  (Mask R-CNN's mask head), smoothly or blockily, with a threshold that erodes or dilates it;
- ``drop``: a missed instance, whose pixels go to the stuff around it (or void);
- ``merge``: two touching instances of one class predicted as one;
- ``split``: one instance predicted as two;
- ``wrong_class``: a thing or stuff segment given another category of the same kind;
- ``false_positive``: a spurious small thing;
- ``stuff_boundary``: boundaries between stuff regions displaced by a smooth random warp, void filled.

Crowd regions become ordinary segments of their class (or are dropped): a prediction never has ``iscrowd``.
numpy and Pillow only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InvalidInputError
from .panoptic import PanopticSet, PanopticWriter, load_set, set_paths, where
from .synth import random_segment_ids, smooth_noise

#: Mask R-CNN's mask head resolution.
MASK_GRID = 28


@dataclass
class CorruptionConfig:
    """How strongly :func:`corrupt` damages a ground truth.

    Each failure probability is its value at the default ``strength`` 0.5; the effective probability scales in
    proportion, ``probability * strength / 0.5`` (capped at 1), and the size of geometric errors (box jitter,
    threshold shift, stuff warp) also grows with ``strength``. ``strength`` 0 changes nothing but the segment
    ids and crowd flags; 1 is a poor base model.

    - ``coarse_boundary``, ``drop``, ``split``: per thing segment; ``wrong_class``: per segment;
    - ``merge``: per pair of touching instances of one class;
    - ``false_positive``: per image, the chance of spurious things (one, sometimes more);
    - ``stuff_boundary``: per image, the chance that stuff boundaries are warped and void is filled;
    - ``crowd_drop``: per crowd region, the chance that it is dropped instead of becoming a normal segment.
    """

    strength: float = 0.5
    coarse_boundary: float = 0.8
    drop: float = 0.12
    merge: float = 0.4
    split: float = 0.08
    wrong_class: float = 0.12
    false_positive: float = 0.5
    stuff_boundary: float = 0.8
    crowd_drop: float = 0.3
    #: a fragment made by a corruption (split half, coarse mask, spurious blob) smaller than this is not kept
    min_area: int = 8

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "min_area":
                if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 1 <= v <= 10000:
                    raise ValueError(f"min_area must be an integer in [1, 10000], got {v!r}")
                continue
            if not isinstance(v, (int, float, np.floating, np.integer)) or isinstance(v, bool) \
                    or not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{f.name} must be a number in [0, 1], got {v!r}")

    def p(self, name: str) -> float:
        """Effective probability of one failure mode at this strength."""
        return min(1.0, float(getattr(self, name)) * float(self.strength) / 0.5)

    def to_dict(self) -> dict:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in dataclasses.asdict(self).items()}


# --------------------------------------------------------------------------------------------------------------
# the working prediction


class _Work:
    """A prediction under construction: a label map of indices into ``cats``/``thing`` (-1 = void).

    ``bg`` is, for every pixel, the stuff segment nearest to it (-1 when the image has no stuff): where a
    thing's pixels are given up, a base model's semantic head would predict the stuff around it.
    """

    def __init__(self, lab: np.ndarray, cats: list[int], thing: list[bool]):
        self.lab = lab
        self.cats = cats
        self.thing = thing
        self.bg = _nearest_stuff(lab, self.is_stuff_lut())

    def is_thing_lut(self) -> np.ndarray:
        """Lookup by ``lab + 1``: True for thing segments (void is index 0, False)."""
        return np.array([False] + self.thing, bool)

    def is_stuff_lut(self) -> np.ndarray:
        return np.array([False] + [not t for t in self.thing], bool)

    def add(self, cat: int, thing: bool) -> int:
        self.cats.append(int(cat))
        self.thing.append(bool(thing))
        return len(self.cats) - 1

    def relabel(self, target: np.ndarray) -> None:
        """Map every segment index ``i`` to ``target[i]`` in ``lab`` and ``bg``."""
        lut = np.concatenate([[-1], target]).astype(np.int32)
        self.lab = lut[self.lab + 1]
        self.bg = lut[self.bg + 1]

    def give_up(self, mask: np.ndarray, to_void: bool = False) -> None:
        """Pixels in ``mask`` go to the surrounding stuff (or void)."""
        self.lab[mask] = -1 if to_void else self.bg[mask]


def _nearest_stuff(lab: np.ndarray, is_stuff_lut: np.ndarray, factor: int = 4) -> np.ndarray:
    """Per pixel, a nearby stuff segment index (its own where it is stuff), -1 when there is no stuff.

    Stuff labels are grown into the other pixels on a grid ``factor`` times coarser, which is as accurate as a
    fill needs to be and keeps the number of growth steps small.
    """
    h, w = lab.shape
    if min(h, w) < 2 * factor:
        factor = 1
    stuff = is_stuff_lut[lab + 1]
    # one sample per factor x factor block (the last, partial blocks included), near the block's centre
    ry = np.minimum(np.arange(0, h, factor) + factor // 2, h - 1)
    rx = np.minimum(np.arange(0, w, factor) + factor // 2, w - 1)
    small_lab = lab[np.ix_(ry, rx)]
    cur = np.where(stuff[np.ix_(ry, rx)], small_lab, -1).astype(np.int32)
    if (cur < 0).all():
        # a stuff region can hide between the grid's samples
        if stuff.any():
            cur[:] = lab[stuff][0]
        else:
            return np.where(stuff, lab, -1).astype(np.int32)
    for _ in range(sum(cur.shape)):
        missing = cur < 0
        if not missing.any():
            break
        for axis, step in ((0, 1), (0, -1), (1, 1), (1, -1)):
            src = np.roll(cur, step, axis=axis)
            # np.roll wraps around; the wrapped row/column must not feed the opposite border
            edge = [slice(None), slice(None)]
            edge[axis] = 0 if step == 1 else -1
            src[tuple(edge)] = -1
            take = (cur < 0) & (src >= 0)
            cur[take] = src[take]
    up = np.repeat(np.repeat(cur, factor, axis=0), factor, axis=1)[:h, :w]
    return np.where(stuff, lab, up).astype(np.int32)


def _segment_boxes(lab: np.ndarray, n: int) -> np.ndarray:
    """(n, 4) [y0, y1, x0, x1) boxes of segment indices 0..n-1 (empty segments get y0 >= y1)."""
    h, w = lab.shape
    # Which rows and columns each segment touches, by one scattered assignment per axis: several times faster
    # than np.minimum.at / np.maximum.at over every pixel.
    rows = np.zeros((n + 1, h), bool)
    cols = np.zeros((n + 1, w), bool)
    rows[lab + 1, np.arange(h)[:, None]] = True
    cols[lab + 1, np.arange(w)[None, :]] = True
    rows, cols = rows[1:], cols[1:]
    boxes = np.empty((n, 4), np.int64)
    boxes[:, 0] = np.argmax(rows, axis=1)
    boxes[:, 1] = h - np.argmax(rows[:, ::-1], axis=1)
    boxes[:, 2] = np.argmax(cols, axis=1)
    boxes[:, 3] = w - np.argmax(cols[:, ::-1], axis=1)
    empty = ~rows.any(axis=1)
    boxes[empty] = (h, 0, w, 0)
    return boxes


# --------------------------------------------------------------------------------------------------------------
# failure modes


def _drop(work: _Work, rng: np.random.Generator, p: float) -> None:
    for i in range(len(work.cats)):
        if work.thing[i] and rng.random() < p:
            to_void = rng.random() < 0.3
            work.give_up(work.lab == i, to_void)


def _wrong_class(work: _Work, rng: np.random.Generator, p: float, thing_cats: list[int],
                 stuff_cats: list[int]) -> None:
    n = len(work.cats)
    target = np.arange(n)
    for i in range(n):
        pool = thing_cats if work.thing[i] else stuff_cats
        if rng.random() >= p or len(pool) < 2 or target[i] != i:
            continue
        others = [c for c in pool if c != work.cats[i]]
        work.cats[i] = others[int(rng.integers(0, len(others)))]
        if not work.thing[i]:
            # a prediction has one segment per stuff class: a relabelled region joins that class's segment
            for j in range(n):
                if j != i and not work.thing[j] and target[j] == j and work.cats[j] == work.cats[i]:
                    target[target == i] = j
                    break
    if (target != np.arange(n)).any():
        work.relabel(target)


def _merge(work: _Work, rng: np.random.Generator, p: float) -> None:
    lab = work.lab
    n = len(work.cats)
    if n < 2 or p <= 0:
        return
    a = np.concatenate([lab[:, :-1].ravel(), lab[:-1, :].ravel()])
    b = np.concatenate([lab[:, 1:].ravel(), lab[1:, :].ravel()])
    sel = (a != b) & (a >= 0) & (b >= 0)
    lo, hi = np.minimum(a[sel], b[sel]).astype(np.int64), np.maximum(a[sel], b[sel]).astype(np.int64)
    keys = np.unique(lo * n + hi)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    changed = False
    for key in keys.tolist():
        i, j = divmod(key, n)
        if not (work.thing[i] and work.thing[j]) or work.cats[i] != work.cats[j]:
            continue
        if rng.random() < p:
            ri, rj = root(i), root(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
                changed = True
    if changed:
        work.relabel(np.array([root(i) for i in range(n)]))


def _split(work: _Work, rng: np.random.Generator, p: float, min_area: int) -> None:
    n = len(work.cats)
    boxes = _segment_boxes(work.lab, n)
    for i in range(n):
        if not work.thing[i] or rng.random() >= p:
            continue
        y0, y1, x0, x1 = boxes[i]
        if y0 >= y1:
            continue
        crop = work.lab[y0:y1, x0:x1]
        ys, xs = np.nonzero(crop == i)
        if ys.size < 2 * min_area:
            continue
        # a cut across the instance near its centroid, as when a detector fires twice on one object
        angle = rng.uniform(0, np.pi)
        proj = (xs - xs.mean()) * np.cos(angle) + (ys - ys.mean()) * np.sin(angle)
        side = proj > rng.normal(0, 0.2) * proj.std()
        if min_area <= side.sum() <= ys.size - min_area:
            j = work.add(work.cats[i], True)
            crop[ys[side], xs[side]] = j


def _coarse_boundary(work: _Work, rng: np.random.Generator, p: float, strength: float, min_area: int) -> None:
    from PIL import Image

    h, w = work.lab.shape
    n = len(work.cats)
    boxes = _segment_boxes(work.lab, n)
    for i in range(n):
        if not work.thing[i] or rng.random() >= p:
            continue
        y0, y1, x0, x1 = (int(v) for v in boxes[i])
        if y0 >= y1:
            continue
        bh, bw = y1 - y0, x1 - x0
        soft = Image.fromarray((work.lab[y0:y1, x0:x1] == i).astype(np.float32))
        soft = soft.resize((MASK_GRID, MASK_GRID), Image.Resampling.BOX)
        # the predicted box is a little off, so the mask is pasted slightly shifted and scaled
        jit = rng.normal(0.0, 0.1 * strength, 4)
        ny0 = int(round(y0 + jit[0] * bh))
        nx0 = int(round(x0 + jit[1] * bw))
        ny1 = max(ny0 + 1, int(round(y1 + jit[2] * bh)))
        nx1 = max(nx0 + 1, int(round(x1 + jit[3] * bw)))
        # smooth (bilinear, Mask R-CNN) or blocky (nearest, a low-resolution semantic head) boundaries
        smooth = rng.random() < 0.7
        resample = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
        up = np.asarray(soft.resize((nx1 - nx0, ny1 - ny0), resample))
        thr = 0.5 + rng.uniform(-0.3, 0.3) * strength  # below 0.5 dilates, above erodes
        new = up >= thr
        # clip the pasted mask to the image
        cy0, cx0, cy1, cx1 = max(ny0, 0), max(nx0, 0), min(ny1, h), min(nx1, w)
        if cy0 >= cy1 or cx0 >= cx1:
            work.give_up(work.lab == i)
            continue
        new = new[cy0 - ny0:cy1 - ny0, cx0 - nx0:cx1 - nx0]
        # the window covering both the old and the new mask
        wy0, wy1, wx0, wx1 = min(y0, cy0), max(y1, cy1), min(x0, cx0), max(x1, cx1)
        win = work.lab[wy0:wy1, wx0:wx1]
        new_full = np.zeros(win.shape, bool)
        new_full[cy0 - wy0:cy1 - wy0, cx0 - wx0:cx1 - wx0] = new
        old = win == i
        # the mask only grows over stuff and void: overlaps between things are settled by the fusion step
        free = ~work.is_thing_lut()[win + 1]
        grown = new_full & (old | free)
        if grown.sum() < min_area:
            work.give_up(work.lab == i)
            continue
        lost = old & ~grown
        win[lost] = work.bg[wy0:wy1, wx0:wx1][lost]
        win[grown] = i


def _false_positives(work: _Work, rng: np.random.Generator, p: float, strength: float, thing_cats: list[int],
                     min_area: int) -> None:
    if not thing_cats or rng.random() >= p:
        return
    h, w = work.lab.shape
    count = 1 + int(rng.poisson(0.5 * strength))
    for _ in range(count):
        cat = thing_cats[int(rng.integers(0, len(thing_cats)))]
        size = max(8.0, min(h, w) * rng.uniform(0.03, 0.12))  # detectors rarely fire on specks
        ry, rx = size / 2 * rng.uniform(0.6, 1.0), size / 2 * rng.uniform(0.6, 1.0)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ang = rng.uniform(0, np.pi)
        y0, y1 = max(0, int(cy - size)), min(h, int(cy + size) + 1)
        x0, x1 = max(0, int(cx - size)), min(w, int(cx + size) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1)[:, None] + 0.5 - cy
        dx = np.arange(x0, x1)[None, :] + 0.5 - cx
        u = dx * np.cos(ang) + dy * np.sin(ang)
        v = dy * np.cos(ang) - dx * np.sin(ang)
        blob = (u / rx) ** 2 + (v / ry) ** 2 <= 1
        win = work.lab[y0:y1, x0:x1]
        # a spurious detection shows up on background; over another thing the fusion step would hide it
        blob &= ~work.is_thing_lut()[win + 1]
        if blob.sum() >= min_area:
            win[blob] = work.add(cat, True)


def _stuff_boundary(work: _Work, rng: np.random.Generator, p: float, strength: float) -> None:
    if rng.random() >= p:
        return
    h, w = work.lab.shape
    # void at stuff borders is where annotators gave up; a model predicts something there
    void = work.lab < 0
    work.lab[void] = work.bg[void]
    amp = (1.0 + 16.0 * strength) * min(h, w) / 240.0
    cells = rng.uniform(3, 8)
    dy = np.rint(smooth_noise(rng, h, w, cells) * amp).astype(np.int64)
    dx = np.rint(smooth_noise(rng, h, w, cells) * amp).astype(np.int64)
    yy = np.clip(np.arange(h)[:, None] + dy, 0, h - 1)
    xx = np.clip(np.arange(w)[None, :] + dx, 0, w - 1)
    src = work.lab[yy, xx]
    is_thing = work.is_thing_lut()
    # only stuff moves; things keep their own (separately corrupted) masks
    ok = ~is_thing[work.lab + 1] & ~is_thing[src + 1]
    work.lab = np.where(ok, src, work.lab)


# --------------------------------------------------------------------------------------------------------------
# public API


def corrupt(ids: np.ndarray, segments_info: list[dict], categories: list[dict], rng: np.random.Generator | int,
            config: CorruptionConfig | None = None) -> tuple[np.ndarray, list[dict]]:
    """Turn one ground-truth annotation into a plausible base-model prediction.

    ``ids`` (H, W) are the GT segment ids, ``segments_info`` their GT records, ``categories`` the set's
    categories (the prediction uses only these). Returns ``(ids, segments_info)`` of a valid prediction: fresh
    random segment ids in [1, 2^24), every non-zero id listed once as ``{id, category_id, iscrowd: 0}``, no
    segment without pixels. The result depends only on the inputs and the state of ``rng`` (a Generator, or an
    int seed). Raises ValueError when the GT is inconsistent (unlisted ids, unknown categories).
    """
    config = config if config is not None else CorruptionConfig()
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"ids must be an (H, W) array, got shape {ids.shape}")
    cat_kind = {int(c["id"]): bool(c.get("isthing", 0)) for c in categories}
    thing_cats = [int(c["id"]) for c in categories if c.get("isthing", 0)]
    stuff_cats = [int(c["id"]) for c in categories if not c.get("isthing", 0)]

    listed = [s for s in segments_info if int(s["id"]) != 0]
    for s in listed:
        if int(s["category_id"]) not in cat_kind:
            raise ValueError(f"segment {s['id']} has category_id {s['category_id']}, not among the categories")
    seg_ids = np.array([int(s["id"]) for s in listed], np.int64)
    if len(np.unique(seg_ids)) != len(seg_ids):
        raise ValueError("a segment id is listed twice in segments_info")
    # ids -> indices into ``listed`` by binary search in the few listed ids: cheaper than np.unique over pixels
    flat = ids.astype(np.int64, copy=False)
    lab = np.full(ids.shape, -1, np.int32)
    known = np.zeros(ids.shape, bool)
    if len(seg_ids):
        order = np.argsort(seg_ids, kind="stable")
        sorted_ids = seg_ids[order]
        pos = np.minimum(np.searchsorted(sorted_ids, flat), len(sorted_ids) - 1)
        known = sorted_ids[pos] == flat
        lab[known] = order[pos[known]]
    unlisted = (flat != 0) & ~known
    if unlisted.any():
        bad = np.unique(flat[unlisted])[:5].tolist()
        raise ValueError(f"segment ids {bad} are in the PNG but not in segments_info")

    cats = [int(s["category_id"]) for s in listed]
    thing = [cat_kind[c] for c in cats]
    crowd = [bool(s.get("iscrowd", 0)) for s in listed]
    work = _Work(lab, cats, thing)
    s = float(config.strength)

    # Crowd regions become ordinary segments (a model cannot predict iscrowd) or vanish.
    for i in range(len(cats)):
        if crowd[i] and rng.random() < config.p("crowd_drop"):
            work.give_up(work.lab == i)
    _drop(work, rng, config.p("drop"))
    _wrong_class(work, rng, config.p("wrong_class"), thing_cats, stuff_cats)
    _merge(work, rng, config.p("merge"))
    _split(work, rng, config.p("split"), config.min_area)
    _coarse_boundary(work, rng, config.p("coarse_boundary"), s, config.min_area)
    _false_positives(work, rng, config.p("false_positive"), s, thing_cats, config.min_area)
    _stuff_boundary(work, rng, config.p("stuff_boundary"), s)

    n = len(work.cats)
    counts = np.bincount(work.lab[work.lab >= 0].ravel(), minlength=n)
    keep = [i for i in range(n) if counts[i] > 0]
    new_ids = random_segment_ids(rng, len(keep))
    lut = np.zeros(n + 1, np.uint32)
    lut[np.array(keep, np.int64) + 1] = new_ids
    out = lut[work.lab + 1]
    segs = [{"id": sid, "category_id": work.cats[i], "iscrowd": 0} for i, sid in zip(keep, new_ids)]
    return out, segs


def _image_entropy(image_id) -> list[int]:
    """SeedSequence entropy for an image id; string ids hash stably (Python's hash() is salted per run)."""
    if isinstance(image_id, (int, np.integer)) and not isinstance(image_id, bool) and image_id >= 0:
        return [0, int(image_id)]
    digest = hashlib.sha256(repr(image_id).encode("utf-8")).digest()
    return [1, int.from_bytes(digest[:8], "little")]


def write_corrupted_set(gt_path_or_set: str | os.PathLike | PanopticSet, out_dir: str | os.PathLike, *,
                        seed: int = 0, config: CorruptionConfig | None = None, overwrite: bool = False,
                        progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a corrupted copy of a GT set as a prediction set at ``out_dir/panoptic.json`` + ``out_dir/panoptic/``.

    PNG names, image records and categories are the GT's. Each image's corruption depends only on ``seed``,
    its ``image_id`` and ``config``. An existing prediction is refused (OutputExistsError) unless ``overwrite``;
    the JSON is written last. ``progress(done, total)`` is called after each image. Returns the JSON path.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    config = config if config is not None else CorruptionConfig()
    gt = gt_path_or_set if isinstance(gt_path_or_set, PanopticSet) else load_set(gt_path_or_set)
    json_path, png_dir = set_paths(out_dir)
    images = gt.images_by_id
    info = {"description": f"corrupted copy of {gt.json_path.name} (a simulated base-model prediction)",
            "generator": "prn_cli.perturb", "seed": int(seed), "config": config.to_dict()}
    total = len(gt.annotations)
    with PanopticWriter(json_path, png_dir, gt.categories, overwrite=overwrite, info=info) as writer:
        for k, ann in enumerate(gt.annotations):
            ids = gt.read_ids(ann)
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), *_image_entropy(ann["image_id"])]))
            try:
                pred, segs = corrupt(ids, ann["segments_info"], gt.categories, rng, config)
            except ValueError as exc:
                raise InvalidInputError(f"{where(gt, ann)}: {exc}; fix or regenerate the ground truth") from None
            image = images.get(ann["image_id"])
            if image is None:
                image = {"id": ann["image_id"], "file_name": ann["file_name"],
                         "width": int(ids.shape[1]), "height": int(ids.shape[0])}
            writer.add(image, pred, segs, file_name=ann["file_name"])
            if progress is not None:
                progress(k + 1, total)
    return json_path
