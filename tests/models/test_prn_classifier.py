"""PRN's thing classifier (models/prn/classifier.py): its crops, its rotation-averaged probabilities, training it
alone, its training crops, and the predictor's relabelling of the things it is sure of."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prn_cli.models.categories import CategoryMap
from prn_cli.models.prn.classifier import ThingClassifier, thing_boxes, thing_crops
from prn_cli.models.prn.config import PRNConfig
from prn_cli.models.prn.model import build_model
from prn_cli.models.prn.postprocess import PostProcessConfig
from prn_cli.models.prn.render import RenderConfig
from prn_cli.predictors import Refiner
from prn_cli.refine_data import thing_classifier_crops

CATS = [
    {"id": 1, "name": "square", "isthing": 1, "supercategory": "shape"},
    {"id": 2, "name": "disc", "isthing": 1, "supercategory": "shape"},
    {"id": 7, "name": "ground", "isthing": 0, "supercategory": "ground"},
]


def config(**kw) -> PRNConfig:
    cfg = PRNConfig.tiny()
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_a_crop_box_is_the_things_box_made_square_scaled_and_padded():
    ids = torch.zeros(64, 64, dtype=torch.int64)
    ids[20:36, 10:20] = 5                       # 16 rows x 10 columns, centre (28, 15)
    box, = thing_boxes(ids, [5]).tolist()
    side = 16 * 1.2 + 4
    assert box == pytest.approx([15 - side / 2, 28 - side / 2, 15 + side / 2, 28 + side / 2])
    ids[40:44, 50:58] = 2                       # 4 x 8, centre (42, 54); asked for before segment 5
    boxes = thing_boxes(ids, [2, 5]).tolist()
    side2 = 8 * 1.2 + 4
    assert boxes[0] == pytest.approx([54 - side2 / 2, 42 - side2 / 2, 54 + side2 / 2, 42 + side2 / 2])
    assert boxes[1] == pytest.approx(box)
    same, areas = thing_boxes(ids, [2, 5], with_areas=True)
    assert same.tolist() == boxes and areas.tolist() == [32, 160]
    with pytest.raises(ValueError, match="segment 9"):
        thing_boxes(ids, [5, 9])


def test_a_crop_shows_the_thing_centred_with_its_mask_and_the_image_there():
    ids = torch.zeros(64, 64, dtype=torch.int64)
    ids[20:36, 10:26] = 5
    ids[40:50, 40:50] = 6
    image = torch.zeros(3, 64, 64)
    image[0] = (ids == 5).float() * 2 - 1      # channel 0 draws thing 5 exactly as its mask channel does
    image[1] = 0.25
    crop, = thing_crops(image, ids, [5], crop_size=16)
    assert crop.shape == (4, 16, 16)
    assert torch.allclose(crop[0], crop[3], atol=1e-5)
    assert torch.allclose(crop[1], torch.full((16, 16), 0.25))
    assert crop[3, 7:9, 7:9].eq(1).all() and crop[3, 0, 0] == -1 and crop[3, -1, -1] == -1
    inside = ((crop[3] + 1) / 2).mean().item()       # the share of the crop the thing covers
    assert inside == pytest.approx((16 / (16 * 1.2 + 4)) ** 2, abs=0.03)
    # an image at twice the map's size (a predictor's processing size against the photo's) gives the same crop
    big = image.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    again, = thing_crops(big, ids, [5], crop_size=16)
    assert torch.allclose(again[3], crop[3]) and (again[0] - crop[0]).abs().mean() < 0.05
    assert thing_crops(image, ids, [], crop_size=16).shape == (0, 4, 16, 16)


def test_the_probabilities_do_not_change_when_a_crop_turns_a_quarter():
    torch.manual_seed(0)
    classifier = ThingClassifier(3, channels=(4, 8, 8), crop_size=16).eval()
    crops = torch.randn(5, 4, 16, 16)
    p = classifier.probabilities(crops)
    assert torch.allclose(p.sum(1), torch.ones(5))
    assert torch.allclose(classifier.probabilities(torch.rot90(crops, 1, (2, 3))), p, atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(torch.softmax(classifier(torch.rot90(crops, 1, (2, 3))), 1),
                                  torch.softmax(classifier(crops), 1), atol=1e-4)


def shape_crops(rng: np.random.Generator, n: int):
    """``n`` crops of squares (label 0) and discs (label 1) of random sizes, places and colours."""
    yy, xx = np.mgrid[:48, :48]
    crops, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        r = rng.uniform(6, 14)
        cy, cx = rng.uniform(16, 32, size=2)
        mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r) if label == 0 else (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        ids = torch.from_numpy(mask.astype(np.int64))
        image = torch.from_numpy(rng.normal(0, 0.3, (3, 48, 48)).astype(np.float32))
        image[:, torch.from_numpy(mask)] += torch.from_numpy(rng.uniform(-1, 1, (3, 1)).astype(np.float32))
        crops.append(thing_crops(image, ids, [1], crop_size=16)[0])
        labels.append(label)
    return torch.stack(crops), torch.tensor(labels)


def test_training_the_classifier_alone_learns_shapes_and_moves_nothing_else():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(config(classifier_channels=(8, 8, 16), classifier_crop_size=16, trainable="classifier"),
                        CATS)
    model.train()
    assert model.classifier.training and not model.backbone.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for _ in range(40):
        crops, labels = shape_crops(rng, 16)
        labels[-2:] = -1                                      # padding crops count for nothing
        losses = model({}, {"thing_crops": crops[None], "thing_crop_labels": labels[None]})
        assert set(losses) == {"loss_classifier"}
        opt.zero_grad()
        losses["loss_classifier"].backward()
        opt.step()
    model.eval()
    crops, labels = shape_crops(np.random.default_rng(1), 64)
    accuracy = (model.classifier.probabilities(crops).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.9
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(k.startswith("classifier.") for k in changed)
    with pytest.raises(ValueError, match="classifier_channels"):
        build_model(config(trainable="classifier"), CATS)
    with pytest.raises(ValueError, match="classifier_channels"):
        PRNConfig(classifier_channels=(8, 0))


def test_training_crops_are_the_gt_things_and_the_base_things_that_match_one_with_the_gt_class():
    gt = torch.zeros(64, 64, dtype=torch.int64)
    gt[4:20, 4:20] = 11        # a square
    gt[30:50, 30:50] = 12      # a disc (drawn square: only the label matters here)
    gt[52:60, 2:10] = 13       # a crowd region: not a thing to classify
    gt_segments = [{"id": 11, "category_id": 1}, {"id": 12, "category_id": 2},
                   {"id": 13, "category_id": 1, "iscrowd": 1}, {"id": 0, "category_id": 7}]
    base = torch.zeros(64, 64, dtype=torch.int64)
    base[30:49, 30:50] = 21    # the disc, called a square by the base
    base[4:8, 40:60] = 22      # a thing the GT does not have
    base_segments = [{"id": 21, "category_id": 1}, {"id": 22, "category_id": 2}]
    image = torch.zeros(3, 64, 64)
    crops, labels = thing_classifier_crops(image, gt, gt_segments, base, base_segments,
                                           CategoryMap.from_categories(CATS), 6, 16, np.random.default_rng(0))
    assert crops.shape == (6, 4, 16, 16)
    assert sorted(labels.tolist()) == [-1, -1, -1, 0, 1, 1]   # square, disc, and the base's disc with its GT class
    assert crops[labels < 0].eq(0).all() and (crops[labels >= 0, 3] > 0).any(dim=(1, 2)).all()
    few, few_labels = thing_classifier_crops(image, gt, gt_segments, base, base_segments,
                                             CategoryMap.from_categories(CATS), 2, 16, np.random.default_rng(0))
    assert few.shape[0] == 2 and (few_labels >= 0).all()


def test_the_predictor_relabels_the_things_the_classifier_is_sure_of_and_nothing_else():
    torch.manual_seed(0)
    model = build_model(config(classifier_channels=(4, 4, 4), classifier_crop_size=16), CATS).eval()
    with torch.no_grad():   # the classifier says "disc" (thing index 1) with probability sigmoid(6) ~ 0.9975
        model.classifier.read_out.weight.zero_()
        model.classifier.read_out.bias.copy_(torch.tensor([0.0, 6.0]))
    ids = np.full((64, 64), 100, np.int64)
    ids[8:24, 8:24] = 1
    ids[36:56, 30:50] = 2
    segments = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 2, "iscrowd": 0},
                {"id": 100, "category_id": 7, "iscrowd": 0}]
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)

    def refine(confidence):
        post = PostProcessConfig(stuff_area=0, restore_base_segments="all", classifier_confidence=confidence)
        refiner = Refiner.from_model(model, CATS, RenderConfig(), post)
        return refiner(rgb, ids, segments)

    plain = refine(0.0)
    sure = refine(0.99)
    assert np.array_equal(sure.ids, plain.ids)
    cats = {s["id"]: s["category_id"] for s in sure.segments}
    plain_cats = {s["id"]: s["category_id"] for s in plain.segments}
    square = int(plain.ids[16, 16])
    disc = int(plain.ids[45, 40])
    assert plain_cats[square] == 1 and plain_cats[disc] == 2
    assert cats[square] == 2 and cats[disc] == 2                      # the square is relabelled
    assert {k: v for k, v in cats.items() if k not in (square,)} == \
        {k: v for k, v in plain_cats.items() if k not in (square,)}   # stuff and the disc are as they were
    unsure = {s["id"]: s["category_id"] for s in refine(0.998).segments}
    assert unsure == plain_cats
    with pytest.raises(ValueError, match="classifier_confidence"):
        PostProcessConfig(classifier_confidence=1.0)


def test_small_things_need_the_surer_of_the_two_confidences():
    torch.manual_seed(0)
    model = build_model(config(classifier_channels=(4, 4, 4), classifier_crop_size=16), CATS).eval()
    with torch.no_grad():   # "disc" with probability sigmoid(6) ~ 0.9975 for every crop
        model.classifier.read_out.weight.zero_()
        model.classifier.read_out.bias.copy_(torch.tensor([0.0, 6.0]))
    ids = np.full((64, 64), 100, np.int64)
    ids[4:24, 4:24] = 1        # a square of 400 pixels
    ids[40:50, 40:50] = 2      # a square of 100 pixels
    segments = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 1, "iscrowd": 0},
                {"id": 100, "category_id": 7, "iscrowd": 0}]
    rgb = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)

    def classes(**post):
        refiner = Refiner.from_model(model, CATS, RenderConfig(),
                                     PostProcessConfig(stuff_area=0, restore_base_segments="all", **post))
        out = refiner(rgb, ids, segments)
        cats = {s["id"]: s["category_id"] for s in out.segments}
        return cats[int(out.ids[10, 10])], cats[int(out.ids[45, 45])]

    assert classes(classifier_confidence=0.9) == (2, 2)
    assert classes(classifier_confidence=0.9, classifier_small_area=200, classifier_small_confidence=0.998) == (2, 1)
    assert classes(classifier_confidence=0.9, classifier_small_area=50, classifier_small_confidence=0.998) == (2, 2)
    # the larger threshold counts: a small thing never needs less than every thing does
    assert classes(classifier_confidence=0.998, classifier_small_area=200, classifier_small_confidence=0.5) == (1, 1)
    with pytest.raises(ValueError, match="classifier_small_area"):
        PostProcessConfig(classifier_small_area=-1)
    with pytest.raises(ValueError, match="classifier_small_confidence"):
        PostProcessConfig(classifier_small_confidence=1.0)


def test_a_classifier_with_a_no_thing_class_has_one_output_more_and_its_probabilities_sum_to_one():
    torch.manual_seed(0)
    plain = ThingClassifier(3, channels=(4, 8, 8), crop_size=16)
    with_background = ThingClassifier(3, channels=(4, 8, 8), crop_size=16, background=True).eval()
    assert (plain.background, with_background.background, with_background.num_classes) == (False, True, 3)
    assert plain.read_out.out_features == 3 and with_background.read_out.out_features == 4
    p = with_background.probabilities(torch.randn(5, 4, 16, 16))
    assert p.shape == (5, 4) and torch.allclose(p.sum(1), torch.ones(5))
    model = build_model(config(classifier_channels=(4, 4, 4), classifier_background=True), CATS)
    assert model.classifier.read_out.out_features == 3     # two thing classes and "no thing"


def no_thing_scene():
    """A 96x96 GT: a square and a disc on ground (stuff, id 100) and a crowd region; a base with the disc (wrong
    class), a false detection on the ground, and a bad mask half on the square."""
    gt = torch.full((96, 96), 100, dtype=torch.int64)
    gt[4:20, 4:20] = 11
    gt[30:50, 30:50] = 12
    gt[80:90, 4:14] = 13
    gt[0, :] = 0                 # a void line, as the GT's boundaries have
    gt_segments = [{"id": 11, "category_id": 1}, {"id": 12, "category_id": 2},
                   {"id": 13, "category_id": 1, "iscrowd": 1}, {"id": 100, "category_id": 7}]
    base = torch.full((96, 96), 200, dtype=torch.int64)
    base[30:49, 30:50] = 21      # the disc, called a square
    base[60:70, 60:72] = 22      # a thing on the ground: a false detection
    base[81:89, 5:13] = 23       # a thing on the crowd region: not a false one
    base[4:20, 12:30] = 24       # half on the square, half on the ground: a bad mask, not "no thing"
    base_segments = [{"id": 21, "category_id": 1}, {"id": 22, "category_id": 2}, {"id": 23, "category_id": 1},
                     {"id": 24, "category_id": 1}, {"id": 200, "category_id": 7}]
    return gt, gt_segments, base, base_segments


def test_no_thing_crops_are_false_detections_and_gt_shapes_moved_onto_stuff_at_most_a_quarter_of_them():
    gt, gt_segments, base, base_segments = no_thing_scene()
    image = torch.randn(3, 96, 96)
    cmap = CategoryMap.from_categories(CATS)
    crops, labels = thing_classifier_crops(image, gt, gt_segments, base, base_segments, cmap, 16, 16,
                                           np.random.default_rng(0), background=True)
    assert sorted(labels.tolist()) == [-1] * 10 + [0, 1, 1, 2, 2, 2]
    negatives = crops[labels == 2]
    false_detection = thing_crops(image, base, [22], 16)[0]
    assert sum(torch.equal(c, false_detection) for c in negatives) == 1
    for bad in (23, 24):
        assert not any(torch.equal(c, thing_crops(image, base, [bad], 16)[0]) for c in negatives)
    # the others are GT things' masks (a 16x16 square or a 20x20 disc) moved where the GT has only ground
    moved = [c for c in negatives if not torch.equal(c, false_detection)]
    assert len(moved) == 2
    shapes = {(16, 16): thing_crops(image, gt, [11], 16)[0, 3], (20, 20): thing_crops(image, gt, [12], 16)[0, 3]}
    assert all(any(torch.allclose(c[3], mask, atol=1e-4) for mask in shapes.values()) for c in moved)
    assert all(not any(torch.equal(c[:3], thing_crops(image, gt, [s], 16)[0, :3]) for s in (11, 12)) for c in moved)
    # at most a quarter: 4 crops hold one "no thing"; without background none, as before
    few, few_labels = thing_classifier_crops(image, gt, gt_segments, base, base_segments, cmap, 4, 16,
                                             np.random.default_rng(1), background=True)
    assert (few_labels == 2).sum() == 1 and (few_labels >= 0).all()
    _, plain_labels = thing_classifier_crops(image, gt, gt_segments, base, base_segments, cmap, 16, 16,
                                             np.random.default_rng(0))
    assert sorted(plain_labels.tolist()) == [-1] * 13 + [0, 1, 1]


def test_unmatched_no_thing_crops_are_every_base_thing_pq_counts_false_but_not_those_on_crowds():
    gt, gt_segments, base, base_segments = no_thing_scene()
    base[4:20, 4:11] = 25        # a split's smaller half of the square (IoU 0.44): a false positive too
    base_segments = base_segments + [{"id": 25, "category_id": 1}]
    image = torch.randn(3, 96, 96)
    cmap = CategoryMap.from_categories(CATS)
    crops, labels = thing_classifier_crops(image, gt, gt_segments, base, base_segments, cmap, 16, 16,
                                           np.random.default_rng(0), background=True, background_examples="unmatched")
    negatives = crops[labels == 2]
    shown = {sid for sid in (21, 22, 23, 24, 25)
             if any(torch.equal(c, thing_crops(image, base, [sid], 16)[0]) for c in negatives)}
    # the false detection, the bad mask and the split half; not the disc (it matches) nor the thing on the crowd
    assert shown == {22, 24, 25}
    assert len(negatives) == 4 and sorted(labels[labels >= 0].tolist()) == [0, 1, 1, 2, 2, 2, 2]
    off_things = thing_classifier_crops(image, gt, gt_segments, base, base_segments, cmap, 16, 16,
                                        np.random.default_rng(0), background=True)[1]
    assert (off_things == 2).sum() == 3      # the false detection and two moved shapes, as before
    with pytest.raises(ValueError, match="classifier_background_examples"):
        PRNConfig(classifier_background_examples="all")


def bright_and_dark_scene(dark: tuple[slice, slice], base_post: dict | None = None):
    """A base with a bright square thing 1 at [8:24, 8:24] and a dark thing 2 at ``dark``, both category 1, on
    ground; a classifier patched to call a bright crop a disc (0.9) and a dark one "no thing" (0.95, its thing
    classes preferring disc); and ``refine(**post) -> (prediction, {segment id: category})``."""
    torch.manual_seed(0)
    model = build_model(config(classifier_channels=(4, 4, 4), classifier_crop_size=16, classifier_background=True),
                        CATS).eval()
    ids = np.full((64, 64), 100, np.int64)
    ids[8:24, 8:24] = 1
    ids[dark] = 2
    segments = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 1, "iscrowd": 0},
                {"id": 100, "category_id": 7, "iscrowd": 0}]
    rgb = np.full((64, 64, 3), 128, np.uint8)
    rgb[8:24, 8:24] = 255
    rgb[dark] = 0

    def probabilities(crops):
        inside = crops[:, 3] > 0
        bright = (crops[:, 0] * inside).sum((1, 2)) / inside.sum((1, 2)) > 0
        return torch.where(bright[:, None], torch.tensor([0.05, 0.9, 0.05]), torch.tensor([0.02, 0.03, 0.95]))

    model.classifier.probabilities = probabilities

    def refine(**post):
        refiner = Refiner.from_model(model, CATS, RenderConfig(),
                                     PostProcessConfig(stuff_area=0, restore_base_segments="all",
                                                       **{**(base_post or {}), **post}))
        out = refiner(rgb, ids, segments)
        return out, {s["id"]: s["category_id"] for s in out.segments}

    return refine


def test_the_predictor_removes_the_things_the_classifier_calls_no_thing_and_relabels_with_thing_classes_only():
    # bright: a disc, by the classifier; dark: "no thing", and of its thing classes the classifier prefers disc
    refine = bright_and_dark_scene((slice(36, 56), slice(30, 50)))

    plain, plain_cats = refine()
    bright, dark = int(plain.ids[16, 16]), int(plain.ids[45, 40])
    kept, kept_cats = refine(classifier_confidence=0.7)
    assert kept_cats[bright] == 2 and kept_cats[dark] == 1     # "no thing" is never a class to relabel to
    assert np.array_equal(kept.ids, plain.ids)
    removed, removed_cats = refine(classifier_confidence=0.7, classifier_remove_confidence=0.9)
    assert dark not in removed_cats and (removed.ids[36:56, 30:50] == 0).all()
    assert removed_cats[bright] == 2
    assert np.array_equal(removed.ids[plain.ids != dark], plain.ids[plain.ids != dark])   # nothing else moves
    alone, alone_cats = refine(classifier_remove_confidence=0.9)    # removal without relabelling
    assert dark not in alone_cats and alone_cats[bright] == 1
    unsure, _ = refine(classifier_remove_confidence=0.96)
    assert np.array_equal(unsure.ids, plain.ids)
    with pytest.raises(ValueError, match="classifier_remove_confidence"):
        PostProcessConfig(classifier_remove_confidence=1.0)


def test_a_removed_piece_along_a_thing_of_its_final_class_joins_it_with_a_join_share():
    # dark: a piece cut off the bright thing's right side, 16 of its 44 boundary pairs along it
    refine = bright_and_dark_scene((slice(8, 24), slice(24, 30)), {"classifier_remove_confidence": 0.9})
    void, void_cats = refine()
    bright = int(void.ids[16, 16])
    assert (void.ids[8:24, 24:30] == 0).all() and len(void_cats) == 2
    joined, joined_cats = refine(classifier_join_share=0.3)
    assert (joined.ids[8:24, 8:30] == bright).all() and joined_cats == void_cats
    assert np.array_equal(joined.ids[:, 30:], void.ids[:, 30:]) and np.array_equal(joined.ids[:, :8], void.ids[:, :8])
    assert (refine(classifier_join_share=0.4)[0].ids[8:24, 24:30] == 0).all()     # 16/44 = 0.36 is not enough
    # the bright thing relabelled to disc (category 2) is no longer of the piece's category: the piece turns void
    relabelled, relabelled_cats = refine(classifier_join_share=0.3, classifier_confidence=0.7)
    assert relabelled_cats[bright] == 2 and (relabelled.ids[8:24, 24:30] == 0).all()


def test_removal_needs_a_classifier_with_a_no_thing_class():
    from prn_cli.errors import InvalidInputError
    from prn_cli.options import PostProcessOverrides
    from prn_cli.predictors import refiner_postprocess

    ask = PostProcessOverrides(classifier_remove_confidence=0.9)
    with pytest.raises(InvalidInputError, match=r"x\.pt: .*'no thing' class; leave out --classifier-remove-conf"):
        refiner_postprocess({}, config(classifier_channels=(4, 4, 4)), ask, "x.pt")
    post = refiner_postprocess({}, config(classifier_channels=(4, 4, 4), classifier_background=True), ask, "x.pt")
    assert post.classifier_remove_confidence == 0.9
