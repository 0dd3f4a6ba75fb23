"""Where is thing PQ lost between a base set and its PRN refinement? Numbers, per cause.

Usage::

    python benchmarks/diagnose_things.py --gt DATA --base BASE --refined REFINED \\
        [--images DATA/images/val] [--weights PRN_CKPT] [--limit N] [--grouping-limit N] [--json PATH|-]

A SET (``--gt``, ``--base``, ``--refined``) is anything ``prn eval`` takes: a panoptic JSON, a folder written by
a prn command with ``--out``, or a ``prn synth`` root. Markdown tables go to stdout; ``--json PATH`` also writes
every figure as JSON (``--json -``: the JSON on stdout instead of the tables). PQ/SQ/RQ are fractions in the JSON
(as ``prn eval --json``) and percent in the tables. ``--limit N`` keeps the first N GT images for every section.

Sections (definitions in ``benchmarks/README.md``, "diagnose_things.py"):

1. **Grouping floor and ceiling.** PRN's post-processing (the checkpoint's stored ``PostProcessConfig``, once per
   foreground source) run on *perfect network outputs* rendered by PRN's own target renderer from the base
   (floor: a network that copies its base exactly) and from the GT (ceiling: a network that predicts the GT
   exactly). ``--grouping-limit`` (default: all) bounds the images, since this is the slow part.
2. **Distance from a copy of the base.** The refined set evaluated with the base as ground truth; ~100 PQ
   means PRN copies its base.
3. **Mask quality of matched things.** GT things matched (the PQ rule) by both base and refined: IoU of each.
   Then the **boundary ceiling** (the base alone): every GT thing's base segment of its category with the
   highest IoU, as is and with a band of r = 1, 2, 3 pixels around its boundary replaced by the GT; how many GT
   things are matched and their mean IoU: the most a refinement that moves thing boundaries by up to r pixels
   can gain. Last, the **re-cut with a perfect boundary refiner**: the refined set's things re-cut by prn's own
   boundary re-cut (``models/prn/boundary.py``, radius 2, no per-thing gate) with the GT's thing foreground as
   the refiner's probability, evaluated like the rest: what a better boundary refiner could still add to PQ.
4. **Thing recall by the base's failure kind** and the fate of the base's thing false positives.
5. **Head oracles** (only with ``--images``): PRN is run on the base, then each head's output in turn is replaced
   by the perfect GT map before post-processing; the PQth each oracle gains says which head loses thing PQ. A last
   row runs PRN again with the base's instance maps blanked (its foreground and classes kept, as
   ``--base-instance-dropout`` does in training): what PRN's own instance heads read from the image.
6. **What PRN's heads see on the base's failures** (with ``--images``, same run as section 5): per base failure
   kind of section 4, over the pixels of each GT thing, how often PRN's semantic argmax is the GT class, is any
   thing class, or equals the base's class; the mean foreground probability; how often the centre heatmap
   peaks above the post-processing's threshold inside the thing. Says whether PRN fails to *see* a thing the
   base missed (semantic / foreground) or sees it and the grouping loses it (centre).

Everything is deterministic. Sections 2-4 cost a few ms per image (numpy, one ``bincount`` of packed id pairs per
pair of maps, and sliding maxima over a crop around each GT thing's base segment for the boundary ceiling);
section 1 runs the post-processing four times per image and section 5 runs PRN once and the
post-processing up to eight times per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from prn_cli.errors import InvalidInputError, fail
from prn_cli.evaluate import evaluate
from prn_cli.panoptic import (PanopticSet, PanopticWriter, index_ids, load_set, raster_runs, read_id_png,
                               segment_stats, set_paths)

#: Base failure kinds of a GT thing, in the order they are assigned (the first that applies wins).
KINDS = ("matched", "wrong_class", "merged", "split", "missed", "other")
KIND_LABELS = {"matched": "matched (base TP)", "wrong_class": "wrong class", "merged": "merged", "split": "split",
               "missed": "missed", "other": "other (poor mask)"}
#: COCO's size bins on the GT area: small < 32^2, medium < 96^2, large >= 96^2 pixels.
SIZE_BINS = (("small", 0, 32 ** 2), ("medium", 32 ** 2, 96 ** 2), ("large", 96 ** 2, math.inf))
#: |IoU refined - IoU base| above this counts as improved / worsened (section 3).
IOU_DELTA = 0.02
#: GT area bins of the recall-by-size table (section 4): COCO's small split at 10x10 and 16x16 pixels, where
#: synthetic and real bases lose most things.
RECALL_BINS = (("< 100 px", 0, 100), ("100-256 px", 100, 256), ("256-1024 px", 256, 32 ** 2),
               ("1024-9216 px", 32 ** 2, 96 ** 2), (">= 9216 px", 96 ** 2, math.inf))
#: Band radii (pixels, chessboard distance) of the boundary ceiling (section 3).
BAND_RADII = (1, 2, 3)
#: Radius (pixels) of the re-cut with a perfect boundary refiner (section 3): the shipped PRN's.
RECUT_RADIUS = 2
#: Logit magnitude of the "perfect" semantic and foreground maps (section 1, 5).
PERFECT_LOGIT = 20.0
#: Thresholds of the failure kinds (section 4).
COVER_MAIN = 0.5
COVER_SPLIT = 0.2


# --------------------------------------------------------------------------------------------------------------
# loading


@dataclasses.dataclass
class Inputs:
    gt: PanopticSet            # the GT restricted to the analysed images (GT order)
    base: PanopticSet
    refined: PanopticSet
    base_ann: list[dict]       # per GT annotation: the base annotation of that image
    refined_ann: list[dict]

    @property
    def thing_ids(self) -> np.ndarray:
        return np.array([c["id"] for c in self.gt.categories if c.get("isthing") == 1], dtype=np.int64)


def _paired(gt: PanopticSet, pred: PanopticSet) -> list[dict]:
    by_image = pred.annotations_by_image()
    out = []
    for ann in gt.annotations:
        p = by_image.get(ann["image_id"])
        if p is None:
            raise fail(pred.json_path, f"no annotation for the image with id {ann['image_id']} (listed in "
                       f"{gt.json_path})", "give every ground-truth image a prediction, or pass --limit")
        out.append(p)
    return out


def load_inputs(gt: str | Path | PanopticSet, base: str | Path | PanopticSet, refined: str | Path | PanopticSet,
                limit: int | None = None) -> Inputs:
    gt_set = gt if isinstance(gt, PanopticSet) else load_set(gt)
    base_set = base if isinstance(base, PanopticSet) else load_set(base, need_categories=False)
    ref_set = refined if isinstance(refined, PanopticSet) else load_set(refined, need_categories=False)
    anns = gt_set.annotations if limit is None else gt_set.annotations[:max(0, int(limit))]
    if not anns:
        raise fail(gt_set.json_path, "has no annotation to analyse", "pass a non-empty set (or a larger --limit)")
    gt_sub = dataclasses.replace(gt_set, annotations=list(anns))
    return Inputs(gt_sub, base_set, ref_set, _paired(gt_sub, base_set), _paired(gt_sub, ref_set))


def subset(inputs: Inputs, n: int | None) -> Inputs:
    if n is None or n >= len(inputs.gt.annotations):
        return inputs
    return Inputs(dataclasses.replace(inputs.gt, annotations=inputs.gt.annotations[:n]), inputs.base,
                  inputs.refined, inputs.base_ann[:n], inputs.refined_ann[:n])


# --------------------------------------------------------------------------------------------------------------
# per-image overlap and PQ matching (numpy)


def overlap(a: np.ndarray, a_ids: np.ndarray, b: np.ndarray, b_ids: np.ndarray) -> np.ndarray:
    """Pixel counts (len(a_ids) + 2, len(b_ids) + 2) of every (segment of map a, segment of map b) pair.

    Row / column 0 = id 0 (void), 1..n = the listed ids in order, n + 1 = non-zero ids that are not listed.
    One ``bincount`` of packed (row, column) pairs over the runs where both maps are constant.
    """
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.shape} vs {b.shape}")
    starts, lengths = raster_runs(a, b)
    av, bv = a.reshape(-1)[starts], b.reshape(-1)[starts]
    na, nb = len(a_ids), len(b_ids)
    rows = index_ids(av, a_ids).astype(np.int64)
    rows[(rows == 0) & (av != 0)] = na + 1
    cols = index_ids(bv, b_ids).astype(np.int64)
    cols[(cols == 0) & (bv != 0)] = nb + 1
    m = np.bincount(rows * (nb + 2) + cols, weights=lengths, minlength=(na + 2) * (nb + 2))
    return m.astype(np.int64).reshape(na + 2, nb + 2)


@dataclasses.dataclass
class Segs:
    """One annotation's segments as arrays (id 0 entries and repeated ids dropped; the last entry wins)."""

    ids: np.ndarray
    cats: np.ndarray
    crowd: np.ndarray
    area: np.ndarray           # JSON ``area``, -1 where absent

    @classmethod
    def of(cls, segments_info: Sequence[dict]) -> "Segs":
        table = {int(s["id"]): s for s in segments_info if int(s["id"]) != 0}
        segs = list(table.values())
        return cls(np.array([int(s["id"]) for s in segs], dtype=np.int64),
                   np.array([int(s["category_id"]) for s in segs], dtype=np.int64),
                   np.array([int(s.get("iscrowd", 0)) == 1 for s in segs], dtype=bool),
                   np.array([int(s.get("area", -1)) for s in segs], dtype=np.int64))


@dataclasses.dataclass
class Matching:
    """A prediction matched to the GT by the PQ rule (reference evaluator semantics, GT area from the JSON)."""

    inter: np.ndarray          # (G, P) pixels in common
    iou: np.ndarray            # (G, P) IoU with the PQ union (prediction pixels on GT void left out)
    cover: np.ndarray          # (G, P) share of the GT segment's PNG pixels covered by the prediction
    gt_area: np.ndarray        # (G,) area used in the IoU (JSON, else PNG)
    pred_area: np.ndarray      # (P,) PNG pixels
    tp: np.ndarray             # (G, P) bool: the matched pairs
    gt_matched: np.ndarray     # (G,) bool
    gt_iou: np.ndarray         # (G,) IoU of the match, nan when unmatched
    pred_matched: np.ndarray   # (P,) bool
    pred_fp: np.ndarray        # (P,) bool: unmatched and not ignored (<= 50 % on GT void + own-category crowd)


def match(gt_ids: np.ndarray, gt: Segs, pred_ids: np.ndarray, pred: Segs) -> Matching:
    m = overlap(gt_ids, gt.ids, pred_ids, pred.ids)
    g, p = len(gt.ids), len(pred.ids)
    inter = m[1:g + 1, 1:p + 1]
    gt_png = m[1:g + 1].sum(1)
    gt_area = np.where(gt.area >= 0, gt.area, gt_png)
    pred_area = m[:, 1:p + 1].sum(0)
    pred_void = m[0, 1:p + 1]
    union = pred_area[None, :] + gt_area[:, None] - inter - pred_void[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(inter > 0, inter / np.maximum(union, 1), 0.0)
        cover = np.where(inter > 0, inter / np.maximum(gt_png, 1)[:, None], 0.0)
    tp = (gt.cats[:, None] == pred.cats[None, :]) & ~gt.crowd[:, None] & (iou > 0.5)
    gt_matched, pred_matched = tp.any(1), tp.any(0)
    gt_iou = np.where(gt_matched, (iou * tp).max(1, initial=0.0), np.nan)
    # The reference's FP rule: only the last crowd region of the prediction's category ignores it.
    last_crowd: dict[int, int] = {}
    for i in np.flatnonzero(gt.crowd).tolist():
        last_crowd[int(gt.cats[i])] = i
    crowd_row = np.array([last_crowd.get(int(c), -1) for c in pred.cats], dtype=np.int64)
    on_crowd = np.where(crowd_row >= 0, inter[np.maximum(crowd_row, 0), np.arange(p)] if g else 0, 0)
    ignored = (pred_void + on_crowd) / np.maximum(pred_area, 1) > 0.5
    return Matching(inter, iou, cover, gt_area, pred_area, tp, gt_matched, gt_iou, pred_matched,
                    ~pred_matched & ~ignored)


def failure_kinds(gt: Segs, base: Segs, mb: Matching, thing_ids: np.ndarray) -> np.ndarray:
    """What a prediction (``base``, matched as ``mb``) did to every GT segment: an index into KINDS, -1 for stuff
    and crowd segments. See benchmarks/README.md for the definitions."""
    g_thing = np.isin(gt.cats, thing_ids) & ~gt.crowd
    b_thing = np.isin(base.cats, thing_ids)
    if len(base.ids) == 0:
        return np.where(g_thing, KINDS.index("missed"), -1)
    cover = mb.cover * b_thing[None, :]
    big = cover >= COVER_MAIN
    things_per_seg = (big & g_thing[:, None]).sum(0)                       # GT things each base segment covers
    wrong = ((mb.iou > 0.5) & (gt.cats[:, None] != base.cats[None, :]) & b_thing[None, :]).any(1)
    merged = (big & (things_per_seg >= 2)[None, :]).any(1)
    split = (cover >= COVER_SPLIT).sum(1) >= 2
    missed = cover.max(1) < COVER_MAIN
    kind = np.full(len(gt.ids), KINDS.index("other"))
    for name, flag in (("missed", missed), ("split", split), ("merged", merged), ("wrong_class", wrong),
                       ("matched", mb.gt_matched)):                             # reversed priority: last wins
        kind[flag] = KINDS.index(name)
    return np.where(g_thing, kind, -1)


def band(mask: np.ndarray, r: int) -> np.ndarray:
    """(H, W) bool: the pixels within chessboard distance ``r`` of the boundary of ``mask`` (H, W) bool, on either
    side: a (2r+1)x(2r+1) window around them holds both mask and non-mask pixels (the window clipped at the
    map's edges). PRN's own numpy band (``boundary_band_numpy``), the twin of its ``boundary_band``."""
    from prn_cli.models.prn.boundary import boundary_band_numpy

    return boundary_band_numpy(mask, r)


def boundary_ceiling_ious(gt_ids: np.ndarray, gt: Segs, base_ids: np.ndarray, base: Segs, mb: Matching,
                          rows: np.ndarray, radii: Sequence[int] = BAND_RADII) -> np.ndarray:
    """(len(rows), 1 + len(radii)) IoUs (the PQ union) of the GT segments ``rows`` (indices into ``gt``) with
    their base segment of the same category with the highest IoU: column 0 as is, column 1 + k with the pixels
    within ``radii[k]`` of that segment's boundary (:func:`band`) replaced by the GT segment's. 0 where no base
    segment of the category overlaps the GT segment."""
    out = np.zeros((len(rows), 1 + len(radii)))
    if len(base.ids) == 0 or len(rows) == 0:
        return out
    iou = np.where(gt.cats[:, None] == base.cats[None, :], mb.iou, 0.0)
    stats = None
    reach = 2 * max(radii, default=0)     # a band pixel's whole window lies within 2r of the segment's bbox
    h, w = base_ids.shape
    for k, i in enumerate(np.asarray(rows, dtype=np.int64).tolist()):
        j = int(iou[i].argmax())
        if iou[i, j] <= 0:
            continue
        out[k, 0] = iou[i, j]
        if stats is None:
            stats = segment_stats(base_ids)
        x, y, bw, bh = stats[int(base.ids[j])][1]
        crop = (slice(max(0, y - reach), min(h, y + bh + reach)), slice(max(0, x - reach), min(w, x + bw + reach)))
        seg = base_ids[crop] == base.ids[j]
        truth = gt_ids[crop] == gt.ids[i]
        void = gt_ids[crop] == 0
        for c, r in enumerate(radii):
            fixed = np.where(band(seg, r), truth, seg)
            inter = int((fixed & truth).sum())
            union = int(fixed.sum()) + int(mb.gt_area[i]) - inter - int((fixed & void).sum())
            out[k, 1 + c] = inter / max(union, 1) if inter > 0 else 0.0
    return out


def analyse_image(gt_ids: np.ndarray, gt_info: Sequence[dict], base_ids: np.ndarray, base_info: Sequence[dict],
                  ref_ids: np.ndarray, ref_info: Sequence[dict], thing_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Per GT thing and per base / refined thing segment of one image (the raw material of sections 3 and 4).

    ``ceiling_iou`` (GT things, 1 + len(BAND_RADII)): :func:`boundary_ceiling_ious` of the base."""
    gt, base, ref = Segs.of(gt_info), Segs.of(base_info), Segs.of(ref_info)
    mb = match(gt_ids, gt, base_ids, base)
    mr = match(gt_ids, gt, ref_ids, ref)
    kinds = failure_kinds(gt, base, mb, thing_ids)
    ref_kinds = failure_kinds(gt, ref, mr, thing_ids)     # the same classification of what the refined set did
    g_sel = kinds >= 0
    b_thing, r_thing = np.isin(base.cats, thing_ids), np.isin(ref.cats, thing_ids)
    g_thing_all = np.isin(gt.cats, thing_ids)                               # crowd included: "on things"
    base_fp = mb.pred_fp & b_thing
    ref_fp = mr.pred_fp & r_thing
    # A base FP persists when a refined FP has pixel IoU > 0.5 with it (whatever the classes).
    bo = overlap(base_ids, base.ids, ref_ids, ref.ids)[1:len(base.ids) + 1, 1:len(ref.ids) + 1]
    union = mb.pred_area[:, None] + mr.pred_area[None, :] - bo
    same = np.where(bo > 0, bo / np.maximum(union, 1), 0.0) > 0.5
    persists = (same & ref_fp[None, :]).any(1)
    from_base_fp = (same & base_fp[:, None]).any(0)
    on_things = (mb.inter * g_thing_all[:, None]).sum(0) >= 0.5 * np.maximum(mb.pred_area, 1)
    # "new" refined things: PRN's own, matching no base segment of any class (pixel IoU > 0.5)
    new = r_thing & ~same.any(0)
    return {
        "kind": kinds[g_sel],
        "ref_kind": ref_kinds[g_sel],
        "gt_area": mb.gt_area[g_sel],
        "base_iou": mb.gt_iou[g_sel],
        "ref_iou": mr.gt_iou[g_sel],
        "ceiling_iou": boundary_ceiling_ious(gt_ids, gt, base_ids, base, mb, np.flatnonzero(g_sel)),
        "base_fp_on_things": on_things[base_fp],
        "base_fp_persists": persists[base_fp],
        "ref_fp_from_base": from_base_fp[ref_fp],
        "new_area": mr.pred_area[new],
        "new_tp": mr.pred_matched[new],
        "new_fp": mr.pred_fp[new],
        # thing TP / FP / FN as the evaluator counts them (thing categories only)
        "tp": np.array([int((mb.gt_matched & g_sel).sum()), int((mr.gt_matched & g_sel).sum())]),
        "fp": np.array([int(base_fp.sum()), int(ref_fp.sum())]),
        "fn": np.array([int((~mb.gt_matched & g_sel).sum()), int((~mr.gt_matched & g_sel).sum())]),
    }


def collect(inputs: Inputs) -> dict[str, np.ndarray]:
    """:func:`analyse_image` over every image, concatenated (tp/fp/fn summed)."""
    thing_ids = inputs.thing_ids
    parts: dict[str, list] = {}
    for ann, b_ann, r_ann in zip(inputs.gt.annotations, inputs.base_ann, inputs.refined_ann):
        gt_ids = read_id_png(inputs.gt.png_path(ann), what="ground-truth PNG")
        b_ids = read_id_png(inputs.base.png_path(b_ann), what="base PNG")
        r_ids = read_id_png(inputs.refined.png_path(r_ann), what="refined PNG")
        for what, ids, path in (("base", b_ids, inputs.base.png_path(b_ann)),
                                ("refined", r_ids, inputs.refined.png_path(r_ann))):
            if ids.shape != gt_ids.shape:
                raise InvalidInputError(f"{path}: {what} PNG is {ids.shape[1]}x{ids.shape[0]} but the ground "
                                        f"truth is {gt_ids.shape[1]}x{gt_ids.shape[0]} (image {ann['image_id']})")
        rec = analyse_image(gt_ids, ann["segments_info"], b_ids, b_ann["segments_info"], r_ids,
                            r_ann["segments_info"], thing_ids)
        for k, v in rec.items():
            parts.setdefault(k, []).append(v)
    out = {k: (np.sum(v, axis=0) if k in ("tp", "fp", "fn") else np.concatenate(v)) for k, v in parts.items()}
    return out


# --------------------------------------------------------------------------------------------------------------
# sections 3 and 4 from the collected records


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if len(x) else None


def mask_quality(rec: dict[str, np.ndarray]) -> dict[str, Any]:
    both = ~np.isnan(rec["base_iou"]) & ~np.isnan(rec["ref_iou"])
    rows = {}
    for name, lo, hi in (("all", 0, math.inf),) + SIZE_BINS:
        sel = both & (rec["gt_area"] >= lo) & (rec["gt_area"] < hi)
        b, r = rec["base_iou"][sel], rec["ref_iou"][sel]
        n = int(sel.sum())
        rows[name] = {"gt_things": int(((rec["gt_area"] >= lo) & (rec["gt_area"] < hi)).sum()), "n": n,
                      "mean_iou_base": _mean(b), "mean_iou_refined": _mean(r),
                      "improved": float(((r - b) > IOU_DELTA).mean()) if n else None,
                      "worsened": float(((b - r) > IOU_DELTA).mean()) if n else None}
    return rows


def boundary_ceiling(rec: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per GT-area bin: GT things matched (IoU > 0.5) by their best base segment of the same category as is
    (``base``) and with a band of r pixels around it replaced by the GT (``r1``, ``r2``, ...), and the mean IoU
    of the matched ones."""
    ious = rec["ceiling_iou"].reshape(len(rec["gt_area"]), 1 + len(BAND_RADII))
    rows = {}
    for name, lo, hi in (("all", 0, math.inf),) + SIZE_BINS:
        sel = (rec["gt_area"] >= lo) & (rec["gt_area"] < hi)
        row = {}
        for c, key in enumerate(["base"] + [f"r{r}" for r in BAND_RADII]):
            v = ious[sel, c]
            ok = v > 0.5
            row[key] = {"gt_things": int(sel.sum()), "matched": int(ok.sum()), "mean_iou": _mean(v[ok])}
        rows[name] = row
    return {"radii": list(BAND_RADII), "rows": rows}


def recovery(rec: dict[str, np.ndarray]) -> dict[str, Any]:
    ref_tp = ~np.isnan(rec["ref_iou"])
    kinds = {}
    for i, name in enumerate(KINDS):
        sel = rec["kind"] == i
        n = int(sel.sum())
        kinds[name] = {"gt_things": n, "refined_tp": int((ref_tp & sel).sum()),
                       "recovered": float((ref_tp & sel).sum() / n) if n else None}
    transitions = {b: {r: int(((rec["kind"] == i) & (rec["ref_kind"] == j)).sum()) for j, r in enumerate(KINDS)}
                   for i, b in enumerate(KINDS)}
    fps = {}
    for name, sel in (("on_background", ~rec["base_fp_on_things"]), ("on_things", rec["base_fp_on_things"]),
                      ("all", np.ones(len(rec["base_fp_on_things"]), dtype=bool))):
        n = int(sel.sum())
        still = int((rec["base_fp_persists"] & sel).sum())
        fps[name] = {"base_fp": n, "still_fp": still, "removed": n - still}
    tp, fp, fn = rec["tp"], rec["fp"], rec["fn"]
    totals = {}
    for k, name in enumerate(("base", "refined")):
        t, f, n = int(tp[k]), int(fp[k]), int(fn[k])
        totals[name] = {"tp": t, "fp": f, "fn": n, "precision": t / (t + f) if t + f else None,
                        "recall": t / (t + n) if t + n else None}
    totals["refined"]["fp_new"] = int((~rec["ref_fp_from_base"]).sum())
    by_size = {}
    for name, lo, hi in RECALL_BINS:
        sel = (rec["gt_area"] >= lo) & (rec["gt_area"] < hi)
        n = int(sel.sum())
        b, r = int((~np.isnan(rec["base_iou"]) & sel).sum()), int((ref_tp & sel).sum())
        by_size[name] = {"gt_things": n, "base_tp": b, "refined_tp": r,
                         "base_recall": b / n if n else None, "refined_recall": r / n if n else None}
    new_things = {}
    for name, lo, hi in (("all", 0, math.inf),) + RECALL_BINS:
        sel = (rec["new_area"] >= lo) & (rec["new_area"] < hi)
        n, t, f = int(sel.sum()), int((rec["new_tp"] & sel).sum()), int((rec["new_fp"] & sel).sum())
        new_things[name] = {"count": n, "tp": t, "fp": f, "precision": t / (t + f) if t + f else None}
    return {"kinds": kinds, "transitions": transitions, "base_fp": fps, "totals": totals, "by_size": by_size,
            "new_things": new_things}


# --------------------------------------------------------------------------------------------------------------
# evaluation helpers


def _thing_counts(result, gt: PanopticSet) -> dict[str, int]:
    things = {c["id"] for c in gt.categories if c.get("isthing") == 1}
    out = {"tp": 0, "fp": 0, "fn": 0}
    for cid, v in result.per_class.items():
        if cid in things:
            for k in out:
                out[k] += int(v[k])
    return out


def _summary(result, gt: PanopticSet) -> dict[str, Any]:
    g = result.groups
    return {"pq": g["All"]["pq"], "pq_th": g["Things"]["pq"], "pq_st": g["Stuff"]["pq"],
            "sq_th": g["Things"]["sq"], "rq_th": g["Things"]["rq"], "things": _thing_counts(result, gt)}


def recut_oracle(inputs: Inputs, work: Path, radius: int = RECUT_RADIUS) -> dict[str, Any]:
    """Section 3, last table: the refined set's thing boundaries re-cut (``refine_thing_boundaries``, every thing,
    no gate) with the GT's thing foreground as the boundary refiner's probability, 1 on GT thing pixels, 0 on
    the others and 0.5 on GT void, which a re-cut at confidence 0.6 leaves where it is."""
    from prn_cli.models.prn.boundary import refine_thing_boundaries

    thing_cats = {int(c["id"]) for c in inputs.gt.categories if c.get("isthing") == 1}
    writers = _SetWriters(work, ["recut"], inputs.gt.categories)
    moved = 0
    for ann, r_ann in zip(inputs.gt.annotations, inputs.refined_ann):
        gt_ids = read_id_png(inputs.gt.png_path(ann), what="ground-truth PNG")
        r_ids = read_id_png(inputs.refined.png_path(r_ann), what="refined PNG")
        if gt_ids.shape != r_ids.shape:
            raise fail(inputs.refined.png_path(r_ann), f"is {r_ids.shape[1]}x{r_ids.shape[0]}, the GT "
                       f"{gt_ids.shape[1]}x{gt_ids.shape[0]}", "refine at the ground truth's size")
        gt_things = [s["id"] for s in ann["segments_info"] if int(s["category_id"]) in thing_cats]
        probability = np.where(np.isin(gt_ids, gt_things), 1.0, np.where(gt_ids == 0, 0.5, 0.0)).astype(np.float32)
        segs = list(r_ann["segments_info"])
        out = refine_thing_boundaries(r_ids, segs, probability, thing_cats, radius, 0.6)
        moved += int((out != r_ids).sum())
        present = set(np.unique(out).tolist())
        writers.add("recut", _image_record(inputs.gt, ann, out), ann, out,
                    [s for s in segs if int(s["id"]) in present])
    rep = evaluate(inputs.gt, [inputs.refined, *writers.sets()], workers=0, names=["refined", "recut"])
    rows = {name: _summary(res, inputs.gt) for name, res in zip(("refined", "recut"), rep.results)}
    return {"radius": radius, "pixels_moved": moved, "rows": rows}


def copy_distance(inputs: Inputs) -> dict[str, Any]:
    """Section 2: the refined set evaluated with the base as ground truth (GT categories)."""
    base_as_gt = PanopticSet(json_path=inputs.base.json_path, png_dir=inputs.base.png_dir,
                             categories=list(inputs.gt.categories), images=list(inputs.base.images),
                             annotations=list(inputs.base_ann))
    res = evaluate(base_as_gt, [inputs.refined], workers=0, names=["refined"]).results[0]
    out = {}
    for group in ("Things", "Stuff", "All"):
        out[group] = {k: res.groups[group][k] for k in ("pq", "sq", "rq", "n")}
    out["Things"].update(_thing_counts(res, base_as_gt))
    return out


# --------------------------------------------------------------------------------------------------------------
# section 1 and 5: perfect network outputs through PRN's post-processing


def checkpoint_configs(weights: str | Path | None):
    """(PostProcessConfig, RenderConfig, checkpoint path, Refiner or None) of a PRN checkpoint (None = the shipped
    PRN). Without an importable ``prn_cli.predictors`` the stored configuration is read directly (no Refiner)."""
    from prn_cli.models.prn.postprocess import PostProcessConfig
    from prn_cli.models.prn.render import RenderConfig

    try:
        from prn_cli.predictors import Refiner
    except Exception:   # predictors mid-edit: read the stored configuration directly
        Refiner = None
    if Refiner is not None:
        from prn_cli.options import ProcessingSize

        # the oracles compare PRN's maps with GT maps pixel for pixel: run at the photos' own size
        refiner = Refiner(weights, device="cpu", processing_size=ProcessingSize(min_size=1 << 30, max_size=1 << 30))
        return refiner.postprocess_config, refiner.render_config, str(refiner.weights), refiner
    from prn_cli.checkpoint import load_checkpoint
    from prn_cli.shipped import shipped_weights

    path = Path(weights) if weights is not None else shipped_weights("prn")
    stored = load_checkpoint(path, kind="prn")["config"]
    return (PostProcessConfig(**stored.get("postprocess", {})), RenderConfig(**stored.get("render", {})),
            str(path), None)


def _nearest_stuff(semantic, stuff_classes):
    """Each void pixel (255) of ``semantic`` takes the class of the nearest stuff pixel (chessboard distance;
    ties go to the higher class index); None when the image has no stuff pixel."""
    import torch
    import torch.nn.functional as F

    from prn_cli.models.prn.render import IGNORE

    is_stuff = (semantic != IGNORE) & stuff_classes[semantic.clamp(0, len(stuff_classes) - 1)]
    if not bool(is_stuff.any()):
        return None
    lab = torch.where(is_stuff, semantic, torch.full_like(semantic, -1)).float()[None, None]
    todo = lab < 0
    while bool(todo.any()):
        grown = F.max_pool2d(lab, 3, stride=1, padding=1)
        fill = todo & (grown >= 0)
        lab = torch.where(fill, grown, lab)
        todo = todo & ~fill
    return lab[0, 0].long()


def perfect_outputs(ids: np.ndarray, segments_info: Sequence[dict], category_map, render_config,
                    foreground_source: str) -> dict:
    """The maps a network that reproduces ``(ids, segments_info)`` exactly would output.

    Semantic logits = PERFECT_LOGIT at the rendered class; foreground logit = +/-PERFECT_LOGIT from the rendered
    foreground; centre heatmap, offsets (dy, dx) and boxes (l, t, r, b) as rendered. Void pixels: with the
    foreground branch, a thing class with foreground off, which the post-processing turns into void (so void
    survives exactly); with the semantic foreground, which cannot express void, the nearest stuff class.
    """
    import torch
    import torch.nn.functional as F

    from prn_cli.models.prn.render import IGNORE, render_panoptic

    segs = [{"id": int(s["id"]), "category_id": int(s["category_id"]), "iscrowd": int(s.get("iscrowd", 0))}
            for s in segments_info if int(s["id"]) != 0]
    r = render_panoptic(torch.from_numpy(np.asarray(ids).astype(np.int64)), segs, category_map, render_config)
    sem = r["semantic"]
    thing = torch.tensor(category_map.is_thing_class(), dtype=torch.bool)
    c = category_map.num_classes
    void = sem == IGNORE
    filled = sem.clone()
    fallback = int(thing.nonzero()[0]) if bool(thing.any()) else 0
    if bool(void.any()):
        near = _nearest_stuff(sem, ~thing) if foreground_source == "semantic" else None
        filled[void] = near[void] if near is not None else fallback
    logits = F.one_hot(filled, c).permute(2, 0, 1).float() * PERFECT_LOGIT
    return {"semantic": logits, "foreground": ((2 * r["foreground"] - 1) * PERFECT_LOGIT)[None],
            "center": r["center"], "offset": r["offset"], "box": r["box"]}


def _postprocess_ids(outputs: dict, category_map, config) -> tuple[np.ndarray, list[dict]]:
    import torch

    from prn_cli.models.prn.postprocess import panoptic_from_outputs

    thing = torch.tensor(category_map.is_thing_class(), dtype=torch.bool)
    seg, infos = panoptic_from_outputs(outputs, thing, config)
    segs = [{"id": int(i["index"]), "category_id": int(category_map.class_ids[i["class_index"]]), "iscrowd": 0}
            for i in infos]
    return seg.cpu().numpy().astype(np.uint32), segs


class _SetWriters:
    """One prediction set per name under ``root``, written with prn's PanopticWriter."""

    def __init__(self, root: Path, names: Sequence[str], categories: list[dict]):
        self.writers = {}
        for name in names:
            json_path, png_dir = set_paths(root / name)
            self.writers[name] = PanopticWriter(json_path, png_dir, categories, overwrite=True,
                                                info={"description": f"diagnose_things: {name}"})

    def add(self, name: str, image: dict, ann: dict, ids: np.ndarray, segs: list[dict]) -> None:
        self.writers[name].add(image, ids, segs, file_name=ann["file_name"])

    def sets(self) -> list[PanopticSet]:
        out = []
        for w in self.writers.values():
            w.commit()
            out.append(load_set(json_path=w.json_path, png_dir=w.png_dir, need_categories=False))
        return out


def _image_record(gt: PanopticSet, ann: dict, ids: np.ndarray) -> dict:
    image = gt.images_by_id.get(ann["image_id"])
    if image is None:
        image = {"id": ann["image_id"], "file_name": ann["file_name"]}
    return {**image, "height": int(ids.shape[0]), "width": int(ids.shape[1])}


def grouping(inputs: Inputs, post, render_config, work: Path) -> dict[str, Any]:
    """Section 1: floor (perfect outputs of the base) and ceiling (of the GT) through the post-processing."""
    from prn_cli.models.categories import CategoryMap

    cmap = CategoryMap.from_categories(inputs.gt.categories)
    sources = ("foreground", "semantic")
    names = [f"{what}-{src}" for what in ("floor", "ceiling") for src in sources]
    writers = _SetWriters(work, names, inputs.gt.categories)
    for ann, b_ann in zip(inputs.gt.annotations, inputs.base_ann):
        gt_ids = read_id_png(inputs.gt.png_path(ann), what="ground-truth PNG")
        b_ids = read_id_png(inputs.base.png_path(b_ann), what="base PNG")
        image = _image_record(inputs.gt, ann, gt_ids)
        for src in sources:
            cfg = dataclasses.replace(post, foreground_source=src)
            for what, ids, info in (("floor", b_ids, b_ann["segments_info"]),
                                    ("ceiling", gt_ids, ann["segments_info"])):
                try:
                    out = perfect_outputs(ids, info, cmap, render_config, src)
                except ValueError as exc:
                    raise InvalidInputError(f"image {ann['image_id']} ({what}): {exc}") from None
                writers.add(f"{what}-{src}", image, ann, *_postprocess_ids(out, cmap, cfg))
    sets = writers.sets()
    rows = ["base"] + names + ["refined"]
    rep = evaluate(inputs.gt, [inputs.base, *sets, inputs.refined], workers=0, names=rows)
    return {"images": len(inputs.gt.annotations), "checkpoint_source": post.foreground_source,
            "rows": {name: _summary(res, inputs.gt) for name, res in zip(rows, rep.results)}}


def head_oracles(inputs: Inputs, refiner, images_dir: Path, work: Path) -> dict[str, Any]:
    """Section 5: PRN's outputs on the base with one head at a time replaced by the perfect GT map."""
    import torch

    from prn_cli.io import read_photo
    from prn_cli.refine_data import blank_instance_maps, collate_refine

    post, cmap = refiner.postprocess_config, refiner.category_map
    heads = ["semantic", "center", "offset"]
    if post.foreground_source == "foreground":
        heads.insert(1, "foreground")
    if post.use_pred_bbox:
        heads.append("box")
    variants = {"network": []}
    for h in heads:
        variants[f"oracle {h}"] = [h]
    variants["oracle center+offset"] = ["center", "offset"]
    variants["oracle all"] = heads
    blank = "network, base instance maps blanked"
    names = [v.replace(" ", "_").replace("+", "_") for v in variants] + ["network_blank_instance_maps"]
    writers = _SetWriters(work, names, inputs.gt.categories)
    images = inputs.gt.images_by_id
    seen: list[np.ndarray] = []
    for ann, b_ann in zip(inputs.gt.annotations, inputs.base_ann):
        record = images.get(ann["image_id"])
        if record is None or "file_name" not in record:
            raise fail(inputs.gt.json_path, f"image {ann['image_id']} has no image record with a file_name",
                       "section 5 needs the GT's images list to find the photos")
        rgb = read_photo(Path(images_dir) / record["file_name"])
        gt_ids = read_id_png(inputs.gt.png_path(ann), what="ground-truth PNG")
        b_ids = read_id_png(inputs.base.png_path(b_ann), what="base PNG")
        b_segs = [{"id": int(s["id"]), "category_id": int(s["category_id"]), "iscrowd": 0}
                  for s in b_ann["segments_info"] if int(s["id"]) != 0]
        prepared = refiner.prepare(rgb, b_ids, b_segs, where=str(inputs.base.png_path(b_ann)))
        h, w = gt_ids.shape
        nets = []
        # as given, and with the base's instance maps (centres, offsets, boxes, boundaries) blanked: how much of
        # its things PRN reads from the image rather than copies from the base
        for maps in (prepared["base_maps"], blank_instance_maps(prepared["base_maps"])):
            batch, _ = collate_refine([({"image": prepared["image"], "base_semantic": prepared["base_semantic"],
                                         "base_maps": maps}, None)], size_divisibility=32)
            with torch.inference_mode():
                out = refiner.model({k: v.to(refiner.device) for k, v in batch.items()})
            nets.append({k: v[0, :, :h, :w].float().cpu() for k, v in out.items() if v is not None})
        net, net_blank = nets
        try:
            perfect = perfect_outputs(gt_ids, ann["segments_info"], cmap, refiner.render_config,
                                      post.foreground_source)
        except ValueError as exc:
            raise InvalidInputError(f"image {ann['image_id']} (GT vs the checkpoint's categories): {exc}") from None
        seen.append(heads_on_things(net, gt_ids, ann["segments_info"], b_ids, b_segs, cmap, inputs.thing_ids,
                                    post.center_threshold))
        image = _image_record(inputs.gt, ann, gt_ids)
        for name, swap in variants.items():
            maps = {**net, **{k: perfect[k] for k in swap}}
            writers.add(name.replace(" ", "_").replace("+", "_"), image, ann, *_postprocess_ids(maps, cmap, post))
        writers.add("network_blank_instance_maps", image, ann, *_postprocess_ids(net_blank, cmap, post))
    sets = writers.sets()
    names = list(variants) + [blank]
    rep = evaluate(inputs.gt, [inputs.refined, *sets], workers=0, names=["refined set"] + names)
    return {"images": len(inputs.gt.annotations), "heads": heads,
            "rows": {n: _summary(res, inputs.gt) for n, res in zip(["refined set"] + names, rep.results)},
            "heads_on_things": summarise_heads(np.concatenate(seen) if seen else np.zeros((0, 8)))}


#: Columns of :func:`heads_on_things`' rows.
HEAD_COLUMNS = ("kind", "area", "semantic_correct", "semantic_thing", "semantic_as_base", "foreground",
                "center_hit", "center_max")


def heads_on_things(net: dict, gt_ids: np.ndarray, gt_info: Sequence[dict], base_ids: np.ndarray,
                    base_info: Sequence[dict], cmap, thing_ids: np.ndarray, center_threshold: float) -> np.ndarray:
    """Section 6 for one image: a row (:data:`HEAD_COLUMNS`) per non-crowd GT thing.

    ``net`` holds PRN's raw outputs cropped to the image ((C, H, W) tensors); fractions are over the thing's
    pixels. ``semantic_as_base`` compares with the base's class at each pixel (void counts as different)."""
    gt, base = Segs.of(gt_info), Segs.of(base_info)
    kinds = failure_kinds(gt, base, match(gt_ids, gt, base_ids, base), thing_ids)
    sem = net["semantic"].argmax(0).numpy()
    class_ids = np.asarray(cmap.class_ids, dtype=np.int64)
    sem_cat = class_ids[sem]
    base_cat = np.zeros(base_ids.shape, np.int64)
    for sid, cat in zip(base.ids, base.cats):
        base_cat[base_ids == sid] = cat
    fg = (1.0 / (1.0 + np.exp(-net["foreground"][0].numpy().astype(np.float64)))
          if "foreground" in net else np.isin(sem_cat, thing_ids).astype(np.float64))
    center = net["center"][0].numpy()
    rows = []
    for i, sid in enumerate(gt.ids):
        if kinds[i] < 0:
            continue
        m = gt_ids == sid
        if not m.any():
            continue
        c = sem_cat[m]
        peak = float(center[m].max())
        rows.append((kinds[i], int(m.sum()), float((c == gt.cats[i]).mean()), float(np.isin(c, thing_ids).mean()),
                     float((c == base_cat[m]).mean()), float(fg[m].mean()), float(peak > center_threshold), peak))
    return np.array(rows, dtype=np.float64).reshape(-1, len(HEAD_COLUMNS))


def summarise_heads(rows: np.ndarray) -> dict[str, Any]:
    """Means of :func:`heads_on_things` rows per base failure kind (and over all GT things)."""
    out = {}
    for name, sel in [(n, rows[:, 0] == i) for i, n in enumerate(KINDS)] + [("all", np.ones(len(rows), bool))]:
        n = int(sel.sum())
        out[name] = {"gt_things": n, **{col: (float(rows[sel, j].mean()) if n else None)
                                        for j, col in enumerate(HEAD_COLUMNS) if j >= 2 and col != "center_max"},
                     "semantic_majority_correct": float((rows[sel, 2] > 0.5).mean()) if n else None}
    return out


# --------------------------------------------------------------------------------------------------------------
# the whole report


def diagnose(gt, base, refined, *, images: str | Path | None = None, weights: str | Path | None = None,
             limit: int | None = None, grouping_limit: int | None = None, run_grouping: bool = True,
             keep_sets: str | Path | None = None) -> dict[str, Any]:
    """Every section as a JSON-ready dict (see the module docstring)."""
    inputs = load_inputs(gt, base, refined, limit)
    report: dict[str, Any] = {
        "inputs": {"gt": str(inputs.gt.json_path), "base": str(inputs.base.json_path),
                   "refined": str(inputs.refined.json_path), "images": len(inputs.gt.annotations)},
        "definitions": {"cover_main": COVER_MAIN, "cover_split": COVER_SPLIT, "iou_delta": IOU_DELTA,
                        "size_bins": {n: [lo, None if hi == math.inf else hi] for n, lo, hi in SIZE_BINS},
                        "perfect_logit": PERFECT_LOGIT},
    }
    rep = evaluate(inputs.gt, [inputs.base, inputs.refined], workers=0, names=["base", "refined"])
    report["pq"] = {n: _summary(r, inputs.gt) for n, r in zip(("base", "refined"), rep.results)}
    report["warnings"] = list(rep.warnings) + [w for r in rep.results for w in r.warnings]
    rec = collect(inputs)
    report["copy_distance"] = copy_distance(inputs)
    report["mask_quality"] = mask_quality(rec)
    report["boundary_ceiling"] = boundary_ceiling(rec)
    recut_work = Path(tempfile.mkdtemp(prefix="diagnose_things-recut-"))
    try:
        report["recut_oracle"] = recut_oracle(inputs, recut_work)
    finally:
        shutil.rmtree(recut_work, ignore_errors=True)
    report["recovery"] = recovery(rec)
    for k in ("base", "refined"):   # our matching must count exactly what the evaluator counts
        report["recovery"]["totals"][k]["evaluator_agrees"] = all(
            report["recovery"]["totals"][k][c] == report["pq"][k]["things"][c] for c in ("tp", "fp", "fn"))
    if run_grouping or images is not None:
        post, render_config, ckpt, refiner = checkpoint_configs(weights)
        report["checkpoint"] = {"path": ckpt, "postprocess": {k: (list(v) if isinstance(v, tuple) else v)
                                                              for k, v in dataclasses.asdict(post).items()}}
        work = Path(keep_sets) if keep_sets is not None else Path(tempfile.mkdtemp(prefix="diagnose_things-"))
        try:
            if run_grouping:
                report["grouping"] = grouping(subset(inputs, grouping_limit), post, render_config, work / "grouping")
            if images is not None:
                if refiner is None:
                    raise InvalidInputError("section 5 needs prn_cli.predictors.Refiner, which failed to import")
                report["head_oracles"] = head_oracles(subset(inputs, grouping_limit), refiner, Path(images),
                                                      work / "oracles")
        finally:
            if keep_sets is None:
                shutil.rmtree(work, ignore_errors=True)
    return report


# --------------------------------------------------------------------------------------------------------------
# Markdown


def _pct(v, digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}"


def _num(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    right = ["---:" if i else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(right) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _pq_rows(rows: dict[str, dict]) -> list[list]:
    return [[name, _pct(r["pq"]), _pct(r["pq_th"]), _pct(r["pq_st"]), _pct(r["sq_th"]), _pct(r["rq_th"]),
             r["things"]["tp"], r["things"]["fp"], r["things"]["fn"]] for name, r in rows.items()]


PQ_HEADERS = ("set", "PQ", "PQth", "PQst", "SQth", "RQth", "TP th", "FP th", "FN th")


def to_markdown(report: dict[str, Any]) -> str:
    inp = report["inputs"]
    out = [f"# Thing diagnostics: {inp['images']} image(s)", "",
           f"GT `{inp['gt']}`, base `{inp['base']}`, refined `{inp['refined']}`.", ""]
    out += _table(PQ_HEADERS, _pq_rows(report["pq"])) + [""]
    if "grouping" in report:
        g = report["grouping"]
        post = report["checkpoint"]["postprocess"]
        out += [f"## 1. Grouping floor and ceiling ({g['images']} image(s))", "",
                f"Post-processing of `{report['checkpoint']['path']}` (foreground source `{post['foreground_source']}`"
                f" in the checkpoint, PredBbox {'on' if post['use_pred_bbox'] else 'off'}, stuff area "
                f"{post['stuff_area']} at {post['stuff_area_reference']}) on perfect outputs rendered from the base "
                "(floor) and the GT (ceiling).", ""]
        rows = {}
        for name, r in g["rows"].items():
            label = name.replace("-", " · ")
            if name.endswith(g["checkpoint_source"]) and name != "refined":
                label += " (ckpt)"
            rows[label] = r
        out += _table(PQ_HEADERS, _pq_rows(rows)) + [""]
    cd = report["copy_distance"]
    out += ["## 2. Distance from a copy of the base (refined evaluated with the base as GT)", ""]
    out += _table(("group", "PQ", "SQ", "RQ"), [[gname, _pct(cd[gname]["pq"]), _pct(cd[gname]["sq"]),
                                                  _pct(cd[gname]["rq"])] for gname in ("Things", "Stuff", "All")])
    t = cd["Things"]
    out += ["", f"Base thing segments reproduced (IoU > 0.5, same class): {t['tp']}; base things lost: {t['fn']}; "
            f"refined things not in the base: {t['fp']}.", ""]
    mq = report["mask_quality"]
    out += ["## 3. Mask quality of GT things matched by both base and refined", ""]
    out += _table(("size", "GT things", "matched by both", "mean IoU base", "mean IoU refined", "Δ",
                   f"improved > {IOU_DELTA}", f"worsened > {IOU_DELTA}"),
                  [[n, r["gt_things"], r["n"], _num(r["mean_iou_base"]), _num(r["mean_iou_refined"]),
                    _num(None if r["n"] == 0 else r["mean_iou_refined"] - r["mean_iou_base"], 3),
                    _pct(r["improved"]) + ("%" if r["n"] else ""), _pct(r["worsened"]) + ("%" if r["n"] else "")]
                   for n, r in mq.items()]) + [""]
    if "boundary_ceiling" in report:
        bc = report["boundary_ceiling"]
        radii = bc["radii"]
        out += ["### Boundary ceiling: the base's thing masks with a band of r px replaced by the GT", "",
                "Each GT thing's base segment of its category with the highest IoU, as is and with every pixel "
                "within r pixels (chessboard) of its boundary, on either side, set from the GT thing: GT things "
                "matched (IoU > 0.5) and their mean IoU. The most a refinement that moves the base's thing "
                "boundaries by up to r pixels can reach (each GT thing on its own).", ""]
        headers = ["size", "GT things", "base matched", "base IoU"]
        for r in radii:
            headers += [f"r={r} matched", f"r={r} IoU"]
        rows = []
        for n, row in bc["rows"].items():
            cells = [n, row["base"]["gt_things"], row["base"]["matched"], _num(row["base"]["mean_iou"])]
            for r in radii:
                cells += [row[f"r{r}"]["matched"], _num(row[f"r{r}"]["mean_iou"])]
            rows.append(cells)
        out += _table(headers, rows) + [""]
    if "recut_oracle" in report:
        ro = report["recut_oracle"]
        out += [f"### The re-cut with a perfect boundary refiner (radius {ro['radius']})", "",
                "The refined set's things re-cut by prn's boundary re-cut with the GT's thing foreground as the "
                f"refiner's probability, every thing, no gate ({ro['pixels_moved']} pixels moved): what a better "
                "boundary refiner could still add.", ""]
        out += _table(PQ_HEADERS, _pq_rows({"refined": ro["rows"]["refined"],
                                             "refined, re-cut with the GT": ro["rows"]["recut"]})) + [""]
    rc = report["recovery"]
    out += ["## 4. Thing recall by the base's failure kind", ""]
    total = sum(v["gt_things"] for v in rc["kinds"].values())
    kind_rows = [[KIND_LABELS[k], v["gt_things"], v["refined_tp"],
                  _pct(v["recovered"]) + ("%" if v["gt_things"] else "")] for k, v in rc["kinds"].items()]
    ref_tp = sum(v["refined_tp"] for v in rc["kinds"].values())
    kind_rows.append(["all GT things", total, ref_tp, _pct(ref_tp / total if total else None) + "%"])
    out += _table(("base kind", "GT things", "refined TP", "recovered (kept for matched)"), kind_rows) + [""]
    out += ["The same classification applied to the refined set (rows: base kind, columns: refined kind):", ""]
    out += _table(["base \\ refined", *(KIND_LABELS[k].split(" (")[0] for k in KINDS)],
                  [[KIND_LABELS[b].split(" (")[0], *(row[r] for r in KINDS)] for b, row in rc["transitions"].items()])
    out += [""]
    out += _table(("base thing FPs", "count", "still FP after refinement", "removed"),
                  [[n.replace("_", " "), v["base_fp"], v["still_fp"], v["removed"]] for n, v in rc["base_fp"].items()])
    out += [""]
    tot = rc["totals"]
    out += _table(("things", "TP", "FP", "FN", "precision", "recall"),
                  [[n, v["tp"], v["fp"], v["fn"], _pct(v["precision"]), _pct(v["recall"])] for n, v in tot.items()])
    out += ["", f"Refined FPs that are not a persisting base FP: {tot['refined']['fp_new']}.", ""]
    out += _table(("GT thing area", "GT things", "base TP", "base recall", "refined TP", "refined recall"),
                  [[n, v["gt_things"], v["base_tp"], _pct(v["base_recall"]), v["refined_tp"],
                    _pct(v["refined_recall"])] for n, v in rc["by_size"].items()])
    out += ["", "Refined things that match no base segment (PRN's own; pixel IoU > 0.5 with none), by their area:", ""]
    out += _table(("new thing area", "new things", "TP", "FP", "precision"),
                  [[n, v["count"], v["tp"], v["fp"], _pct(v["precision"])] for n, v in rc["new_things"].items()])
    if not (tot["base"]["evaluator_agrees"] and tot["refined"]["evaluator_agrees"]):
        out += ["", "Note: these counts differ from the evaluator's (GT JSON areas or crowd regions disagree with "
                "the PNGs); the PQ table above is the evaluator's."]
    out += [""]
    if "head_oracles" in report:
        h = report["head_oracles"]
        out += [f"## 5. Head oracles ({h['images']} image(s)): PRN's outputs with one head replaced by the GT map",
                ""]
        out += _table(PQ_HEADERS, _pq_rows(h["rows"])) + [""]
        if "heads_on_things" in h:
            out += [f"## 6. What PRN's heads see on the base's failures ({h['images']} image(s))", "",
                    "Per GT thing, over its pixels (means over the things of each base failure kind).", ""]
            rows = []
            for name in list(KINDS) + ["all"]:
                v = h["heads_on_things"][name]
                rows.append([KIND_LABELS.get(name, "all GT things"), v["gt_things"], _pct(v["semantic_correct"]),
                             _pct(v["semantic_majority_correct"]), _pct(v["semantic_thing"]),
                             _pct(v["semantic_as_base"]), _num(v["foreground"], 2), _pct(v["center_hit"])])
            out += _table(["base kind", "GT things", "sem = GT class", "majority = GT class", "sem = a thing",
                           "sem = base class", "mean fg prob", "centre peak inside"], rows) + [""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", required=True, help="ground-truth set (panoptic JSON, prn --out folder, prn synth root)")
    ap.add_argument("--base", required=True, help="base prediction set")
    ap.add_argument("--refined", required=True, help="refined prediction set (prn refine --out)")
    ap.add_argument("--images", help="folder of the photos: adds section 5 (head oracles; runs PRN)")
    ap.add_argument("--weights", help="PRN checkpoint whose post-processing (and network, section 5) is used; "
                                      "default: the shipped PRN")
    ap.add_argument("--limit", type=int, help="analyse only the first N GT images")
    ap.add_argument("--grouping-limit", type=int, help="sections 1 and 5 on the first N of those images only")
    ap.add_argument("--no-grouping", action="store_true", help="skip section 1")
    ap.add_argument("--keep-sets", help="write the floor / ceiling / oracle sets here (for prn eval, prn viz)")
    ap.add_argument("--json", help="write the report as JSON to this file ('-': stdout, instead of the tables)")
    args = ap.parse_args(argv)
    for name in ("limit", "grouping_limit"):
        v = getattr(args, name)
        if v is not None and v < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        report = diagnose(args.gt, args.base, args.refined, images=args.images, weights=args.weights,
                          limit=args.limit, grouping_limit=args.grouping_limit, run_grouping=not args.no_grouping,
                          keep_sets=args.keep_sets)
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    text = json.dumps(report, indent=2, allow_nan=False)
    if args.json == "-":
        print(text)
        return 0
    print(to_markdown(report))
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
