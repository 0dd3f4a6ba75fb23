"""Panoptic quality (PQ / SQ / RQ), identical to the COCO reference evaluator on valid input.

The reference is ``pq_compute`` of cocodataset/panopticapi (commit 7bb4655); ``docs/design.md``
("The evaluator") lists every rule it follows, quirks included, and this module follows each of them:
GT ``area`` from the GT JSON, prediction area from the PNG, only GT id 0 is void, strict ``> 0.5`` thresholds,
the last crowd region per category, categories with no TP/FP/FN left out of the averages.

Where the reference is silently wrong, prn says so (a warning, or an error naming the file, image and segment)
and offers the corrected behaviour behind an option (:class:`EvalOptions`):

- duplicate segment ids in one annotation: an error; ``allow_duplicate_ids`` evaluates them as the reference
  does (the last entry wins);
- several crowd regions of one category in one image: a warning; ``crowd="union"`` uses all of them;
- GT ``area`` that disagrees with the PNG: a warning; ``gt_area="png"`` uses the pixel counts;
- no thing (or no stuff) category with any segment: the reference divides by zero; prn reports that group as
  undefined (``None``) with a warning.

Per image the work is vectorized: ids are mapped to compact indices through a lookup table, one ``bincount``
gives every (GT segment, predicted segment) intersection, and matching, false negatives and false positives are
array operations. Images run in a bounded pool of worker processes that is always shut down. IoU sums are
accumulated in the parent, image by image in GT order and pair by pair in ascending (gt id, pred id) order, so
the result does not depend on the number of workers.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InvalidInputError, fail
from .panoptic import VOID, PanopticSet, index_ids, load_set, raster_runs, read_id_png

GROUPS = ("All", "Things", "Stuff")


@dataclass(frozen=True)
class EvalOptions:
    """Evaluation switches. The defaults reproduce the reference evaluator."""

    #: "json": GT area from the GT JSON's ``area`` field (reference); "png": pixel count of the GT PNG.
    gt_area: str = "json"
    #: "last": only the last crowd region per category and image ignores predictions (reference);
    #: "union": every crowd region of the prediction's category does.
    crowd: str = "last"
    #: Evaluate annotations that list a segment id twice as the reference does (the last entry wins).
    allow_duplicate_ids: bool = False
    #: Sum IoUs the way a reference run with this many worker processes does (contiguous chunks of images,
    #: summed separately, then added in order), which reproduces its floats bit for bit. 1 = one running sum.
    sum_chunks: int = 1

    def __post_init__(self):
        if self.gt_area not in ("json", "png"):
            raise ValueError(f"gt_area must be 'json' or 'png', not {self.gt_area!r}")
        if self.crowd not in ("last", "union"):
            raise ValueError(f"crowd must be 'last' or 'union', not {self.crowd!r}")
        if self.sum_chunks < 1:
            raise ValueError(f"sum_chunks must be at least 1, not {self.sum_chunks}")


# --------------------------------------------------------------------------------------------------------------
# results


@dataclass
class CategoryStats:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0


@dataclass
class PQResult:
    """PQ of one prediction set against one ground truth.

    ``groups`` maps All/Things/Stuff to ``{pq, sq, rq, n}`` (fractions; ``None`` when n == 0), ``per_class``
    maps every GT category id (GT order) to ``{pq, sq, rq, tp, fp, fn, iou_sum}``.
    """

    name: str
    pred_path: str
    groups: dict[str, dict[str, Any]]
    per_class: dict[int, dict[str, Any]]
    num_images: int
    warnings: list[str] = field(default_factory=list)
    #: with ``evaluate(..., per_image=True)``: one record per GT image, in GT order (see :func:`evaluate`)
    per_image: list[dict[str, Any]] | None = None

    def reference_dict(self) -> dict[str, Any]:
        """The reference evaluator's return value: All, per_class (pq/sq/rq), Things, Stuff."""
        return {
            "All": dict(self.groups["All"]),
            "per_class": {cid: {k: v[k] for k in ("pq", "sq", "rq")} for cid, v in self.per_class.items()},
            "Things": dict(self.groups["Things"]),
            "Stuff": dict(self.groups["Stuff"]),
        }

    def to_dict(self) -> dict[str, Any]:
        """Reference-shaped keys, plus per-class TP/FP/FN/IoU sums and provenance beside them."""
        out = self.reference_dict()
        out["per_class"] = {cid: dict(v) for cid, v in self.per_class.items()}
        out.update(name=self.name, pred=self.pred_path, images=self.num_images, warnings=list(self.warnings))
        if self.per_image is not None:
            out["per_image"] = self.per_image
            out["outcomes"] = outcome_totals(self.per_image)
        return out


@dataclass
class EvalReport:
    gt_path: str
    results: list[PQResult]
    categories: list[dict]
    options: EvalOptions
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """One prediction: the reference's shape at top level. Several: a list under ``predictions``."""
        common = {"gt": self.gt_path, "options": asdict(self.options), "warnings": list(self.warnings)}
        if len(self.results) == 1:
            out = self.results[0].to_dict()
            out["warnings"] = common["warnings"] + out["warnings"]
            out.update(gt=common["gt"], options=common["options"])
            return out
        base = self.results[0]
        deltas = []
        for r in self.results[1:]:
            deltas.append({"name": r.name, "vs": base.name,
                           **{g: {k: _delta(r.groups[g][k], base.groups[g][k]) for k in ("pq", "sq", "rq")}
                              for g in GROUPS}})
        out = {**common, "predictions": [r.to_dict() for r in self.results], "deltas": deltas}
        if all(r.per_image is not None for r in self.results):
            out["image_deltas"] = image_deltas(self)
        return out


def _delta(a, b):
    return None if a is None or b is None else a - b


# --------------------------------------------------------------------------------------------------------------
# per image

@dataclass
class _Segments:
    """One annotation's segments_info, deduplicated the reference's way (first position, last entry wins)."""

    ids: np.ndarray          # segment ids, non-zero ones first in dict order, then 0 if listed
    entries: list[dict]
    has_zero: bool
    duplicates: list[int]

    @classmethod
    def of(cls, annotation: dict) -> "_Segments":
        table: dict[int, dict] = {}
        duplicates = []
        for seg in annotation["segments_info"]:
            if seg["id"] in table:
                duplicates.append(seg["id"])
            table[seg["id"]] = seg
        has_zero = VOID in table
        nonzero = [s for sid, s in table.items() if sid != VOID]
        entries = nonzero + ([table[VOID]] if has_zero else [])
        return cls(np.array([s["id"] for s in nonzero], dtype=np.int64), entries, has_zero, duplicates)


@dataclass
class _GTImage:
    """A decoded GT image and its segments, prepared once and evaluated against every prediction set.

    Rows of the intersection matrix: 0 = GT id 0 (void), 1..k = the GT entries with non-zero ids, k+1 = pixels
    whose id is not in the GT JSON (not void for the reference, and never matched).
    """

    annotation: dict
    png: Path
    ids: np.ndarray
    segs: _Segments
    rows_of: np.ndarray      # GT entry -> row (an entry with id 0, if any, uses row 0)
    cats: np.ndarray         # category id per entry
    crowd: np.ndarray        # bool per entry
    area_json: np.ndarray    # int64 per entry (JSON area; the pixel count where the JSON has none)
    loc: str
    area_png: np.ndarray | None = None   # pixel count per entry, known after the first intersection

    @property
    def num_rows(self) -> int:
        return len(self.segs.ids) + 2

    def learn_areas(self, row_area: np.ndarray, unknown_ids: np.ndarray, warn: Callable[[str, str], None]) -> None:
        """Take the GT pixel counts from the first intersection matrix (no extra pass over the pixels)."""
        if len(unknown_ids):
            warn("gt_png_id_not_in_json",
                 f"{self.loc} ({self.png}): PNG ids {unknown_ids[:5].tolist()}{' ...' if len(unknown_ids) > 5 else ''}"
                 " are not in segments_info; the reference (and prn) count them as unmatched, non-void pixels")
        area_png = row_area[self.rows_of]
        area_json = self.area_json
        missing_area = area_json < 0
        area_json[missing_area] = area_png[missing_area]
        wrong = np.flatnonzero(area_json != area_png)
        if len(wrong):
            entry = self.segs.entries[wrong[0]]
            warn("gt_area_mismatch",
                 f"{self.loc}: {len(wrong)} segment area field(s) disagree with the PNG, e.g. segment {entry['id']} "
                 f"has area {area_json[wrong[0]]} but {area_png[wrong[0]]} pixels")
        empty = np.flatnonzero(area_png == 0)
        if len(empty):
            warn("gt_json_id_not_in_png",
                 f"{self.loc}: segments {[self.segs.entries[i]['id'] for i in empty[:5]]} have no pixels in "
                 f"{self.png}; they count as false negatives")
        self.area_png = area_png


def _prepare_gt(annotation: dict, png: Path, ctx: "_Context", warn: Callable[[str, str], None]) -> _GTImage:
    ids = read_id_png(png, what="ground-truth PNG")
    segs = _Segments.of(annotation)
    loc = f"{ctx.gt_json}: image {annotation['image_id']}"
    if segs.duplicates:
        _duplicate_error_or_warning(loc, segs.duplicates, ctx, warn, "ground truth")
    rows_of = np.arange(1, len(segs.ids) + 1, dtype=np.int64)
    if segs.has_zero:
        rows_of = np.append(rows_of, 0)
    cats = np.array([s["category_id"] for s in segs.entries], dtype=np.int64)
    crowd = np.array([s.get("iscrowd", 0) == 1 for s in segs.entries], dtype=bool)
    area_json = np.array([s.get("area", -1) for s in segs.entries], dtype=np.int64)
    unknown_cats = sorted({int(c) for c in cats if int(c) not in ctx.cat_index})
    if unknown_cats:
        warn("gt_unknown_category",
             f"{loc}: category ids {unknown_cats} are not in the GT categories; their segments are never averaged")
    if ctx.options.crowd == "last" and crowd.any():
        crowd_cats = cats[crowd]
        if len(np.unique(crowd_cats)) < len(crowd_cats):
            warn("gt_several_crowds",
                 f"{loc}: several crowd regions share a category; only the last one ignores predictions, as in "
                 "the reference (pass --crowd union to use all of them)")
    return _GTImage(annotation, png, ids, segs, rows_of, cats, crowd, area_json, loc)


def _duplicate_error_or_warning(loc: str, dups: list[int], ctx: "_Context", warn, what: str) -> None:
    if ctx.options.allow_duplicate_ids:
        warn("duplicate_ids", f"{loc}: segment ids {sorted(set(dups))} are listed twice in the {what}; the last "
                              "entry wins, as in the reference")
        return
    raise InvalidInputError(f"{loc}: segment id {dups[0]} is listed twice in segments_info ({what}); give each "
                            "segment a unique id, or pass --allow-duplicate-ids to let the last entry win as the "
                            "reference evaluator does")


def _intersections(gt: _GTImage, ids: np.ndarray, pred_known: np.ndarray):
    """Intersection matrix (GT rows x prediction columns) from the runs where both maps are constant.

    Prediction columns: 0 = pixels whose id is not a listed non-zero id (void, or unlisted), 1..m = entries.
    Also returns the prediction run values and columns, for the checks of unlisted ids.
    """
    starts, lengths = raster_runs(gt.ids, ids)
    g_values = gt.ids.reshape(-1)[starts]
    p_values = ids.reshape(-1)[starts]
    rows = index_ids(g_values, gt.segs.ids)
    unknown_gt = (rows == 0) & (g_values != VOID)
    if unknown_gt.any():
        rows[unknown_gt] = gt.num_rows - 1
    cols = index_ids(p_values, pred_known)
    num_cols = len(pred_known) + 1
    inter = np.bincount(rows * num_cols + cols, weights=lengths, minlength=gt.num_rows * num_cols)
    inter = inter.astype(np.int64).reshape(gt.num_rows, num_cols)
    unknown_gt_ids = np.unique(g_values[unknown_gt]) if gt.area_png is None and unknown_gt.any() else g_values[:0]
    return inter, p_values, cols, lengths, unknown_gt_ids


def _evaluate_pair(gt: _GTImage, pred_ann: dict, pred_png: Path, pred_json: Path, ctx: "_Context",
                   warn: Callable[[str, str], None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                              dict | None]:
    """TP/FP/FN per category slot, the (category slot, IoU) of every match in the reference's order, and (with
    ``ctx.per_image``) every segment's outcome (:func:`_segment_outcomes`), else None."""
    ids = read_id_png(pred_png, what="prediction PNG")
    image_id = gt.annotation["image_id"]
    loc = f"{pred_json}: image {image_id} ({pred_png})"
    if ids.shape != gt.ids.shape:
        raise InvalidInputError(
            f"{loc}: prediction PNG is {ids.shape[1]}x{ids.shape[0]} but the ground truth {gt.png} is "
            f"{gt.ids.shape[1]}x{gt.ids.shape[0]}; predict at the ground-truth image size")
    segs = _Segments.of(pred_ann)
    if segs.duplicates:
        _duplicate_error_or_warning(f"{pred_json}: image {image_id}", segs.duplicates, ctx, warn, "prediction")
    inter, p_values, cols, lengths, unknown_gt_ids = _intersections(gt, ids, segs.ids)
    if gt.area_png is None:
        gt.learn_areas(inter.sum(axis=1), unknown_gt_ids, warn)
    cols_of = np.arange(1, len(segs.ids) + 1, dtype=np.int64)
    zero_pixels = int(lengths[p_values == VOID].sum())
    pred_cats = np.array([s["category_id"] for s in segs.entries], dtype=np.int64)
    known_cat = np.array([int(c) in ctx.cat_index for c in pred_cats], dtype=bool)
    area = inter.sum(axis=0)[cols_of]
    if segs.has_zero:
        cols_of = np.append(cols_of, 0)   # reference quirk: an entry with id 0 makes void pixels a segment
        area = np.append(area, zero_pixels)
    unlisted = (cols == 0) & (p_values != VOID)
    _check_prediction(p_values[unlisted] if unlisted.any() else None, segs, area, known_cat, pred_cats, image_id,
                      loc)

    # Matching: every (GT, pred) pair with pixels in common, same category, GT not crowd.
    sub = inter[np.ix_(gt.rows_of, cols_of)]
    gi, pj = np.nonzero(sub)
    keep = (~gt.crowd[gi]) & (gt.cats[gi] == pred_cats[pj])
    gi, pj = gi[keep], pj[keep]
    gt_area = gt.area_json if ctx.options.gt_area == "json" else gt.area_png
    overlap = sub[gi, pj]
    union = area[pj] + gt_area[gi] - overlap - inter[0, cols_of[pj]]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = overlap / union
    match = iou > 0.5
    gi, pj, iou = gi[match], pj[match], iou[match]
    order = np.lexsort((_entry_ids(segs)[pj], _entry_ids(gt.segs)[gi]))
    gi, pj, iou = gi[order], pj[order], iou[order]

    n_slots = len(ctx.cat_index) + 1             # last slot: categories missing from the GT list
    tp = np.zeros(n_slots, dtype=np.int64)
    fp = np.zeros(n_slots, dtype=np.int64)
    fn = np.zeros(n_slots, dtype=np.int64)
    match_slot = ctx.cat_slots(gt.cats[gi])
    np.add.at(tp, match_slot, 1)

    gt_matched = np.zeros(len(gt.cats), dtype=bool)
    gt_matched[gi] = True
    pred_matched = np.zeros(len(pred_cats), dtype=bool)
    pred_matched[pj] = True

    missed = ~gt_matched & ~gt.crowd
    np.add.at(fn, ctx.cat_slots(gt.cats[missed]), 1)

    unmatched = np.flatnonzero(~pred_matched)
    pred_counted = pred_matched.copy()      # TP or FP; the rest are ignored (mostly on GT void or a crowd)
    if len(unmatched):
        ignored = inter[0, cols_of[unmatched]].astype(np.int64)
        crowd_rows = _crowd_rows(gt, ctx.options.crowd)
        if crowd_rows:
            for n, j in enumerate(unmatched):
                rows = crowd_rows.get(int(pred_cats[j]))
                if rows:
                    ignored[n] += int(inter[rows, cols_of[j]].sum())
        counted = ~(ignored / area[unmatched] > 0.5)
        np.add.at(fp, ctx.cat_slots(pred_cats[unmatched[counted]]), 1)
        pred_counted[unmatched[counted]] = True
    matches = np.stack([match_slot.astype(np.float64), iou]) if len(iou) else np.zeros((2, 0))
    details = None
    if ctx.per_image:
        details = _segment_outcomes(gt, segs, sub, inter[0, cols_of], area, gt_area, pred_cats, (gi, pj, iou),
                                    pred_counted)
    return tp, fp, fn, matches, details


#: What happened to each GT segment, in the order they are decided (the first that applies):
#: matched (a TP); crowd (never counted); wrong_class (a prediction of another category has IoU > 0.5);
#: merged (the prediction of its category that covers most of it also covers most of another GT segment of
#: that category);
#: split (two or more predictions of its category, each mostly inside it, together cover most of it);
#: mislocated (a prediction of its category overlaps it with 0.1 <= IoU <= 0.5); missed (anything else:
#: left void, or swallowed by a segment of another class).
GT_OUTCOMES = ("matched", "wrong_class", "merged", "split", "mislocated", "missed", "crowd")
#: What each predicted segment is, decided the same way: matched (a TP); ignored (not a FP: mostly on GT void
#: or a crowd region of its category); wrong_class; merged (covers most of two GT segments of its category or
#: more); split (a
#: piece: mostly inside a GT segment of its category that other such pieces also lie in); mislocated; spurious
#: (anything else).
PRED_OUTCOMES = ("matched", "ignored", "wrong_class", "merged", "split", "mislocated", "spurious")
#: Below this IoU a same-class overlap is chance, not a badly placed segment (TIDE's background threshold).
MISLOCATED_MIN_IOU = 0.1


def _segment_outcomes(gt: _GTImage, segs: _Segments, sub: np.ndarray, on_void: np.ndarray, area: np.ndarray,
                      gt_area: np.ndarray, pred_cats: np.ndarray, match: tuple[np.ndarray, np.ndarray, np.ndarray],
                      pred_counted: np.ndarray) -> dict:
    """Every GT and predicted segment of one image: area, outcome (:data:`GT_OUTCOMES`, :data:`PRED_OUTCOMES`),
    the segment it matched and the IoU, else its best overlap of any class. IoUs use the matching's union (the
    prediction's pixels on GT void left out), so a matched pair's IoU is exactly the one summed into PQ."""
    gi, pj, match_iou = match
    n_gt, n_pred = sub.shape
    gt_cats = gt.cats
    gt_pixels = np.maximum(gt.area_png, 1)
    pred_pixels = np.maximum(area, 1)
    overlap_iou = np.zeros((n_gt, n_pred))
    rows, cols = np.nonzero(sub)
    overlap_iou[rows, cols] = sub[rows, cols] / (area[cols] + gt_area[rows] - sub[rows, cols] - on_void[cols])
    overlap_iou[gt.crowd] = 0.0
    same_class = gt_cats[:, None] == pred_cats[None, :]
    gt_share = sub / gt_pixels[:, None]      # fraction of the GT segment covered by the prediction
    pred_share = sub / pred_pixels[None, :]  # fraction of the prediction inside the GT segment
    counted_gt = ~gt.crowd

    gt_match = np.full(n_gt, -1)
    gt_match[gi] = pj
    pred_match = np.full(n_pred, -1)
    pred_match[pj] = gi
    iou_of_match = np.zeros(n_gt)
    iou_of_match[gi] = match_iou
    # a GT segment is in pieces when several predictions of its category lie mostly inside it
    pieces = (pred_share > 0.5) & same_class
    in_pieces = pieces.sum(axis=1)
    # a prediction covers most of (a GT segment, and how many of the GT segments of each category)
    covers = (gt_share > 0.5) & counted_gt[:, None]

    gt_out = []
    for i in range(n_gt):
        best = int(np.argmax(overlap_iou[i])) if n_pred else -1
        best_iou = float(overlap_iou[i, best]) if n_pred else 0.0
        if gt_match[i] >= 0:
            outcome = "matched"
        elif gt.crowd[i]:
            outcome = "crowd"
        elif n_pred and (overlap_iou[i] > 0.5).any():
            outcome = "wrong_class"
        else:
            outcome = "missed"
            dominant = int(np.argmax(sub[i])) if n_pred else -1
            same_cat_covered = covers[:, dominant] & (gt_cats == gt_cats[i]) if dominant >= 0 else None
            if (dominant >= 0 and pred_cats[dominant] == gt_cats[i] and covers[i, dominant]
                    and same_cat_covered.sum() >= 2):
                outcome = "merged"
            elif in_pieces[i] >= 2 and sub[i][pieces[i]].sum() > 0.5 * gt_pixels[i]:
                outcome = "split"
            elif n_pred and (overlap_iou[i][same_class[i]] >= MISLOCATED_MIN_IOU).any():
                outcome = "mislocated"
        entry = gt.segs.entries[i]
        record = {"id": int(entry["id"]), "category_id": int(gt_cats[i]), "area": int(gt_area[i]),
                  "iscrowd": int(bool(gt.crowd[i])), "outcome": outcome}
        if gt_match[i] >= 0:
            record.update(match=int(_entry_ids(segs)[gt_match[i]]), iou=float(iou_of_match[i]))
        else:
            record.update(match=None, iou=None)
        record.update(best=int(_entry_ids(segs)[best]) if best >= 0 and best_iou > 0 else None,
                      best_iou=best_iou)
        gt_out.append(record)

    pred_out = []
    gt_ids = _entry_ids(gt.segs)
    for j in range(n_pred):
        column = overlap_iou[:, j]
        best = int(np.argmax(column)) if n_gt else -1
        best_iou = float(column[best]) if n_gt else 0.0
        if pred_match[j] >= 0:
            outcome = "matched"
        elif not pred_counted[j]:
            outcome = "ignored"
        elif (column > 0.5).any():
            outcome = "wrong_class"
        elif (covers[:, j] & same_class[:, j]).sum() >= 2:
            outcome = "merged"
        elif (pieces[:, j] & (in_pieces >= 2) & counted_gt).any():
            outcome = "split"
        elif (column[same_class[:, j]] >= MISLOCATED_MIN_IOU).any():
            outcome = "mislocated"
        else:
            outcome = "spurious"
        entry = segs.entries[j]
        record = {"id": int(entry["id"]), "category_id": int(pred_cats[j]), "area": int(area[j]), "outcome": outcome}
        if pred_match[j] >= 0:
            record.update(match=int(gt_ids[pred_match[j]]), iou=float(iou_of_match[pred_match[j]]))
        else:
            record.update(match=None, iou=None)
        record.update(best=int(gt_ids[best]) if best >= 0 and best_iou > 0 else None, best_iou=best_iou)
        pred_out.append(record)
    return {"gt": gt_out, "pred": pred_out}


def _crowd_rows(gt: _GTImage, mode: str) -> dict[int, list[int]]:
    """Category -> the GT rows of its crowd regions that ignore predictions ("last": dict semantics, as in the
    reference, where a later crowd region of a category replaces the earlier one; "union": all of them)."""
    rows: dict[int, list[int]] = {}
    for i in np.flatnonzero(gt.crowd).tolist():
        cat = int(gt.cats[i])
        if mode == "last":
            rows[cat] = [int(gt.rows_of[i])]
        else:
            rows.setdefault(cat, []).append(int(gt.rows_of[i]))
    return rows


def _entry_ids(segs: _Segments) -> np.ndarray:
    return np.append(segs.ids, 0) if segs.has_zero else segs.ids


def _check_prediction(unlisted_values, segs: _Segments, area, known_cat, pred_cats, image_id, loc) -> None:
    """The reference's prediction checks, reporting the same first offending segment it would: in ascending id
    order, an id in the PNG but not in the JSON, or a present segment of unknown category; then JSON ids with
    no pixels."""
    offenders: list[tuple[int, str]] = []
    if unlisted_values is not None:
        offenders += [(sid, "png") for sid in np.unique(unlisted_values).tolist()]
    present = area > 0
    bad_cat = present & ~known_cat
    offenders += [(sid, f"cat:{cat}") for sid, cat in zip(_entry_ids(segs)[bad_cat].tolist(),
                                                            pred_cats[bad_cat].tolist())]
    if offenders:
        sid, kind = min(offenders)
        if kind == "png":
            raise InvalidInputError(f"{loc}: segment id {sid} is in the PNG but not in segments_info (image "
                                    f"{image_id}); add it to segments_info or paint its pixels 0 (void)")
        raise InvalidInputError(f"{loc}: segment id {sid} has unknown category_id {kind[4:]} (image {image_id}); "
                                "use a category id listed in the ground truth's categories")
    absent = _entry_ids(segs)[~present].tolist()
    if absent:
        raise InvalidInputError(f"{loc}: segment ids {absent} are in segments_info but have no pixels in the PNG "
                                f"(image {image_id}); remove them from segments_info")


# --------------------------------------------------------------------------------------------------------------
# running over a set


@dataclass
class _Context:
    """What every worker needs, sent once per worker process."""

    gt_json: Path
    pred_jsons: list[Path]
    cat_ids: list[int]
    options: EvalOptions
    per_image: bool = False

    def __post_init__(self):
        self.cat_index = {c: i for i, c in enumerate(self.cat_ids)}

    def cat_slots(self, cats: np.ndarray) -> np.ndarray:
        unknown = len(self.cat_ids)
        return np.array([self.cat_index.get(int(c), unknown) for c in cats], dtype=np.int64)


@dataclass
class _Task:
    position: int
    gt_annotation: dict
    gt_png: Path
    preds: list[tuple[dict, Path]]


@dataclass
class _TaskResult:
    position: int
    per_pred: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict | None]] | None
    warnings: list[tuple[str, str]]
    error: InvalidInputError | None = None


_WORKER_CTX: _Context | None = None


def _init_worker(ctx: _Context) -> None:
    global _WORKER_CTX
    _WORKER_CTX = ctx
    _reuse_freed_memory()


def _reuse_freed_memory() -> None:
    """Make glibc keep freed megabyte-sized blocks for reuse instead of returning them to the kernel.

    Every image allocates a few arrays of a megabyte or two (decoded pixels, ids). By default glibc maps each of
    them fresh and unmaps it on free, so every page is faulted in again for every image: about 500 page faults
    per image, a quarter of the evaluation's CPU time. Raising the mmap and trim thresholds lets the next image
    reuse the same heap memory. Only done in prn's own worker processes; elsewhere (not glibc) nothing happens.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 64 << 20)
    mallopt(m_trim_threshold, 256 << 20)


def _run_task(task: _Task, ctx: _Context | None = None) -> _TaskResult:
    ctx = ctx or _WORKER_CTX
    warnings: list[tuple[str, str]] = []

    def warn(kind: str, message: str) -> None:
        warnings.append((kind, message))

    try:
        gt = _prepare_gt(task.gt_annotation, task.gt_png, ctx, warn)
        per_pred = [_evaluate_pair(gt, ann, png, ctx.pred_jsons[k], ctx, warn)
                    for k, (ann, png) in enumerate(task.preds)]
        return _TaskResult(task.position, per_pred, warnings)
    except InvalidInputError as exc:
        return _TaskResult(task.position, None, warnings, InvalidInputError(exc.message))


def _averages(cat_ids: list[int], categories: dict[int, dict], stats: list[CategoryStats]):
    """The reference's averaging, walking categories in GT list order."""
    per_class: dict[int, dict[str, Any]] = {}
    groups: dict[str, dict[str, Any]] = {}
    for group in GROUPS:
        pq_sum = sq_sum = rq_sum = 0.0
        n = 0
        for cid, s in zip(cat_ids, stats):
            isthing = categories[cid].get("isthing") == 1
            if (group == "Things" and not isthing) or (group == "Stuff" and isthing):
                continue
            if s.tp + s.fp + s.fn == 0:
                if group == "All":
                    per_class[cid] = {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0, "iou_sum": 0.0}
                continue
            denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
            pq = s.iou_sum / denom
            sq = s.iou_sum / s.tp if s.tp != 0 else 0
            rq = s.tp / denom
            if group == "All":
                per_class[cid] = {"pq": pq, "sq": sq, "rq": rq, "tp": s.tp, "fp": s.fp, "fn": s.fn,
                                  "iou_sum": s.iou_sum}
            pq_sum += pq
            sq_sum += sq
            rq_sum += rq
            n += 1
        if n == 0:
            groups[group] = {"pq": None, "sq": None, "rq": None, "n": 0}
        else:
            groups[group] = {"pq": pq_sum / n, "sq": sq_sum / n, "rq": rq_sum / n, "n": n}
    return groups, per_class


def _pair_annotations(gt: PanopticSet, pred: PanopticSet, warn: Callable[[str, str], None]) -> list[dict]:
    by_image: dict[Any, dict] = {}
    for ann in pred.annotations:
        if ann["image_id"] in by_image:
            warn("pred_duplicate_image", f"{pred.json_path}: image {ann['image_id']} has several annotations; the "
                                         "last one is used, as in the reference")
        by_image[ann["image_id"]] = ann
    paired = []
    gt_images = set()
    for ann in gt.annotations:
        gt_images.add(ann["image_id"])
        p = by_image.get(ann["image_id"])
        if p is None:
            raise fail(pred.json_path, f"no prediction for the image with id {ann['image_id']} (listed in "
                       f"{gt.json_path})", "predict every ground-truth image, or evaluate against a GT subset")
        pred.png_path(p)  # refuses file names that escape the folder before any work starts
        paired.append(p)
    extra = [i for i in by_image if i not in gt_images]
    if extra:
        warn("pred_extra_images", f"{pred.json_path}: {len(extra)} predicted image(s) are not in the ground truth "
                                  f"(e.g. image {extra[0]}); they are ignored")
    return paired


def _summarize_warnings(items: list[tuple[str, str]]) -> list[str]:
    """One line per kind of warning: the first example and how many more there were."""
    by_kind: dict[str, list[str]] = {}
    for kind, msg in items:
        by_kind.setdefault(kind, []).append(msg)
    hints = {
        "gt_area_mismatch": "the reference uses the JSON area (default); pass --gt-area png to use pixel counts",
    }
    out = []
    for kind, msgs in by_kind.items():
        line = msgs[0]
        if len(msgs) > 1:
            line += f" (and {len(msgs) - 1} more image(s) like it)"
        if kind in hints:
            line += f"; {hints[kind]}"
        out.append(line)
    return out


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def evaluate(gt: PanopticSet | str | os.PathLike, preds: Sequence[PanopticSet | str | os.PathLike], *,
             options: EvalOptions = EvalOptions(), workers: int | None = None,
             names: Sequence[str] | None = None, per_image: bool = False,
             progress: Callable[[int, int], None] | None = None) -> EvalReport:
    """Evaluate one or several prediction sets against one ground truth (each GT PNG is decoded once).

    ``gt`` and ``preds`` are :class:`PanopticSet` objects or paths naming whole sets. ``workers`` bounds the
    process pool (``None``: one per core, at most 8; ``0`` or ``1``: in this process). Raises
    :class:`InvalidInputError` for invalid input, reporting the first failing image in GT order.

    ``per_image``: every result also gets ``per_image``, one record per GT image (GT order): ``image_id``,
    ``file_name``, All/Things/Stuff as in the totals but over that image alone, ``tp``/``fp``/``fn``/``iou_sum``
    (all categories) and ``per_class`` (the categories with a segment in it), ``outcomes`` (counts of
    :data:`GT_OUTCOMES` under ``gt`` and :data:`PRED_OUTCOMES` under ``pred``) and ``segments`` (every GT and
    predicted segment: id, category, area, outcome, its match and IoU, its best overlap). Per class, the
    per-image TP/FP/FN add up to the totals, and the matched segments' IoUs, added in image order, give the
    totals' ``iou_sum`` exactly.
    """
    gt_set = gt if isinstance(gt, PanopticSet) else load_set(gt)
    pred_sets = [p if isinstance(p, PanopticSet) else load_set(p, need_categories=False) for p in preds]
    if not pred_sets:
        raise ValueError("evaluate needs at least one prediction set")
    names = list(names) if names is not None else _unique_names(pred_sets)
    collected: list[tuple[str, str]] = []

    def warn(kind: str, message: str) -> None:
        collected.append((kind, message))

    categories = gt_set.categories_by_id
    cat_ids = [c["id"] for c in gt_set.categories]
    for p in pred_sets:
        if p.categories:
            differ = [c["id"] for c in p.categories if c["id"] not in categories]
            if differ:
                warn("pred_categories", f"{p.json_path}: its categories {differ[:5]} are not in the ground truth; "
                                        "categories come from the ground truth only")
    paired = [_pair_annotations(gt_set, p, warn) for p in pred_sets]
    ctx = _Context(gt_set.json_path, [p.json_path for p in pred_sets], cat_ids, options, per_image)
    image_records: list[list[dict]] = [[] for _ in pred_sets]
    tasks = [_Task(i, ann, gt_set.png_path(ann), [(pa[i], ps.png_path(pa[i])) for pa, ps in zip(paired, pred_sets)])
             for i, ann in enumerate(gt_set.annotations)]

    n_cat = len(cat_ids) + 1
    stats = [[CategoryStats() for _ in range(n_cat)] for _ in pred_sets]
    total = len(tasks)
    # chunk boundaries as numpy's array_split cuts the image list, one IoU accumulator per chunk
    n_chunks = min(options.sum_chunks, max(1, total))
    size, extra = divmod(total, n_chunks)
    chunk_of = np.repeat(np.arange(n_chunks), [size + (c < extra) for c in range(n_chunks)])
    iou_parts = [np.zeros((n_chunks, n_cat)).tolist() for _ in pred_sets]
    workers = default_workers() if workers is None else max(0, int(workers))
    workers = min(workers, max(1, total // 4))  # a pool costs more than it saves on a handful of images

    def consume(results) -> None:
        done = 0
        for res in results:
            collected.extend(res.warnings)
            if res.error is not None:
                raise res.error
            for k, (tp, fp, fn, matches, details) in enumerate(res.per_pred):
                if per_image:
                    image_records[k].append(_image_record(tasks[res.position].gt_annotation, cat_ids, categories,
                                                          tp, fp, fn, matches, details))
                s = stats[k]
                for slot in np.flatnonzero(tp | fp | fn).tolist():
                    s[slot].tp += int(tp[slot])
                    s[slot].fp += int(fp[slot])
                    s[slot].fn += int(fn[slot])
                # the reference adds IoUs one at a time, in (gt id, pred id) order within an image
                part = iou_parts[k][chunk_of[res.position]]
                for slot, value in zip(matches[0].astype(np.int64).tolist(), matches[1].tolist()):
                    part[slot] += value
            done += 1
            if progress is not None:
                progress(done, total)

    if workers <= 1:
        consume(_run_task(t, ctx) for t in tasks)
    else:
        chunk = max(1, min(16, total // (workers * 8)))
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(ctx,)) as pool:
            try:
                consume(pool.map(_run_task, tasks, chunksize=chunk))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    for k in range(len(pred_sets)):
        for slot in range(n_cat):
            total_iou = 0.0
            for part in iou_parts[k]:
                total_iou += part[slot]
            stats[k][slot].iou_sum = total_iou
    results = []
    for k, pset in enumerate(pred_sets):
        groups, per_class = _averages(cat_ids, categories, stats[k][:-1])
        res_warnings = []
        for g in ("Things", "Stuff"):
            if groups[g]["n"] == 0:
                res_warnings.append(f"{pset.json_path}: no {g.lower()[:-1]} category has a segment in the ground "
                                    f"truth or the prediction, so {g} PQ is undefined (the reference evaluator "
                                    "fails with ZeroDivisionError here)")
        results.append(PQResult(names[k], str(pset.json_path), groups, per_class, total, res_warnings,
                                per_image=image_records[k] if per_image else None))
    return EvalReport(str(gt_set.json_path), results, gt_set.categories, options, _summarize_warnings(collected))


def _image_record(annotation: dict, cat_ids: list[int], categories: dict[int, dict], tp: np.ndarray,
                  fp: np.ndarray, fn: np.ndarray, matches: np.ndarray, details: dict) -> dict[str, Any]:
    """One image of one prediction set: PQ over that image alone (the reference's averaging), counts, segments."""
    iou_sum = np.zeros(len(tp))
    for slot, value in zip(matches[0].astype(np.int64).tolist(), matches[1].tolist()):
        iou_sum[slot] += value
    stats = [CategoryStats(int(tp[i]), int(fp[i]), int(fn[i]), float(iou_sum[i])) for i in range(len(cat_ids))]
    groups, per_class = _averages(cat_ids, categories, stats)
    outcomes = {side: {name: 0 for name in names} for side, names in (("gt", GT_OUTCOMES), ("pred", PRED_OUTCOMES))}
    for side in ("gt", "pred"):
        for seg in details[side]:
            outcomes[side][seg["outcome"]] += 1
    return {"image_id": annotation["image_id"], "file_name": annotation.get("file_name"),
            **{g: groups[g] for g in GROUPS},
            "tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum()), "iou_sum": float(iou_sum.sum()),
            "per_class": {cid: {k: v[k] for k in ("tp", "fp", "fn", "iou_sum")} for cid, v in per_class.items()
                          if v["tp"] + v["fp"] + v["fn"]},
            "outcomes": outcomes, "segments": details}


def outcome_totals(per_image: Sequence[dict]) -> dict[str, dict[str, int]]:
    """The per-image ``outcomes`` counts summed over a set."""
    totals = {"gt": {name: 0 for name in GT_OUTCOMES}, "pred": {name: 0 for name in PRED_OUTCOMES}}
    for record in per_image:
        for side, counts in record["outcomes"].items():
            for name, n in counts.items():
                totals[side][name] += n
    return totals


def image_deltas(report: EvalReport) -> list[dict[str, Any]]:
    """Per image, every set's PQ (fraction; None where no category has a segment) and each later set's delta
    against the first, the images where the sets differ most first (largest absolute delta, then GT order)."""
    rows = []
    first = report.results[0].per_image or []
    for position, record in enumerate(first):
        pqs = [r.per_image[position]["All"]["pq"] for r in report.results]
        deltas = [_delta(pq, pqs[0]) for pq in pqs[1:]]
        rows.append({"image_id": record["image_id"], "file_name": record["file_name"],
                     "pq": dict(zip((r.name for r in report.results), pqs)),
                     "delta": dict(zip((r.name for r in report.results[1:]), deltas))})
    spread = [max((abs(d) for d in row["delta"].values() if d is not None), default=-1.0) for row in rows]
    order = sorted(range(len(rows)), key=lambda k: (-spread[k], k))
    return [rows[k] for k in order]


def _unique_names(sets: Sequence[PanopticSet]) -> list[str]:
    names = [s.name for s in sets]
    if len(set(names)) == len(names):
        return names
    return [f"{n}#{i + 1}" for i, n in enumerate(names)]


def format_reference_table(result: PQResult) -> list[str]:
    """The five table lines the reference evaluator prints (percent, one decimal)."""
    lines = ["{:10s}| {:>5s}  {:>5s}  {:>5s} {:>5s}".format("", "PQ", "SQ", "RQ", "N"), "-" * 38]
    for g in GROUPS:
        r = result.groups[g]
        if r["n"] == 0:
            lines.append("{:10s}| {:>5s}  {:>5s}  {:>5s} {:5d}".format(g, "-", "-", "-", 0))
        else:
            lines.append("{:10s}| {:5.1f}  {:5.1f}  {:5.1f} {:5d}".format(
                g, 100 * r["pq"], 100 * r["sq"], 100 * r["rq"], r["n"]))
    return lines
