"""The synthetic dataset: valid COCO panoptic, deterministic, and hard enough to be worth learning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prn_cli import synth
from prn_cli.errors import OutputExistsError
from prn_cli.panoptic import load_set, read_id_png, validate_set
from prn_cli.synth import SynthConfig, generate_sample, synth_categories, write_dataset

# Seed 1 with 24 images holds several crowd regions (asserted below, so a change of generator shows up).
SEED, N = 1, 24


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    calls = []
    summary = write_dataset(root, SynthConfig(n=N, seed=SEED), progress=lambda d, t: calls.append((d, t)))
    return root, summary, calls


def _all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _cats():
    return {c["id"]: c for c in synth_categories()}


def test_layout_summary_and_progress(dataset):
    root, summary, calls = dataset
    assert (root / "annotations" / "panoptic_train.json").is_file()
    jpgs = sorted((root / "images" / "train").glob("*.jpg"))
    pngs = sorted((root / "annotations" / "panoptic_train").glob("*.png"))
    assert [p.name for p in jpgs] == [f"{i:012d}.jpg" for i in range(1, N + 1)]
    assert [p.stem for p in pngs] == [p.stem for p in jpgs]
    assert calls == [(i, N) for i in range(1, N + 1)]

    data = json.loads((root / "annotations" / "panoptic_train.json").read_text())
    assert data["info"]["config"]["seed"] == SEED and data["info"]["config"]["n"] == N
    assert data["images"][0] == {"id": 1, "file_name": "000000000001.jpg", "width": 320, "height": 240}
    segs = [s for a in data["annotations"] for s in a["segments_info"]]
    cats = _cats()
    assert summary["images"] == N
    assert summary["segments"] == len(segs)
    assert summary["things"] == sum(cats[s["category_id"]]["isthing"] for s in segs)
    assert summary["stuff"] == len(segs) - summary["things"]
    assert summary["crowd"] == sum(s["iscrowd"] for s in segs)
    with Image.open(jpgs[0]) as im:
        assert im.format == "JPEG" and im.size == (320, 240) and im.mode == "RGB"


def test_written_set_is_valid(dataset):
    root, _, _ = dataset
    pset = load_set(root)  # the dataset root names its single set
    assert len(pset.annotations) == N
    assert validate_set(pset) == []
    for ann in pset.annotations:
        ids = pset.read_ids(ann)
        listed = [s["id"] for s in ann["segments_info"]]
        assert sorted(listed) == sorted(set(np.unique(ids).tolist()) - {0})
        # COCO-like ids: random 24-bit values, not 1..N
        assert max(listed) > 10_000
        assert all(s["area"] >= 1 for s in ann["segments_info"])
        # stuff covers the rest: void is only thin borders
        assert (ids == 0).mean() < 0.05


def test_categories():
    cats = synth_categories()
    things = [c for c in cats if c["isthing"]]
    stuff = [c for c in cats if not c["isthing"]]
    assert len(stuff) >= 3 and len(things) >= 4
    assert len({c["supercategory"] for c in things}) >= 2
    ids = [c["id"] for c in cats]
    assert len(set(ids)) == len(ids)
    # not one contiguous range starting at 1
    assert ids != list(range(1, len(ids) + 1)) and min(c["id"] for c in stuff) > 100
    colors = [tuple(c["color"]) for c in cats]
    assert len(set(colors)) == len(colors) and all(len(c) == 3 for c in colors)
    assert len({c["name"] for c in cats}) == len(cats)


def test_segment_content(dataset):
    root, _, _ = dataset
    pset = load_set(root)
    cats = _cats()
    thing_areas, crowd_images, void_images = [], 0, 0
    for ann in pset.annotations:
        segs = ann["segments_info"]
        for s in segs:
            if cats[s["category_id"]]["isthing"]:
                assert s["area"] >= SynthConfig().min_area  # occluded leftovers are removed
                if not s["iscrowd"]:
                    thing_areas.append(s["area"])
            else:
                assert s["iscrowd"] == 0
        crowd = [s for s in segs if s["iscrowd"]]
        assert len(crowd) <= 1
        if crowd:
            crowd_images += 1
            assert cats[crowd[0]["category_id"]]["isthing"]
        stuff_cats = [s["category_id"] for s in segs if not cats[s["category_id"]]["isthing"]]
        assert len(stuff_cats) == len(set(stuff_cats)) >= 1  # one segment per stuff class
        void_images += bool((pset.read_ids(ann) == 0).any())
    assert crowd_images >= 3
    assert void_images >= 2
    assert len(thing_areas) >= 5 * N // 2
    # from specks to a sizeable fraction of the image
    assert min(thing_areas) < 120
    assert max(thing_areas) > 0.04 * 320 * 240
    assert np.median(thing_areas) > 150


def test_thing_class_is_not_its_colour(dataset):
    root, _, _ = dataset
    pset = load_set(root)
    cats = _cats()
    means: dict[int, list[np.ndarray]] = {}
    for ann in pset.annotations:
        ids = pset.read_ids(ann)
        rgb = np.asarray(Image.open(root / "images" / "train" / ann["file_name"].replace(".png", ".jpg")))
        for s in ann["segments_info"]:
            if cats[s["category_id"]]["isthing"] and not s["iscrowd"] and s["area"] >= 60:
                means.setdefault(s["category_id"], []).append(rgb[ids == s["id"]].mean(axis=0))
    assert len(means) >= 5
    for cat, m in means.items():
        if len(m) >= 5:
            spread = np.asarray(m).std(axis=0).mean()
            assert spread > 25, (cats[cat]["name"], spread)
    # and the class averages are close to each other compared with the spread inside a class
    class_means = np.asarray([np.mean(m, axis=0) for m in means.values() if len(m) >= 5])
    assert class_means.std(axis=0).mean() < 35


def test_touching_instances_of_one_class_exist(dataset):
    root, _, _ = dataset
    pset = load_set(root)
    cats = _cats()
    touching = 0
    for ann in pset.annotations:
        ids = pset.read_ids(ann).astype(np.int64)
        cat_of = {s["id"]: s["category_id"] for s in ann["segments_info"]}
        a = np.concatenate([ids[:, :-1].ravel(), ids[:-1, :].ravel()])
        b = np.concatenate([ids[:, 1:].ravel(), ids[1:, :].ravel()])
        sel = (a != b) & (a > 0) & (b > 0)
        for x, y in {(int(x), int(y)) for x, y in zip(a[sel], b[sel])}:
            if cat_of[x] == cat_of[y] and cats[cat_of[x]]["isthing"] and x < y:
                touching += 1
    assert touching >= 3


def test_deterministic_byte_identical(tmp_path):
    cfg = SynthConfig(n=4, seed=5, width=160, height=120)
    write_dataset(tmp_path / "a", cfg)
    write_dataset(tmp_path / "b", cfg)
    a, b = _all_files(tmp_path / "a"), _all_files(tmp_path / "b")
    assert sorted(a) == sorted(b) and len(a) == 2 * 4 + 1
    assert a == b
    write_dataset(tmp_path / "c", SynthConfig(n=4, seed=6, width=160, height=120))
    c = _all_files(tmp_path / "c")
    assert all(a[k] != c[k] for k in a if k.endswith((".png", ".jpg")))


def test_sample_depends_only_on_seed_and_index(tmp_path):
    cfg = SynthConfig(n=5, seed=9, width=160, height=120)
    write_dataset(tmp_path, cfg)
    rgb, ids, segs = generate_sample(SynthConfig(n=100, seed=9, width=160, height=120), 3)
    assert np.array_equal(read_id_png(tmp_path / "annotations" / "panoptic_train" / "000000000004.png"), ids)
    data = json.loads((tmp_path / "annotations" / "panoptic_train.json").read_text())
    assert [s["id"] for s in data["annotations"][3]["segments_info"]] == [s["id"] for s in segs]
    again = generate_sample(cfg, 3)
    assert np.array_equal(again[0], rgb) and again[2] == segs
    assert not np.array_equal(generate_sample(cfg, 4)[1], ids)


def test_generate_sample_contract():
    cfg = SynthConfig(width=200, height=150, seed=2)
    rgb, ids, segs = generate_sample(cfg, 0)
    assert rgb.shape == (150, 200, 3) and rgb.dtype == np.uint8
    assert ids.shape == (150, 200) and ids.dtype == np.uint32
    assert sorted(s["id"] for s in segs) == sorted(set(np.unique(ids).tolist()) - {0})
    assert all(set(s) == {"id", "category_id", "iscrowd"} for s in segs)
    assert rgb.std() > 20  # textured, not a blank canvas


def test_class_colour_ties_things_to_their_class_colour():
    """With ``class_colour=1`` every non-camouflaged thing is painted near its category colour; at 0 (the
    default) nothing changes, so older data sets are reproduced byte for byte."""
    cats = _cats()
    cfg = SynthConfig(width=160, height=120, seed=3, difficulty=0.0, class_colour=1.0)
    near, total = 0, 0
    for index in range(6):
        rgb, ids, segs = generate_sample(cfg, index)
        for s in segs:
            cat = cats[s["category_id"]]
            if cat["isthing"] and not s["iscrowd"] and (ids == s["id"]).sum() >= 60:
                mean = rgb[ids == s["id"]].astype(float).mean(axis=0)
                # the closest category colour to the segment's mean colour is its own class's
                dist = {c: np.linalg.norm(mean - np.asarray(k["color"])) for c, k in cats.items() if k["isthing"]}
                near += min(dist, key=dist.get) == cat["id"]
                total += 1
    assert total >= 15 and near / total > 0.6, (near, total)
    default = generate_sample(SynthConfig(width=160, height=120, seed=3), 0)
    explicit = generate_sample(SynthConfig(width=160, height=120, seed=3, class_colour=0.0), 0)
    assert np.array_equal(default[0], explicit[0]) and np.array_equal(default[1], explicit[1])


def test_difficulty_changes_the_pictures():
    easy = generate_sample(SynthConfig(difficulty=0.0, seed=4), 0)[0].astype(float)
    hard = generate_sample(SynthConfig(difficulty=1.0, seed=4), 0)[0].astype(float)
    # pixel noise grows with difficulty: compare the high-frequency energy
    def hf(img):
        return np.abs(np.diff(img, axis=1)).mean()
    assert hf(hard) > hf(easy)


def test_refuses_to_overwrite_and_writes_nothing(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "panoptic_train.json").write_text("{}")
    with pytest.raises(OutputExistsError):
        write_dataset(tmp_path, SynthConfig(n=2, width=64, height=48))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["annotations", "panoptic_train.json"]
    summary = write_dataset(tmp_path, SynthConfig(n=2, width=64, height=48), overwrite=True)
    assert summary["images"] == 2
    assert validate_set(load_set(tmp_path)) == []


def test_overwrite_real_set(tmp_path):
    cfg = SynthConfig(n=2, width=64, height=48)
    write_dataset(tmp_path, cfg)
    with pytest.raises(OutputExistsError):
        write_dataset(tmp_path, cfg)
    write_dataset(tmp_path, SynthConfig(n=2, width=64, height=48, seed=3), overwrite=True)
    data = json.loads((tmp_path / "annotations" / "panoptic_train.json").read_text())
    assert data["info"]["config"]["seed"] == 3


def test_failure_midway_leaves_no_json(tmp_path, monkeypatch):
    real = synth.generate_sample

    def flaky(config, index):
        if index == 2:
            raise RuntimeError("boom")
        return real(config, index)

    monkeypatch.setattr(synth, "generate_sample", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        write_dataset(tmp_path, SynthConfig(n=5, width=64, height=48, split="val"))
    assert not (tmp_path / "annotations" / "panoptic_val.json").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    assert len(list((tmp_path / "images" / "val").glob("*.jpg"))) == 2


@pytest.mark.parametrize("kwargs", [
    {"n": 0}, {"width": 8}, {"height": 10_000}, {"seed": -1}, {"split": "../x"}, {"split": ""},
    {"difficulty": 1.5}, {"crowd_prob": -0.1}, {"min_things": 5, "max_things": 2}, {"min_thing_size": 2},
    {"n": 2.5}, {"jpeg_quality": 0}, {"min_thing_size": 200},
])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        SynthConfig(**kwargs)


def test_ground_truth_scores_pq_100_against_itself(dataset):
    from prn_cli.evaluate import evaluate

    _, summary, _ = dataset
    gt = load_set(summary["json"])
    assert any(s["iscrowd"] for a in gt.annotations for s in a["segments_info"])  # crowds are part of the test
    result = evaluate(gt, [gt], workers=0).results[0]
    for group in ("All", "Things", "Stuff"):
        assert result.groups[group]["pq"] == 1.0 and result.groups[group]["n"] > 0
