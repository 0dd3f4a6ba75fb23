"""``evaluate(..., per_image=True)``: per-image PQ and per-segment outcomes that agree with the totals."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import PQ_REFERENCE, scene
from prn_cli.evaluate import (GT_OUTCOMES, PRED_OUTCOMES, CategoryStats, EvalOptions, _averages, evaluate,
                              image_deltas)
from prn_cli.panoptic import load_set

CASES = sorted(p.name for p in PQ_REFERENCE.iterdir()
               if (p / "reference.json").exists() and not p.name.startswith("error_"))


def _case(name):
    d = PQ_REFERENCE / name
    return (load_set(json_path=d / "gt.json", png_dir=d / "gt"),
            load_set(json_path=d / "pred.json", png_dir=d / "pred", need_categories=False))


@pytest.mark.parametrize("case", CASES)
def test_per_image_counts_add_up_to_the_totals_and_reproduce_pq(case):
    gt, pred = _case(case)
    result = evaluate(gt, [pred], workers=0, per_image=True,
                      options=EvalOptions(gt_area="png" if "quirk" in case else "json")).results[0]
    assert len(result.per_image) == len(gt.annotations) == result.num_images
    cat_ids = [c["id"] for c in gt.categories]
    summed = {cid: CategoryStats() for cid in cat_ids}
    in_order = {cid: 0.0 for cid in cat_ids}
    for record in result.per_image:
        for cid, v in record["per_class"].items():
            s = summed[cid]
            s.tp, s.fp, s.fn, s.iou_sum = s.tp + v["tp"], s.fp + v["fp"], s.fn + v["fn"], s.iou_sum + v["iou_sum"]
        # the matched GT segments are listed in ascending id order, as the evaluator adds their IoUs
        for seg in sorted(record["segments"]["gt"], key=lambda g: g["id"]):
            if seg["outcome"] == "matched" and seg["category_id"] in in_order:
                in_order[seg["category_id"]] += seg["iou"]
        segs = record["segments"]
        gt_counts = record["outcomes"]["gt"]
        pred_counts = record["outcomes"]["pred"]
        assert gt_counts["matched"] == pred_counts["matched"] == record["tp"]
        assert sum(gt_counts[k] for k in GT_OUTCOMES if k not in ("matched", "crowd")) == record["fn"]
        assert sum(pred_counts[k] for k in PRED_OUTCOMES if k not in ("matched", "ignored")) == record["fp"]
        assert len(segs["gt"]) == sum(gt_counts.values()) and len(segs["pred"]) == sum(pred_counts.values())
    for cid in cat_ids:
        total = result.per_class[cid]
        s = summed[cid]
        assert (s.tp, s.fp, s.fn) == (total["tp"], total["fp"], total["fn"])
        assert in_order[cid] == total["iou_sum"]          # bit for bit: same additions, same order
        assert s.iou_sum == pytest.approx(total["iou_sum"], abs=1e-12)
    categories = {c["id"]: c for c in gt.categories}
    groups, _ = _averages(cat_ids, categories, [summed[c] for c in cat_ids])
    for g in ("All", "Things", "Stuff"):
        assert groups[g]["n"] == result.groups[g]["n"]
        if groups[g]["n"]:
            assert groups[g]["pq"] == pytest.approx(result.groups[g]["pq"], abs=1e-12)


def test_per_image_pq_of_a_one_image_set_is_the_total():
    gt, pred = _case("sample_merge_split")
    one = evaluate(gt, [pred], workers=0, per_image=True).results[0]
    # every image alone, evaluated as its own set, gives that image's record
    for record in one.per_image[:3]:
        sub_gt = load_set(json_path=gt.json_path, png_dir=gt.png_dir)
        sub_gt.annotations = [a for a in gt.annotations if a["image_id"] == record["image_id"]]
        alone = evaluate(sub_gt, [pred], workers=0).results[0]
        for g in ("All", "Things", "Stuff"):
            assert record[g] == alone.groups[g]


def _outcomes(make_set, pred_ids, pred_segs, name):
    gt = make_set(f"gt_{name}", [scene()])
    pred = make_set(f"pred_{name}", [(pred_ids, pred_segs)])
    record = evaluate(gt, [pred], workers=0, per_image=True).results[0].per_image[0]
    return {s["id"]: s for s in record["segments"]["gt"]}, {s["id"]: s for s in record["segments"]["pred"]}, record


def test_segment_outcomes_missed_wrong_class_split(make_set):
    ids, segs = scene()
    pred = ids.copy()
    pred[ids == 11] = 0                                  # the square left void: missed
    column = np.arange(32)[None, :]
    pred[(ids == 12) & (column < 22)] = 13               # the disc in three pieces of 11, 7 and 11 pixels: split
    pred[(ids == 12) & (column == 22)] = 14
    pred_segs = [{"id": 1001, "category_id": 101}, {"id": 1002, "category_id": 102},
                 {"id": 12, "category_id": 2}, {"id": 13, "category_id": 2}, {"id": 14, "category_id": 2}]
    gt_out, pred_out, record = _outcomes(make_set, pred, pred_segs, "split")
    assert gt_out[11]["outcome"] == "missed" and gt_out[11]["match"] is None
    assert gt_out[12]["outcome"] == "split"
    assert pred_out[12]["outcome"] == pred_out[13]["outcome"] == pred_out[14]["outcome"] == "split"
    assert gt_out[1001] == {"id": 1001, "category_id": 101, "area": int((ids == 1001).sum()), "iscrowd": 0,
                            "outcome": "matched", "match": 1001, "iou": 1.0, "best": 1001, "best_iou": 1.0}
    assert record["outcomes"]["gt"]["missed"] == 1 and record["outcomes"]["gt"]["split"] == 1
    assert record["tp"] == 2 and record["fn"] == 2 and record["fp"] == 3

    relabelled = [dict(s) for s in segs]
    relabelled[3]["category_id"] = 1                     # the disc called a square
    gt_out, pred_out, record = _outcomes(make_set, ids, relabelled, "relabel")
    assert gt_out[12]["outcome"] == "wrong_class" and gt_out[12]["best"] == 12 and gt_out[12]["best_iou"] == 1.0
    assert pred_out[12]["outcome"] == "wrong_class"
    assert record["Things"]["pq"] == pytest.approx(1 / 3)   # square: 1.0, disc: FN (0), square-class FP


def test_segment_outcomes_merged_and_mislocated(make_set, tmp_path):
    ids = np.full((20, 40), 1001, dtype=np.uint32)
    ids[5:15, 4:14] = 11
    ids[5:15, 16:26] = 12
    segs = [{"id": 1001, "category_id": 101}, {"id": 11, "category_id": 1}, {"id": 12, "category_id": 1}]
    gt = make_set("gt2", [(ids, segs)])
    pred = np.full_like(ids, 1001)
    pred[5:15, 4:26] = 21                               # both squares as one
    pred[0:4, 30:40] = 22                               # a square where there is none
    pred_set = make_set("pred2", [(pred, [{"id": 1001, "category_id": 101}, {"id": 21, "category_id": 1},
                                           {"id": 22, "category_id": 1}])])
    record = evaluate(gt, [pred_set], workers=0, per_image=True).results[0].per_image[0]
    gt_out = {s["id"]: s for s in record["segments"]["gt"]}
    pred_out = {s["id"]: s for s in record["segments"]["pred"]}
    assert gt_out[11]["outcome"] == gt_out[12]["outcome"] == "merged"
    assert pred_out[21]["outcome"] == "merged" and pred_out[22]["outcome"] == "spurious"
    assert gt_out[11]["best"] == 21 and gt_out[11]["best_iou"] == pytest.approx(100 / 220)

    shifted = np.full_like(ids, 1001)
    shifted[5:15, 10:20] = 11                            # 4 of 10 columns overlap: IoU 40/160
    pred_set = make_set("pred3", [(shifted, [{"id": 1001, "category_id": 101}, {"id": 11, "category_id": 1}])])
    record = evaluate(gt, [pred_set], workers=0, per_image=True).results[0].per_image[0]
    gt_out = {s["id"]: s for s in record["segments"]["gt"]}
    assert gt_out[11]["outcome"] == "mislocated" and gt_out[11]["best_iou"] == pytest.approx(40 / 160)
    assert gt_out[12]["outcome"] == "mislocated" and gt_out[12]["best"] == 11   # the same 40 pixels


def test_image_deltas_put_the_largest_change_first(make_set):
    gt_ids, segs = scene()
    gt = make_set("gt", [scene(), scene(), scene()])
    worse = gt_ids.copy()
    worse[gt_ids == 11] = 0
    base = make_set("base", [(gt_ids, segs), (gt_ids, segs), (gt_ids, segs)])
    refined = make_set("refined", [(gt_ids, segs), (worse, [s for s in segs if s["id"] != 11]), (gt_ids, segs)])
    report = evaluate(gt, [base, refined], workers=0, per_image=True)
    rows = image_deltas(report)
    assert [r["image_id"] for r in rows] == [2, 1, 3]
    assert rows[0]["pq"]["base"] == 1.0 and rows[0]["delta"]["refined"] == pytest.approx(0.75 - 1.0)
    out = report.to_dict()
    assert out["image_deltas"][0]["image_id"] == 2
    assert out["predictions"][1]["outcomes"]["gt"]["missed"] == 1
    assert out["predictions"][1]["per_image"][1]["fn"] == 1
