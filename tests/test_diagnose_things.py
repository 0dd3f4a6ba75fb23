"""benchmarks/diagnose_things.py: values on hand-made cases and tiny synthetic sets."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from prn_cli.panoptic import PanopticWriter, category_dict, set_paths

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "diagnose_things.py"


@pytest.fixture(scope="module")
def dt():
    spec = importlib.util.spec_from_file_location("diagnose_things", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["diagnose_things"] = module   # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("diagnose_things", None)


CATS = [category_dict(1, "a", True), category_dict(2, "b", True), category_dict(101, "sky", False)]
SKY = 100


def write_set(root: Path, ids: np.ndarray, segs: dict[int, int], crowd: tuple[int, ...] = ()) -> Path:
    """One 64x64 image; ``segs`` maps segment id -> category id; ``crowd``: the ids marked iscrowd."""
    json_path, png_dir = set_paths(root)
    with PanopticWriter(json_path, png_dir, CATS) as w:
        w.add({"id": 1, "file_name": "img.jpg", "width": ids.shape[1], "height": ids.shape[0]}, ids,
              [{"id": sid, "category_id": cat, "iscrowd": int(sid in crowd)} for sid, cat in segs.items()])
    return root


def box(ids, sid, y0, y1, x0, x1):
    ids[y0:y1, x0:x1] = sid


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory):
    """GT: T1/T2 touching class-1 twins, T3 class 1, T4 class 2, T5 class 2, T6 class 2 on sky.

    Base: T1+T2 merged into one segment, T3 missed (sky), T4 labelled class 1, T5 cut into two halves, T6 exact,
    plus a class-1 blob on the sky. Refined: twins separated, T3 found, T4 still class 1, T5 still split, T6's mask
    shrunk (still matched), blob removed.
    """
    root = tmp_path_factory.mktemp("hand")
    gt = np.full((64, 64), SKY, np.uint32)
    box(gt, 1, 4, 14, 4, 14)
    box(gt, 2, 4, 14, 14, 24)
    box(gt, 3, 30, 40, 4, 14)
    box(gt, 4, 30, 40, 30, 40)
    box(gt, 5, 46, 58, 46, 58)
    box(gt, 6, 4, 20, 44, 60)
    gt_segs = {SKY: 101, 1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 2}

    base = np.full((64, 64), SKY, np.uint32)
    box(base, 11, 4, 14, 4, 24)            # merged twins
    box(base, 14, 30, 40, 30, 40)          # T4 with the wrong class
    box(base, 15, 46, 58, 46, 52)          # T5, left half
    box(base, 16, 46, 58, 52, 58)          # T5, right half
    box(base, 17, 4, 20, 44, 60)           # T6 exact
    box(base, 18, 50, 56, 4, 10)           # false positive on the sky
    base_segs = {SKY: 101, 11: 1, 14: 1, 15: 2, 16: 2, 17: 2, 18: 1}

    ref = np.full((64, 64), SKY, np.uint32)
    box(ref, 21, 4, 14, 4, 14)
    box(ref, 22, 4, 14, 14, 24)
    box(ref, 23, 30, 40, 4, 14)
    box(ref, 24, 30, 40, 30, 40)           # still class 1
    box(ref, 25, 46, 58, 46, 52)
    box(ref, 26, 46, 58, 52, 58)
    box(ref, 27, 5, 19, 45, 59)            # T6 shrunk: IoU 196/256
    ref_segs = {SKY: 101, 21: 1, 22: 1, 23: 1, 24: 1, 25: 2, 26: 2, 27: 2}
    return (write_set(root / "gt", gt, gt_segs), write_set(root / "base", base, base_segs),
            write_set(root / "refined", ref, ref_segs))


def test_failure_kinds_and_recovery(dt, hand_made):
    gt, base, ref = hand_made
    report = dt.diagnose(gt, base, ref, run_grouping=False)
    kinds = report["recovery"]["kinds"]
    got = {k: (v["gt_things"], v["refined_tp"]) for k, v in kinds.items()}
    assert got == {"matched": (1, 1), "wrong_class": (1, 0), "merged": (2, 2), "split": (1, 0), "missed": (1, 1),
                   "other": (0, 0)}
    assert kinds["merged"]["recovered"] == 1.0 and kinds["missed"]["recovered"] == 1.0
    tr = report["recovery"]["transitions"]   # the same kinds, of the refined set
    assert tr["merged"]["matched"] == 2 and tr["wrong_class"]["wrong_class"] == 1 and tr["split"]["split"] == 1
    assert sum(sum(row.values()) for row in tr.values()) == 6
    fps = report["recovery"]["base_fp"]
    assert fps["all"] == {"base_fp": 5, "still_fp": 3, "removed": 2}
    assert fps["on_background"] == {"base_fp": 1, "still_fp": 0, "removed": 1}
    totals = report["recovery"]["totals"]
    assert (totals["base"]["tp"], totals["base"]["fp"], totals["base"]["fn"]) == (1, 5, 5)
    assert (totals["refined"]["tp"], totals["refined"]["fp"], totals["refined"]["fn"]) == (4, 3, 2)
    assert totals["refined"]["fp_new"] == 0
    assert totals["base"]["evaluator_agrees"] and totals["refined"]["evaluator_agrees"]
    # section 3: only T6 is matched by both; its mask got worse
    mq = report["mask_quality"]
    assert mq["all"]["n"] == 1 and mq["all"]["mean_iou_base"] == 1.0
    assert mq["all"]["mean_iou_refined"] == pytest.approx(196 / 256)
    assert mq["all"]["worsened"] == 1.0 and mq["all"]["improved"] == 0.0
    assert mq["small"]["n"] == 1 and mq["small"]["gt_things"] == 6 and mq["medium"]["gt_things"] == 0
    # recall by GT area: T1-T5 are 100-144 px (refined finds T1-T3), T6 is 256 px (both find it)
    by_size = {k: (v["gt_things"], v["base_tp"], v["refined_tp"]) for k, v in report["recovery"]["by_size"].items()}
    assert by_size == {"< 100 px": (0, 0, 0), "100-256 px": (5, 0, 3), "256-1024 px": (1, 1, 1),
                       "1024-9216 px": (0, 0, 0), ">= 9216 px": (0, 0, 0)}
    assert report["recovery"]["by_size"]["100-256 px"]["refined_recall"] == pytest.approx(0.6)
    # PRN's own things: the separated twins (IoU 0.5 with the merged base segment, not more) and T3 (on base sky)
    new = {k: (v["count"], v["tp"], v["fp"]) for k, v in report["recovery"]["new_things"].items()}
    assert new["all"] == (3, 3, 0) and new["100-256 px"] == (3, 3, 0) and new["< 100 px"] == (0, 0, 0)
    assert report["recovery"]["new_things"]["all"]["precision"] == 1.0


def test_cli_writes_tables_and_json(dt, hand_made, tmp_path, capsys):
    gt, base, ref = hand_made
    out = tmp_path / "report.json"
    assert dt.main(["--gt", str(gt), "--base", str(base), "--refined", str(ref), "--no-grouping",
                    "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "## 4. Thing recall by the base's failure kind" in text and "| merged | 2 | 2 | 100.0% |" in text
    assert "| all | 3 | 3 | 0 | 100.0 |" in text
    assert json.loads(out.read_text())["recovery"]["kinds"]["merged"]["gt_things"] == 2


def test_band_is_boundary_band(dt):
    """The numpy band equals the network's torch ``boundary_band`` (image edges included)."""
    import torch

    from prn_cli.models.prn.boundary import boundary_band

    rng = np.random.default_rng(0)
    masks = [rng.random((17, 23)) < 0.5, np.ones((9, 9), bool), np.zeros((9, 9), bool)]
    m = np.zeros((20, 20), bool)
    m[0:6, 3:19] = True                    # a rectangle on the top edge
    masks.append(m)
    for mask in masks:
        for r in range(4):
            want = boundary_band(torch.from_numpy(mask.astype(np.uint8))[None], r)[0].numpy()
            assert np.array_equal(dt.band(mask, r), want)
    square = np.zeros((12, 12), bool)
    square[3:9, 3:9] = True
    assert dt.band(square, 1).sum() == 8 * 8 - 4 * 4 and dt.band(square, 2).sum() == 10 * 10 - 2 * 2


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """GT: T1 class 1 10x10, T2 class 2 10x10, T3 class 1 10x10, T4 class 2 10x10, a class-1 crowd region.

    Base: T1's square shifted by 2 px down and right (IoU 64/136 < 0.5), T2's extended by 2 px downwards (IoU
    100/120), on T3 an exact class-2 segment over its left 8 columns (IoU 0.8, the wrong category: ignored) and a
    class-1 sliver over its last 2 columns and 2 px beyond (IoU 20/120), T4 missed (sky), the crowd copied.
    """
    root = tmp_path_factory.mktemp("shifted")
    gt = np.full((64, 64), SKY, np.uint32)
    box(gt, 1, 10, 20, 10, 20)
    box(gt, 2, 30, 40, 30, 40)
    box(gt, 3, 45, 55, 10, 20)
    box(gt, 4, 50, 60, 40, 50)
    box(gt, 5, 2, 8, 40, 60)
    gt_segs = {SKY: 101, 1: 1, 2: 2, 3: 1, 4: 2, 5: 1}
    base = np.full((64, 64), SKY, np.uint32)
    box(base, 11, 12, 22, 12, 22)
    box(base, 12, 30, 42, 30, 40)
    box(base, 13, 45, 55, 10, 18)
    box(base, 14, 45, 55, 18, 22)
    box(base, 15, 2, 8, 40, 60)
    base_segs = {SKY: 101, 11: 1, 12: 2, 13: 2, 14: 1, 15: 1}
    return write_set(root / "gt", gt, gt_segs, crowd=(5,)), write_set(root / "base", base, base_segs)


def test_boundary_ceiling_on_shifted_squares(dt, shifted):
    """Section 3's boundary ceiling, by hand (band = the base square's ring of width 2r + 1 px, its inner
    (side - 2r)^2 core kept, the rest from the GT):

    T1, base [12:22]^2 on GT [10:20]^2: r=1 keeps the core [13:21]^2 (64 px, 49 on T1) and adds T1 inside
    [11:23]^2 less the core (81 - 49 = 32 px): inter 81, area 96, IoU 81/115; r>=2 gives T1 back (1.0).
    T2, base rows 30:42 on GT rows 30:40 (cols 30:40): r=1 keeps rows 31:41 x cols 31:39 (80 px, 72 on T2) and
    adds 28 px of T2: inter 100, area 108, IoU 100/108; r>=2 gives T2 back.
    T3, the class-1 sliver (cols 18:22): r=1 keeps rows 46:54 x cols 19:21 (16 px, 8 on T3) and adds T3 in cols
    17:20 less those 8 (22 px): inter 30, area 38, IoU 30/108; r=2 has no core left: T3 in cols 16:20, 0.4;
    r=3: cols 15:20, 0.5, not a match. T4 has no base segment (0). The crowd is not counted.
    """
    gt, base = shifted
    inputs = dt.load_inputs(gt, base, base)
    rec = dt.collect(inputs)
    want = np.array([[64 / 136, 81 / 115, 1.0, 1.0],
                     [100 / 120, 100 / 108, 1.0, 1.0],
                     [20 / 120, 30 / 108, 0.4, 0.5],
                     [0.0, 0.0, 0.0, 0.0]])
    assert rec["ceiling_iou"].shape == (4, 1 + len(dt.BAND_RADII)) and dt.BAND_RADII == (1, 2, 3)
    assert np.array_equal(rec["ceiling_iou"], want)

    report = dt.diagnose(gt, base, base, run_grouping=False)
    bc = report["boundary_ceiling"]
    assert bc["radii"] == [1, 2, 3]
    rows = bc["rows"]
    assert list(rows) == ["all", "small", "medium", "large"]
    assert rows["all"]["base"] == {"gt_things": 4, "matched": 1, "mean_iou": 100 / 120}
    assert rows["all"]["r1"]["gt_things"] == 4 and rows["all"]["r1"]["matched"] == 2
    assert rows["all"]["r1"]["mean_iou"] == pytest.approx((81 / 115 + 100 / 108) / 2, abs=1e-15)
    assert rows["all"]["r2"] == {"gt_things": 4, "matched": 2, "mean_iou": 1.0}
    assert rows["all"]["r3"] == {"gt_things": 4, "matched": 2, "mean_iou": 1.0}
    assert rows["small"] == rows["all"]
    assert rows["medium"]["r2"] == {"gt_things": 0, "matched": 0, "mean_iou": None}
    # the base row is the evaluator's thing TP; the refined set plays no part
    assert report["recovery"]["totals"]["base"]["tp"] == 1 and report["recovery"]["totals"]["base"]["evaluator_agrees"]
    assert dt.diagnose(gt, base, gt, run_grouping=False)["boundary_ceiling"] == bc
    text = dt.to_markdown(report)
    assert "### Boundary ceiling: the base's thing masks with a band of r px replaced by the GT" in text
    assert ("| size | GT things | base matched | base IoU | r=1 matched | r=1 IoU | r=2 matched | r=2 IoU "
            "| r=3 matched | r=3 IoU |") in text
    assert "| all | 4 | 1 | 0.833 | 2 | 0.815 | 2 | 1.000 | 2 | 1.000 |" in text
    assert "| medium | 0 | 0 | - | 0 | - | 0 | - | 0 | - |" in text


def test_the_recut_with_a_perfect_refiner_on_shifted_squares(dt, shifted):
    """Section 3's last table, by hand, with the base as the refined set: the re-cut with the GT's thing foreground
    moves T1's square 2 px back onto the GT (36 pixels join, 36 leave), cuts T2's 2 extra rows (20) and the class-1
    sliver's 2 columns beyond T3 (20; still IoU 20/100, no match); T4 is out of reach and the crowd is exact."""
    gt, base = shifted
    report = dt.diagnose(gt, base, base, run_grouping=False)
    ro = report["recut_oracle"]
    assert ro["radius"] == 2 and ro["pixels_moved"] == 72 + 20 + 20
    assert ro["rows"]["refined"] == report["pq"]["refined"]
    assert ro["rows"]["refined"]["things"] == {"tp": 1, "fp": 3, "fn": 3}
    assert ro["rows"]["recut"]["things"] == {"tp": 2, "fp": 2, "fn": 2}
    assert ro["rows"]["recut"]["sq_th"] == 1.0 and ro["rows"]["recut"]["pq_th"] > ro["rows"]["refined"]["pq_th"]
    # a refined set equal to the GT has nothing left to gain
    exact = dt.diagnose(gt, base, gt, run_grouping=False)["recut_oracle"]
    assert exact["pixels_moved"] == 0 and exact["rows"]["recut"] == exact["rows"]["refined"]
    text = dt.to_markdown(report)
    assert "### The re-cut with a perfect boundary refiner (radius 2)" in text
    assert "| refined, re-cut with the GT |" in text


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from prn_cli.perturb import write_corrupted_set
    from prn_cli.synth import SynthConfig, write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root / "data", SynthConfig(n=4, width=128, height=128, seed=3, split="val", crowd_prob=0.0))
    write_corrupted_set(root / "data", root / "base", seed=0)
    return root / "data", root / "base"


def test_refined_equal_to_base_is_a_copy(dt, synthetic):
    data, base = synthetic
    report = dt.diagnose(data, base, base, run_grouping=False)
    cd = report["copy_distance"]
    assert cd["Things"]["pq"] == 1.0 and cd["Stuff"]["pq"] == 1.0 and cd["Things"]["fp"] == 0
    kinds = report["recovery"]["kinds"]
    assert sum(v["gt_things"] for v in kinds.values()) > kinds["matched"]["gt_things"] > 0
    for name, v in kinds.items():
        assert v["refined_tp"] == (v["gt_things"] if name == "matched" else 0)
    fps = report["recovery"]["base_fp"]["all"]
    assert fps["still_fp"] == fps["base_fp"]
    assert report["mask_quality"]["all"]["improved"] == 0.0 and report["mask_quality"]["all"]["worsened"] == 0.0
    assert report["pq"]["base"] == report["pq"]["refined"]


def test_boundary_ceiling_base_row_is_the_evaluators(dt, synthetic):
    """On a synthetic set: the ceiling's base row counts the evaluator's thing TPs, with section 3's mean IoU."""
    data, base = synthetic
    report = dt.diagnose(data, base, base, run_grouping=False)
    rows = report["boundary_ceiling"]["rows"]
    assert rows["all"]["base"]["matched"] == report["pq"]["base"]["things"]["tp"] > 0
    assert rows["all"]["base"]["mean_iou"] == pytest.approx(report["mask_quality"]["all"]["mean_iou_base"],
                                                            abs=1e-12)
    n = report["mask_quality"]["all"]["gt_things"]
    for key in ("base", "r1", "r2", "r3"):
        assert rows["all"][key]["gt_things"] == n
        assert sum(rows[b][key]["matched"] for b in ("small", "medium", "large")) == rows["all"][key]["matched"]
    json.dumps(report, allow_nan=False)


def test_grouping_ceiling_and_floor(dt, synthetic):
    data, base = synthetic
    report = dt.diagnose(data, base, base, grouping_limit=4)
    rows = report["grouping"]["rows"]
    for src in ("foreground", "semantic"):
        assert rows[f"ceiling-{src}"]["pq"] >= 0.95 and rows[f"ceiling-{src}"]["pq_th"] >= 0.95
        # a network that copies its base gives (about) the base's thing PQ back
        assert abs(rows[f"floor-{src}"]["pq_th"] - rows["base"]["pq_th"]) < 0.05
    assert report["checkpoint"]["postprocess"]["foreground_source"] == report["grouping"]["checkpoint_source"]


def test_heads_on_things_per_failure_kind(dt):
    """Section 6 on hand-made network outputs: a matched thing PRN sees, a missed one it half sees."""
    import types

    import torch

    gt = np.full((64, 64), SKY, np.uint32)
    box(gt, 1, 4, 20, 4, 20)               # class 1, matched by the base
    box(gt, 2, 30, 46, 30, 46)             # class 2, missed by the base (sky there)
    base = np.full((64, 64), SKY, np.uint32)
    box(base, 11, 4, 20, 4, 20)
    cmap = types.SimpleNamespace(class_ids=[1, 2, 101])
    semantic = torch.zeros(3, 64, 64)
    semantic[2] = 5.0                      # sky everywhere ...
    semantic[0, 4:20, 4:20] = 10.0         # ... but class 1 on the matched thing
    semantic[1, 30:46, 30:38] = 10.0       # and class 2 on the left half of the missed one
    center = torch.zeros(1, 64, 64)
    center[0, 12, 12] = 0.6
    center[0, 38, 40] = 0.05               # below the threshold
    foreground = torch.full((1, 64, 64), -20.0)
    foreground[0, 4:20, 4:20] = 20.0
    net = {"semantic": semantic, "center": center, "foreground": foreground}
    rows = dt.heads_on_things(net, gt, [{"id": SKY, "category_id": 101}, {"id": 1, "category_id": 1},
                                        {"id": 2, "category_id": 2}],
                              base, [{"id": SKY, "category_id": 101}, {"id": 11, "category_id": 1}],
                              cmap, np.array([1, 2]), 0.1)
    cols = {c: i for i, c in enumerate(dt.HEAD_COLUMNS)}
    assert rows.shape == (2, len(dt.HEAD_COLUMNS))
    matched, missed = rows
    assert dt.KINDS[int(matched[cols["kind"]])] == "matched" and dt.KINDS[int(missed[cols["kind"]])] == "missed"
    assert matched[cols["area"]] == 256 and missed[cols["area"]] == 256
    np.testing.assert_allclose(matched[2:7], [1.0, 1.0, 1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(missed[2:7], [0.5, 0.5, 0.5, 0.0, 0.0], atol=1e-6)
    summary = dt.summarise_heads(rows)
    assert summary["missed"]["gt_things"] == 1 and summary["missed"]["semantic_majority_correct"] == 0.0
    assert summary["all"]["semantic_correct"] == pytest.approx(0.75)
    assert summary["split"]["gt_things"] == 0 and summary["split"]["foreground"] is None


def test_head_oracles_and_prn_without_the_base_instance_maps(dt, synthetic, tmp_path):
    """Section 5 with the shipped PRN and the GT itself as the base: the all-heads oracle gives the GT back, and
    the shipped PRN's things come from the base's instance maps (blanked, it loses most of them)."""
    data, _ = synthetic
    report = dt.diagnose(data, data, data, images=data / "images" / "val", run_grouping=False)
    rows = report["head_oracles"]["rows"]
    assert rows["oracle all"]["pq_th"] >= 0.95
    assert rows["network"]["pq_th"] >= 0.8
    assert rows["network, base instance maps blanked"]["pq_th"] < rows["network"]["pq_th"] - 0.2
    text = dt.to_markdown(report)
    assert "network, base instance maps blanked" in text
