"""Ground-truth corruption: valid predictions, deterministic, and each failure mode doing what it says."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from prn_cli.errors import InvalidInputError, OutputExistsError
from prn_cli.panoptic import PanopticWriter, load_set, validate_set
from prn_cli.perturb import CorruptionConfig, corrupt, write_corrupted_set
from prn_cli.synth import SynthConfig, generate_sample, synth_categories, write_dataset

CATS = synth_categories()
CAT = {c["id"]: c for c in CATS}
MODES = ["coarse_boundary", "drop", "merge", "split", "wrong_class", "false_positive", "stuff_boundary",
         "crowd_drop"]


def only(mode: str | None, strength: float = 0.5) -> CorruptionConfig:
    """A config in which only ``mode`` happens, with probability 1 (at strength >= 0.5)."""
    probs = {m: 0.0 for m in MODES}
    if mode is not None:
        probs[mode] = 1.0
    return CorruptionConfig(strength=strength, **probs)


@pytest.fixture(scope="module")
def gt_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("gt")
    write_dataset(root, SynthConfig(n=8, seed=1, width=160, height=120, crowd_prob=0.6))
    return root


def scene():
    """A 60x90 hand-made GT: grass over water, two touching squares, a lone disc, a crowd of triangles."""
    ids = np.full((60, 90), 500, np.uint32)  # grass
    ids[40:, :] = 600  # water
    ids[8:28, 8:28] = 11  # square
    ids[8:28, 28:48] = 12  # square, touching 11
    ids[8:28, 62:82] = 13  # disc (drawn as a box; the class is what matters here)
    ids[44:50, 10:16] = 14  # crowd of triangles
    ids[44:50, 20:26] = 14
    segs = [
        {"id": 500, "category_id": 102, "iscrowd": 0},
        {"id": 600, "category_id": 103, "iscrowd": 0},
        {"id": 11, "category_id": 2, "iscrowd": 0},
        {"id": 12, "category_id": 2, "iscrowd": 0},
        {"id": 13, "category_id": 5, "iscrowd": 0},
        {"id": 14, "category_id": 1, "iscrowd": 1},
    ]
    return ids, segs


#: GT id -> category in :func:`scene`
CAT_OF = {500: 102, 600: 103, 11: 2, 12: 2, 13: 5, 14: 1}


def check_valid(ids: np.ndarray, segs: list[dict]) -> None:
    listed = [s["id"] for s in segs]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(np.unique(ids).tolist()) - {0}
    assert all(0 < i < 2 ** 24 for i in listed)
    assert all(s["iscrowd"] == 0 for s in segs)
    assert all(s["category_id"] in CAT for s in segs)
    assert ids.dtype == np.uint32


def seg_with_mask(ids, segs, mask) -> list[tuple[int, int]]:
    """(category, pixels) of the prediction segments overlapping ``mask``."""
    out = []
    for s in segs:
        n = int(((ids == s["id"]) & mask).sum())
        if n:
            out.append((s["category_id"], n))
    return out


# ---------------------------------------------------------------------------------------------------------------
# validity and determinism


@pytest.mark.parametrize("strength", [0.0, 0.3, 0.5, 1.0])
def test_corrupt_output_is_valid(strength):
    cfg = SynthConfig(width=160, height=120, seed=3, crowd_prob=0.5)
    for index in range(6):
        _, gt_ids, gt_segs = generate_sample(cfg, index)
        ids, segs = corrupt(gt_ids, gt_segs, CATS, np.random.default_rng(index), CorruptionConfig(strength=strength))
        check_valid(ids, segs)
        assert ids.shape == gt_ids.shape


def test_handmade_scene_valid_at_full_strength():
    ids, segs = scene()
    for seed in range(20):
        out, osegs = corrupt(ids, segs, CATS, seed, CorruptionConfig(strength=1.0))
        check_valid(out, osegs)


def test_write_corrupted_set_is_a_valid_prediction(gt_root, tmp_path):
    calls = []
    path = write_corrupted_set(gt_root, tmp_path / "pred", seed=1, progress=lambda d, t: calls.append((d, t)))
    assert path == tmp_path / "pred" / "panoptic.json"
    gt, pred = load_set(gt_root), load_set(tmp_path / "pred")
    assert validate_set(pred, gt.categories_by_id) == []
    assert pred.categories == gt.categories
    assert pred.images == gt.images
    assert [a["file_name"] for a in pred.annotations] == [a["file_name"] for a in gt.annotations]
    assert [a["image_id"] for a in pred.annotations] == [a["image_id"] for a in gt.annotations]
    assert all(s["iscrowd"] == 0 for a in pred.annotations for s in a["segments_info"])
    assert calls == [(i, 8) for i in range(1, 9)]
    data = json.loads(path.read_text())
    assert data["info"]["seed"] == 1 and data["info"]["config"]["strength"] == 0.5


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic(gt_root, tmp_path):
    write_corrupted_set(gt_root, tmp_path / "a", seed=4)
    write_corrupted_set(load_set(gt_root), tmp_path / "b", seed=4)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 9 and a == b
    write_corrupted_set(gt_root, tmp_path / "c", seed=5)
    c = _files(tmp_path / "c")
    assert any(a[k] != c[k] for k in a if k.endswith(".png"))


def test_per_image_determinism_independent_of_other_images(gt_root, tmp_path):
    """An image's corruption depends on (seed, image_id), not on the images before it."""
    gt = load_set(gt_root)
    sub = tmp_path / "sub"
    with PanopticWriter(sub.with_suffix(".json"), sub, gt.categories) as w:
        for ann in gt.annotations[3:5]:
            w.add(gt.images_by_id[ann["image_id"]], gt.read_ids(ann), ann["segments_info"], ann["file_name"])
    write_corrupted_set(gt_root, tmp_path / "full", seed=2)
    write_corrupted_set(sub.with_suffix(".json"), tmp_path / "part", seed=2)
    full, part = _files(tmp_path / "full"), _files(tmp_path / "part")
    for name, data in part.items():
        if name.endswith(".png"):
            assert full[name] == data


def test_refuses_overwrite(gt_root, tmp_path):
    write_corrupted_set(gt_root, tmp_path, seed=0)
    with pytest.raises(OutputExistsError):
        write_corrupted_set(gt_root, tmp_path, seed=0)
    write_corrupted_set(gt_root, tmp_path, seed=1, overwrite=True)
    assert json.loads((tmp_path / "panoptic.json").read_text())["info"]["seed"] == 1


def test_inconsistent_gt_is_reported(tmp_path):
    ids, segs = scene()
    with pytest.raises(ValueError, match="not in segments_info"):
        corrupt(ids, segs[:-1], CATS, 0)
    bad = [dict(s) for s in segs]
    bad[0]["category_id"] = 999
    with pytest.raises(ValueError, match="999"):
        corrupt(ids, bad, CATS, 0)
    # through the set writer it becomes a one-line input error naming the image
    with PanopticWriter(tmp_path / "gt.json", tmp_path / "gt", CATS) as w:
        w.add({"id": 7, "file_name": "x.jpg", "width": 90, "height": 60}, ids, segs)
    data = json.loads((tmp_path / "gt.json").read_text())
    data["annotations"][0]["segments_info"].pop()
    (tmp_path / "gt.json").write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match="image 7"):
        write_corrupted_set(tmp_path / "gt.json", tmp_path / "out")
    assert not (tmp_path / "out" / "panoptic.json").exists()


@pytest.mark.parametrize("kwargs", [{"strength": 1.5}, {"drop": -0.1}, {"merge": "a"}, {"min_area": 0},
                                    {"split": True}])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        CorruptionConfig(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# strength


def test_strength_zero_is_gt_up_to_relabelling():
    cfg = SynthConfig(width=160, height=120, seed=8, crowd_prob=1.0)
    for index in range(4):
        _, gt_ids, gt_segs = generate_sample(cfg, index)
        ids, segs = corrupt(gt_ids, gt_segs, CATS, np.random.default_rng(0), CorruptionConfig(strength=0.0))
        check_valid(ids, segs)
        assert len(segs) == len(gt_segs)
        gcat = {s["id"]: s["category_id"] for s in gt_segs}
        pcat = {s["id"]: s["category_id"] for s in segs}
        pairs = np.unique(np.stack([gt_ids.ravel(), ids.ravel()]), axis=1)
        # a bijection between GT and predicted ids, void staying void, categories kept
        assert len(set(pairs[0].tolist())) == len(set(pairs[1].tolist())) == pairs.shape[1]
        for g, p in pairs.T.tolist():
            assert (g == 0) == (p == 0)
            if g:
                assert gcat[g] == pcat[p]
        assert set(gcat) != set(pcat)  # fresh ids


def _matched_fraction(strength: float) -> tuple[float, float]:
    """(share of GT segments kept with IoU > 0.5 and the same class, share of pixels whose class changed)."""
    cfg = SynthConfig(width=160, height=120, seed=11)
    kept = total = changed = pixels = 0
    for index in range(10):
        _, g, gs = generate_sample(cfg, index)
        p, ps = corrupt(g, gs, CATS, np.random.default_rng(100 + index), CorruptionConfig(strength=strength))
        gcat = np.zeros(g.shape, np.int64)
        pcat = np.zeros(g.shape, np.int64)
        for s in gs:
            gcat[g == s["id"]] = s["category_id"]
        for s in ps:
            pcat[p == s["id"]] = s["category_id"]
        changed += int((gcat != pcat).sum())
        pixels += g.size
        for s in gs:
            if s["iscrowd"]:
                continue
            total += 1
            m = g == s["id"]
            for t in ps:
                if t["category_id"] != s["category_id"]:
                    continue
                q = p == t["id"]
                if (m & q).sum() / (m | q).sum() > 0.5:
                    kept += 1
                    break
    return kept / total, changed / pixels


def test_more_strength_more_damage():
    kept = {}
    changed = {}
    for s in (0.0, 0.2, 0.5, 1.0):
        kept[s], changed[s] = _matched_fraction(s)
    assert kept[0.0] == 1.0 and changed[0.0] == 0.0
    assert kept[0.2] > kept[0.5] > kept[1.0]
    assert changed[0.2] < changed[0.5] < changed[1.0]
    # the default is a good but imperfect base model
    assert 0.55 < kept[0.5] < 0.92


# ---------------------------------------------------------------------------------------------------------------
# each failure mode on the hand-made scene


def run(mode, seed=0, strength=0.5):
    ids, segs = scene()
    out, osegs = corrupt(ids, segs, CATS, np.random.default_rng(seed), only(mode, strength))
    check_valid(out, osegs)
    return ids, out, osegs


def test_nothing_enabled_keeps_partition():
    ids, out, osegs = run(None)
    assert len(osegs) == 6
    for gid in (500, 600, 11, 12, 13, 14):
        m = ids == gid
        assert len(np.unique(out[m])) == 1 and len(seg_with_mask(out, osegs, m)) == 1


def test_merge_joins_touching_same_class_instances():
    ids, out, osegs = run("merge")
    a, b, disc = ids == 11, ids == 12, ids == 13
    assert len(np.unique(out[a | b])) == 1  # one segment over both squares
    merged = int(out[a][0])
    assert np.array_equal(out == merged, a | b)
    assert {s["category_id"] for s in osegs if s["id"] == merged} == {2}
    # the disc touches nothing of its class and stays alone
    assert len(np.unique(out[disc])) == 1 and np.array_equal(out == out[disc][0], disc)
    assert len(osegs) == 5


def test_merge_needs_same_class():
    ids, segs = scene()
    segs = [dict(s) for s in segs]
    segs[3]["category_id"] = 3  # the second square becomes a star: different class, no merge
    out, osegs = corrupt(ids, segs, CATS, 0, only("merge"))
    assert out[ids == 11][0] != out[ids == 12][0]
    assert len(osegs) == 6


def test_drop_removes_instances_into_surrounding_stuff():
    ids, out, osegs = run("drop")
    for gid in (11, 12, 13):
        m = ids == gid
        cats = {c for c, _ in seg_with_mask(out, osegs, m)}
        assert cats <= {102, 103}  # only stuff (or void) where the things were
    assert not [s for s in osegs if CAT[s["category_id"]]["isthing"]]  # the kept crowd is a thing, dropped too
    grass = next(s["id"] for s in osegs if s["category_id"] == 102)
    # a thing inside the grass goes to the grass or to void
    assert set(np.unique(out[ids == 13]).tolist()) <= {0, grass}


def test_split_makes_two_pieces_of_one_instance():
    ids, out, osegs = run("split", seed=1)
    for gid in (11, 12, 13):
        m = ids == gid
        pieces = np.unique(out[m]).tolist()
        assert len(pieces) == 2
        for pid in pieces:
            assert np.all(m[out == pid])  # each piece stays inside the instance
            assert {s["category_id"] for s in osegs if s["id"] == pid} == {int(CAT_OF[gid])}


def test_wrong_class_keeps_kind():
    ids, out, osegs = run("wrong_class")
    pcat = {s["id"]: s["category_id"] for s in osegs}
    for gid in (11, 12, 13, 14):
        pid = int(out[ids == gid][0])
        assert pcat[pid] != CAT_OF[gid] and CAT[pcat[pid]]["isthing"]
    stuff_cats = {pcat[int(v)] for v in np.unique(out[(ids == 500) | (ids == 600)])}
    assert all(not CAT[c]["isthing"] for c in stuff_cats)
    assert 102 not in stuff_cats and 103 not in stuff_cats
    # one segment per stuff class: if both became the same class they are one segment
    assert len({pcat[s["id"]] for s in osegs if not CAT[s["category_id"]]["isthing"]}) == \
        len([s for s in osegs if not CAT[s["category_id"]]["isthing"]])


def test_false_positive_adds_a_thing_on_background():
    hits = 0
    for seed in range(10):
        ids, out, osegs = run("false_positive", seed=seed)
        gt_things = np.isin(ids, [11, 12, 13, 14])
        for gid in (11, 12, 13, 14):
            assert len(np.unique(out[ids == gid])) == 1
        extra = len(osegs) - 6
        assert extra >= 0
        if extra:
            hits += 1
            new = [s for s in osegs if int(s["id"]) not in np.unique(out[gt_things]).tolist()
                   and CAT[s["category_id"]]["isthing"]]
            assert len(new) == extra
            for s in new:
                assert not (out == s["id"])[gt_things].any()
    assert hits >= 7


def test_coarse_boundary_reshapes_but_keeps_instances():
    changed = 0
    for seed in range(5):
        ids, out, osegs = run("coarse_boundary", seed=seed, strength=1.0)
        for gid in (11, 12, 13):
            m = ids == gid
            pid = np.bincount(out[m]).argmax()
            q = out == pid
            iou = (m & q).sum() / (m | q).sum()
            assert iou > 0.5
            changed += int((m != q).sum())
        # stuff is only touched where a thing mask moved
        assert len([s for s in osegs if CAT[s["category_id"]]["isthing"]]) == 4
    assert changed > 100


def test_stuff_boundary_moves_stuff_and_fills_void():
    ids, segs = scene()
    ids = ids.copy()
    ids[39:41, :] = 0  # a void seam between grass and water
    out, osegs = corrupt(ids, segs, CATS, 3, only("stuff_boundary", strength=1.0))
    check_valid(out, osegs)
    assert (out != 0).all()
    for gid in (11, 12, 13, 14):  # things untouched
        m = ids == gid
        assert len(np.unique(out[m])) == 1 and np.array_equal(out == out[m][0], m)
    pcat = {s["id"]: s["category_id"] for s in osegs}
    grass_now = np.vectorize(pcat.get)(out) == 102
    assert (grass_now != (ids == 500)).sum() > 20  # the border moved


def test_crowd_becomes_normal_or_is_dropped():
    ids, out, osegs = run(None)
    crowd = ids == 14
    assert seg_with_mask(out, osegs, crowd) == [(1, int(crowd.sum()))]
    ids, out, osegs = run("crowd_drop")
    # the crowd lies in the water: its pixels go to the water (or void) and no triangle is left
    assert {c for c, _ in seg_with_mask(out, osegs, crowd)} <= {103}
    assert 1 not in {s["category_id"] for s in osegs}


def test_config_defaults_scale_with_strength():
    cfg = CorruptionConfig()
    assert cfg.p("drop") == pytest.approx(cfg.drop)
    assert CorruptionConfig(strength=1.0).p("drop") == pytest.approx(2 * cfg.drop)
    assert CorruptionConfig(strength=0.0).p("coarse_boundary") == 0.0
    assert CorruptionConfig(strength=1.0, merge=0.8).p("merge") == 1.0
    assert dataclasses.asdict(cfg)["strength"] == 0.5
