"""PQ evaluation: parity with the COCO reference evaluator on every reference case, and prn's corrections."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import CATEGORIES, PQ_REFERENCE, scene
from prn_cli import evaluate as evaluate_module
from prn_cli.errors import InvalidInputError
from prn_cli.evaluate import EvalOptions, evaluate, format_reference_table
from prn_cli.panoptic import load_set

CASES = sorted(p.name for p in PQ_REFERENCE.iterdir() if (p / "reference.json").exists())
RESULT_CASES = [c for c in CASES if json.loads((PQ_REFERENCE / c / "reference.json").read_text())["results"]]
ERROR_CASES = [c for c in CASES if c not in RESULT_CASES]


def _case(name):
    d = PQ_REFERENCE / name
    gt = load_set(json_path=d / "gt.json", png_dir=d / "gt")
    pred = load_set(json_path=d / "pred.json", png_dir=d / "pred", need_categories=False)
    return gt, pred, json.loads((d / "reference.json").read_text())


def test_every_reference_case_is_covered():
    assert len(RESULT_CASES) >= 8 and len(ERROR_CASES) >= 4


@pytest.mark.parametrize("case", RESULT_CASES)
def test_reference_results_reproduced(case):
    gt, pred, ref = _case(case)
    result = evaluate(gt, [pred], workers=0).results[0]
    expected = ref["results"]
    got = result.reference_dict()
    assert list(got) == ["All", "per_class", "Things", "Stuff"]
    for group in ("All", "Things", "Stuff"):
        assert got[group]["n"] == expected[group]["n"]
        for key in ("pq", "sq", "rq"):
            assert got[group][key] == pytest.approx(expected[group][key], abs=1e-12, rel=0)
    assert [str(k) for k in got["per_class"]] == list(expected["per_class"])
    for cid, values in expected["per_class"].items():
        for key in ("pq", "sq", "rq"):
            assert got["per_class"][int(cid)][key] == pytest.approx(values[key], abs=1e-12, rel=0)
    for cid, stats in ref["per_class_stats"].items():
        mine = result.per_class[int(cid)]
        assert (mine["tp"], mine["fp"], mine["fn"]) == (stats["tp"], stats["fp"], stats["fn"])
        assert mine["iou_sum"] == pytest.approx(stats["iou_sum"], abs=1e-12, rel=0)
    assert format_reference_table(result) == ref["printed_table"]


@pytest.mark.parametrize("case", RESULT_CASES)
def test_reference_floats_bit_exact_when_summed_like_its_two_processes(case):
    gt, pred, ref = _case(case)
    assert ref["environment"]["cpu_count"] == 2
    result = evaluate(gt, [pred], workers=2, options=EvalOptions(sum_chunks=2)).results[0]
    got = result.reference_dict()
    for group in ("All", "Things", "Stuff"):
        assert {k: got[group][k] for k in ("pq", "sq", "rq", "n")} == ref["results"][group]
    assert {str(k): v for k, v in got["per_class"].items()} == ref["results"]["per_class"]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_reference_errors_reproduced_naming_the_same_image_and_segment(case):
    gt, pred, ref = _case(case)
    with pytest.raises(InvalidInputError) as excinfo:
        evaluate(gt, [pred], workers=2)
    msg = str(excinfo.value)
    ref_msg = ref["error"]["message"]
    numbers = [tok.strip("[].:,") for tok in ref_msg.split() if tok.strip("[].:,").isdigit()]
    assert numbers, ref_msg
    for number in numbers:  # the image id, and the segment / category ids
        assert number in msg, (number, msg)
    assert str(PQ_REFERENCE / case / "pred.json") in msg and "\n" not in msg


def test_results_do_not_depend_on_worker_count():
    gt, pred, _ = _case("synthetic_small")
    one = evaluate(gt, [pred], workers=0).results[0]
    two = evaluate(gt, [pred], workers=2).results[0]
    assert one.groups == two.groups and one.per_class == two.per_class


def test_several_predictions_decode_gt_once_and_match_single_runs(monkeypatch):
    gt, pred, _ = _case("synthetic_small")
    reads = []
    real = evaluate_module.read_id_png
    monkeypatch.setattr(evaluate_module, "read_id_png", lambda p, **kw: reads.append(kw["what"]) or real(p, **kw))
    report = evaluate(gt, [pred, gt], workers=0, names=["base", "gt"])
    n = len(gt.annotations)
    assert reads.count("ground-truth PNG") == n and reads.count("prediction PNG") == 2 * n
    single = evaluate(gt, [pred], workers=0).results[0]
    assert report.results[0].groups == single.groups
    assert report.results[1].groups["Stuff"]["pq"] == 1.0
    data = report.to_dict()
    assert [p["name"] for p in data["predictions"]] == ["base", "gt"]
    delta = data["deltas"][0]["All"]["pq"]
    assert delta == pytest.approx(report.results[1].groups["All"]["pq"] - single.groups["All"]["pq"])


def test_identity_prediction_scores_100(make_set):
    gt = make_set("gt", [scene()])
    ids, segs = scene()
    relabel = {1001: 5, 1002: 6, 11: 7, 12: 8}
    pred_ids = np.vectorize(relabel.get)(ids).astype(np.uint32)
    pred = make_set("pred", [(pred_ids, [{**s, "id": relabel[s["id"]]} for s in segs])])
    r = evaluate(gt, [pred], workers=0).results[0]
    assert r.groups["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 4}


def _pq(gt, pred, **options):
    return evaluate(gt, [pred], workers=0, options=EvalOptions(**options)).results[0]


def _square_gt(make_set, void_column: bool):
    gt_ids = np.full((10, 10), 2, dtype=np.uint32)
    gt_ids[:, :4] = 1                 # a 40-pixel square, then stuff
    if void_column:
        gt_ids[:, 4] = 0              # 10 void pixels beside the square
    return make_set(f"gt{int(void_column)}", [(gt_ids, [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 101}])])


def _square_pred(make_set, name, columns, extra=()):
    pred_ids = np.full((10, 10), 4, dtype=np.uint32)
    pred_ids[:, :columns] = 3
    for y, x in extra:
        pred_ids[y, x] = 3
    return make_set(name, [(pred_ids, [{"id": 3, "category_id": 1}, {"id": 4, "category_id": 101}])])


def test_iou_exactly_one_half_is_not_a_match(make_set):
    gt = _square_gt(make_set, False)
    r = _pq(gt, _square_pred(make_set, "half", 2))   # 20 / 40
    assert (r.per_class[1]["tp"], r.per_class[1]["fp"], r.per_class[1]["fn"]) == (0, 1, 1)
    r = _pq(gt, _square_pred(make_set, "more", 2, [(0, 2)]))  # 21 / 40
    assert r.per_class[1]["tp"] == 1 and r.per_class[1]["iou_sum"] == pytest.approx(21 / 40)


def test_prediction_pixels_on_gt_void_leave_the_union(make_set):
    # 21 pixels on the square + 10 on GT void: IoU = 21 / (31 + 40 - 21 - 10) = 0.525, a match that exists
    # only because the void pixels are taken out of the union (21 / 50 otherwise).
    pred = _square_pred(make_set, "void", 2, [(0, 2)] + [(y, 4) for y in range(10)])
    r = _pq(_square_gt(make_set, True), pred)
    assert r.per_class[1]["tp"] == 1 and r.per_class[1]["iou_sum"] == 21 / 40


def _duplicate_pred(make_set):
    gt = make_set("gt", [scene()])
    pred = make_set("pred", [scene()])
    data = json.loads(pred.read_text())
    data["annotations"][0]["segments_info"].append({"id": 11, "category_id": 2, "iscrowd": 0})  # last says "disc"
    pred.write_text(json.dumps(data))
    return gt, pred


def test_duplicate_ids_are_an_error_unless_allowed(make_set):
    gt, pred = _duplicate_pred(make_set)
    with pytest.raises(InvalidInputError, match="segment id 11 is listed twice.*--allow-duplicate-ids"):
        _pq(gt, pred)
    report = evaluate(gt, [pred], workers=0, options=EvalOptions(allow_duplicate_ids=True))
    r = report.results[0]
    # last entry wins: segment 11 predicted as a disc -> square missed (FN), one disc FP
    assert (r.per_class[1]["tp"], r.per_class[1]["fn"]) == (0, 1)
    assert (r.per_class[2]["tp"], r.per_class[2]["fp"]) == (1, 1)
    assert any("listed twice" in w for w in report.warnings)


def _two_crowds(make_set):
    ids = np.zeros((20, 20), dtype=np.uint32)
    ids[:] = 1001
    ids[0:5, 0:5] = 21       # crowd of squares
    ids[10:15, 10:15] = 22   # a second crowd of squares (the last one listed)
    gt = make_set("gt", [(ids, [{"id": 1001, "category_id": 101}, {"id": 21, "category_id": 1, "iscrowd": 1},
                                {"id": 22, "category_id": 1, "iscrowd": 1}])])
    pred_ids = np.full((20, 20), 1001, dtype=np.uint32)
    pred_ids[0:5, 0:5] = 31  # a square on the first crowd
    pred_ids[10:15, 10:15] = 32  # a square on the last crowd
    pred = make_set("pred", [(pred_ids, [{"id": 1001, "category_id": 101}, {"id": 31, "category_id": 1},
                                         {"id": 32, "category_id": 1}])])
    return gt, pred


def test_several_crowds_reference_uses_the_last_union_uses_all(make_set):
    gt, pred = _two_crowds(make_set)
    report = evaluate(gt, [pred], workers=0)
    assert report.results[0].per_class[1]["fp"] == 1   # only the last crowd ignores its prediction
    assert any("several crowd regions" in w and "--crowd union" in w for w in report.warnings)
    assert _pq(gt, pred, crowd="union").per_class[1]["fp"] == 0


def test_gt_area_from_png_corrects_the_quirk_case():
    gt, pred, ref = _case("quirk_gt_area_from_json")
    report = evaluate(gt, [pred], workers=0)
    assert any("--gt-area png" in w for w in report.warnings)
    fixed = evaluate(gt, [pred], workers=0, options=EvalOptions(gt_area="png")).results[0]
    # with true areas every IoU <= 1, and the numbers differ from the reference's quirky ones
    assert fixed.groups["All"]["pq"] != pytest.approx(ref["results"]["All"]["pq"])
    assert all(v["iou_sum"] <= v["tp"] + 1e-12 for v in fixed.per_class.values())


def test_no_stuff_category_is_undefined_not_a_crash(make_set):
    ids = np.zeros((8, 8), dtype=np.uint32)
    ids[2:6, 2:6] = 5
    gt = make_set("gt", [(ids, [{"id": 5, "category_id": 1}])])
    report = evaluate(gt, [gt], workers=0)
    r = report.results[0]
    assert r.groups["Things"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    assert r.groups["Stuff"] == {"pq": None, "sq": None, "rq": None, "n": 0}
    assert any("ZeroDivisionError" in w for w in r.warnings)
    assert format_reference_table(r)[-1].startswith("Stuff     |     -")


def test_size_mismatch_is_an_error(make_set):
    gt = make_set("gt", [scene()])
    pred = make_set("pred", [scene(h=20)])
    with pytest.raises(InvalidInputError, match=r"32x20 but the ground truth .* is 32x24"):
        _pq(gt, pred)


def test_categories_in_gt_order_and_unknown_pred_category(make_set):
    gt = make_set("gt", [scene()])
    ids, segs = scene()
    pred = make_set("pred", [(ids, [dict(s, category_id=7) if s["id"] == 12 else s for s in segs])],
                    categories=CATEGORIES + [{"id": 7, "name": "x", "isthing": 1}])
    with pytest.raises(InvalidInputError, match="segment id 12 has unknown category_id 7"):
        _pq(gt, pred)


def test_gt_png_ids_missing_from_gt_json_are_non_void_and_warned(make_set, tmp_path):
    # GT pixels whose id the GT JSON does not list are not void for the reference: they stay in the union.
    gt_ids = np.full((10, 10), 2, dtype=np.uint32)
    gt_ids[:, :4] = 1
    gt_ids[:, 4] = 9                      # 10 pixels of an id the JSON will not list
    gt = make_set("gt", [(gt_ids, [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 101},
                                   {"id": 9, "category_id": 101}])])
    data = json.loads(gt.read_text())
    data["annotations"][0]["segments_info"].pop()
    gt.write_text(json.dumps(data))
    pred_ids = np.full((10, 10), 4, dtype=np.uint32)
    pred_ids[:, :2] = 3
    pred_ids[0, 2] = 3                    # 21 pixels on the square
    pred_ids[:, 4] = 3                    # + 10 on the unlisted GT id: union 31 + 40 - 21 = 50, IoU 0.42
    pred = make_set("pred", [(pred_ids, [{"id": 3, "category_id": 1}, {"id": 4, "category_id": 101}])])
    report = evaluate(load_set(gt), [load_set(pred)], workers=0)
    assert report.results[0].per_class[1]["tp"] == 0
    assert any("PNG ids [9] are not in segments_info" in w for w in report.warnings)
