"""Datasets, transforms and collation: targets stay consistent with the panoptic map under every transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from prn_cli.data import (IGNORE, EvalTransform, ImageFolder, PanopticTrainingSet, TrainTransform, build_targets,
                          collate, masks_to_boxes, normalize)
from prn_cli.errors import InvalidInputError
from prn_cli.models.categories import CategoryMap
from prn_cli.panoptic import load_set, read_id_png
from prn_cli.synth import SynthConfig, write_dataset


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, SynthConfig(n=3, width=96, height=64, seed=3))
    return root


def _mask_box(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _check_consistent(target: dict, category_map: CategoryMap) -> None:
    """Masks, boxes, labels and semantic agree with the panoptic map they came from."""
    ids = target["panoptic"]
    segs = {s["id"]: s for s in target["segments_info"]}
    assert len(target["masks"]) == len(target["boxes"]) == len(target["labels"]) == len(target["instance_ids"])
    for mask, box, label, sid in zip(target["masks"], target["boxes"], target["labels"], target["instance_ids"]):
        assert mask.any()
        assert torch.equal(mask, ids == sid)
        assert box.tolist() == _mask_box(mask)
        assert category_map.thing_ids[int(label)] == segs[int(sid)]["category_id"]
        assert not segs[int(sid)]["iscrowd"]
    sem = target["semantic"]
    assert torch.all(sem[ids == 0] == IGNORE)
    for sid, seg in segs.items():
        assert torch.all(sem[ids == sid] == category_map.class_index(seg["category_id"]))
        assert torch.equal(target["crowd"][ids == sid], torch.full_like(sem[ids == sid], bool(seg["iscrowd"]),
                                                                          dtype=torch.bool))


# --------------------------------------------------------------------------------------------------------------
# PanopticTrainingSet


def test_training_set_matches_ground_truth_png(synth_root):
    ds = PanopticTrainingSet(synth_root)   # images_dir derived: <root>/images/train
    pset = load_set(synth_root)
    cm = CategoryMap.from_categories(pset.categories)
    assert len(ds) == 3
    for i, ann in enumerate(pset.annotations):
        image, target = ds[i]
        assert image.shape == (3, 64, 96) and image.dtype == torch.float32
        assert target["image_id"] == ann["image_id"] and target["orig_size"] == (64, 96)
        ids = torch.from_numpy(read_id_png(pset.png_path(ann)).astype(np.int64))
        assert torch.equal(target["panoptic"], ids)
        things = [s for s in ann["segments_info"]
                  if s["category_id"] in cm.thing_ids and not s["iscrowd"]]
        assert target["instance_ids"].tolist() == [s["id"] for s in things]
        assert target["labels"].tolist() == [cm.thing_index(s["category_id"]) for s in things]
        for s, mask, box in zip(things, target["masks"], target["boxes"]):
            assert torch.equal(mask, ids == s["id"])
            x, y, w, h = s["bbox"]
            assert box.tolist() == [x, y, x + w, y + h]   # COCO's bbox, as xyxy
        _check_consistent(target, cm)
        assert target["masks"].dtype == torch.bool and target["semantic"].dtype == torch.long
        assert target["boxes"].dtype == torch.float32 and target["panoptic"].dtype == torch.int64


def test_training_set_transform_keeps_targets_consistent(synth_root):
    ds = PanopticTrainingSet(synth_root, transform=TrainTransform(crop_size=(80, 80), scale_range=(0.6, 1.4)))
    cm = ds.category_map
    for seed in range(8):
        image, target = ds.sample(seed % 3, seed)
        assert image.shape == (3, 80, 80)
        assert target["semantic"].shape == target["panoptic"].shape == (80, 80)
        _check_consistent(target, cm)


def test_training_set_missing_image_is_named(synth_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(synth_root, root)
    victim = root / "images" / "train" / "000000000002.jpg"
    victim.unlink()
    ds = PanopticTrainingSet(root)
    with pytest.raises(InvalidInputError, match="000000000002.jpg"):
        ds[1]


def test_training_set_needs_images_dir_outside_synth_layout(synth_root, tmp_path):
    pset = load_set(synth_root)
    pset.json_path = tmp_path / "elsewhere.json"   # no <root>/images/<split> to derive
    with pytest.raises(InvalidInputError, match="images"):
        PanopticTrainingSet(pset)
    ds = PanopticTrainingSet(pset, images_dir=synth_root / "images" / "train")
    assert ds[0][0].shape == (3, 64, 96)


# --------------------------------------------------------------------------------------------------------------
# transforms


def _toy_scene(h: int = 40, w: int = 60):
    ids = torch.zeros((h, w), dtype=torch.int64)
    ids[: h // 2] = 101
    ids[h // 2:] = 102
    ids[5:15, 4:20] = 7        # thing 1
    ids[25:38, 40:58] = 8      # thing 2
    ids[22:26, 2:6] = 9        # crowd thing
    ids[0:2, :] = 0            # void strip
    segs = [{"id": 101, "category_id": 101}, {"id": 102, "category_id": 102},
            {"id": 7, "category_id": 1}, {"id": 8, "category_id": 2}, {"id": 9, "category_id": 1, "iscrowd": 1}]
    cats = [{"id": 1, "isthing": 1, "name": "a"}, {"id": 2, "isthing": 1, "name": "b"},
            {"id": 101, "isthing": 0, "name": "c"}, {"id": 102, "isthing": 0, "name": "d"}]
    rgb = (torch.arange(h * w * 3) % 251).reshape(h, w, 3).to(torch.uint8).numpy()
    return normalize(rgb), ids, segs, CategoryMap.from_categories(cats)


@pytest.mark.parametrize("seed", range(12))
def test_train_transform_keeps_masks_boxes_semantic_consistent(seed):
    image, ids, segs, cm = _toy_scene()
    tf = TrainTransform(crop_size=(48, 48), scale_range=(0.5, 1.5))
    out_img, out_ids = tf(image, ids, torch.Generator().manual_seed(seed))
    assert out_img.shape == (3, 48, 48) and out_ids.shape == (48, 48)
    target = build_targets(out_ids, segs, cm)
    _check_consistent(target, cm)
    # thing 9 is crowd: never an instance, but its pixels keep their class in the semantic map
    assert 9 not in target["instance_ids"].tolist()


def test_train_transform_pads_with_ignore():
    image, ids, segs, cm = _toy_scene(40, 60)
    tf = TrainTransform(crop_size=(64, 96), scale_range=(1.0, 1.0), flip_prob=0.0)
    out_img, out_ids = tf(image, ids, torch.Generator().manual_seed(0))
    target = build_targets(out_ids, segs, cm)
    assert torch.all(target["semantic"][40:, :] == IGNORE) and torch.all(target["semantic"][:, 60:] == IGNORE)
    assert not target["masks"][:, 40:, :].any() and not target["masks"][:, :, 60:].any()
    assert torch.all(out_img[:, 40:, :] == 0) and torch.all(out_img[:, :, 60:] == 0)
    # unpadded part untouched at scale 1, no flip
    assert torch.equal(out_ids[:40, :60], ids) and torch.equal(out_img[:, :40, :60], image)


def test_train_transform_flip_mirrors_boxes():
    image, ids, segs, cm = _toy_scene(40, 60)
    tf = TrainTransform(crop_size=None, scale_range=(1.0, 1.0), flip_prob=1.0)
    out_img, out_ids = tf(image, ids, torch.Generator().manual_seed(0))
    assert torch.equal(out_ids, ids.flip(-1)) and torch.equal(out_img, image.flip(-1))
    before = build_targets(ids, segs, cm)["boxes"]
    after = build_targets(out_ids, segs, cm)["boxes"]
    assert torch.equal(after[:, [0, 2]], 60 - before[:, [2, 0]])


def test_instances_cropped_away_are_removed():
    image, ids, segs, cm = _toy_scene(40, 60)
    tf = TrainTransform(crop_size=(16, 24), scale_range=(1.0, 1.0), flip_prob=0.0)
    seen = set()
    for seed in range(30):
        _, out_ids = tf(image, ids, torch.Generator().manual_seed(seed))
        target = build_targets(out_ids, segs, cm)
        present = set(out_ids.unique().tolist())
        assert set(target["instance_ids"].tolist()) == present & {7, 8}
        seen.add(len(target["instance_ids"]))
    assert 0 in seen   # some crops hold no instance at all


def test_train_transform_is_deterministic_per_seed():
    image, ids, _, _ = _toy_scene()
    tf = TrainTransform(crop_size=(32, 32))
    a = tf(image, ids, torch.Generator().manual_seed(5))
    b = tf(image, ids, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    outs = {tuple(tf(image, ids, torch.Generator().manual_seed(s))[1].flatten()[:200].tolist()) for s in range(6)}
    assert len(outs) > 1   # different seeds give different crops


def test_training_set_sample_is_deterministic(synth_root):
    ds = PanopticTrainingSet(synth_root, transform=TrainTransform(crop_size=(48, 48)))
    a, b = ds.sample(1, 1234), ds.sample(1, 1234)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["panoptic"], b[1]["panoptic"])


def test_eval_transform_bounds_sides():
    image = torch.zeros(3, 100, 200)
    ids = torch.zeros(100, 200, dtype=torch.int64)
    img, out_ids = EvalTransform(min_size=50, max_size=80)(image, ids)
    assert img.shape == (3, 40, 80) and out_ids.shape == (40, 80)
    img, none = EvalTransform(max_size=400)(image)
    assert img.shape == (3, 100, 200) and none is None
    assert EvalTransform(min_size=200).output_size(100, 200) == (200, 400)


def test_masks_to_boxes_pixel_edges():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 3, 5] = True
    masks[1, 2:7, 0:12] = True
    assert masks_to_boxes(masks).tolist() == [[5, 3, 6, 4], [0, 2, 12, 7]]
    assert masks_to_boxes(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0, 4)


def test_unknown_segment_id_is_an_error():
    _, ids, segs, cm = _toy_scene()
    with pytest.raises(InvalidInputError, match="not in segments_info"):
        build_targets(ids, segs[:-1], cm, where="x.png")


# --------------------------------------------------------------------------------------------------------------
# collate and ImageFolder


def test_collate_pads_to_multiple():
    a = torch.ones(3, 50, 70)
    b = torch.ones(3, 130, 20) * 2
    images, targets, sizes = collate([(a, {"k": 1}), (b, {"k": 2})], size_divisibility=128)
    assert images.shape == (2, 3, 256, 128)
    assert sizes == [(50, 70), (130, 20)] and [t["k"] for t in targets] == [1, 2]
    assert torch.all(images[0, :, :50, :70] == 1) and images[0, :, 50:].abs().sum() == 0
    assert images[0, :, :, 70:].abs().sum() == 0 and torch.all(images[1, :, :130, :20] == 2)
    assert collate([(torch.ones(3, 128, 128), {})])[0].shape == (1, 3, 128, 128)


def test_image_folder_lists_sorted_and_reports_bad_files(tmp_path):
    for name in ("b.png", "a.jpg", "c.webp"):
        Image.new("RGB", (20, 10), (10, 20, 30)).save(tmp_path / name)
    Image.new("L", (8, 6)).save(tmp_path / "gray.bmp")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpeg").write_bytes(b"\xff\xd8\xff garbage")
    folder = ImageFolder(tmp_path, transform=EvalTransform(max_size=10))
    assert [f.name for f in folder.files] == ["a.jpg", "b.png", "broken.jpeg", "c.webp", "gray.bmp"]
    image, info = folder[0]
    assert image.shape == (3, 5, 10) and info["orig_size"] == (10, 20) and info["size"] == (5, 10)
    assert folder[4][0].shape == (3, 6, 8)   # grayscale loads as RGB
    with pytest.raises(InvalidInputError, match="broken.jpeg"):
        folder[2]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no images"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(InvalidInputError, match="no such image"):
        ImageFolder([tmp_path / "missing.jpg"])
