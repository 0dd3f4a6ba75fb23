"""Things the base left void (models/prn/void_things.py and the predictor's search for them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prn_cli.models.prn.config import PRNConfig
from prn_cli.models.prn.model import build_model
from prn_cli.models.prn.postprocess import PostProcessConfig
from prn_cli.models.prn.render import RenderConfig
from prn_cli.models.prn.void_things import connected_regions, void_thing_regions
from prn_cli.predictors import Refiner

CATS = [
    {"id": 1, "name": "square", "isthing": 1, "supercategory": "shape"},
    {"id": 2, "name": "disc", "isthing": 1, "supercategory": "shape"},
    {"id": 7, "name": "ground", "isthing": 0, "supercategory": "ground"},
]


def test_connected_regions_are_4_connected_and_numbered_in_raster_order():
    mask = np.array([[1, 1, 0, 0, 1],
                     [0, 1, 0, 1, 1],
                     [0, 0, 1, 0, 0],   # touches the first region only at a corner: a region of its own
                     [1, 0, 1, 0, 1]], bool)
    labels, count = connected_regions(mask)
    assert count == 5
    assert labels.tolist() == [[1, 1, 0, 0, 2],
                               [0, 1, 0, 2, 2],
                               [0, 0, 3, 0, 0],
                               [4, 0, 3, 0, 5]]
    assert connected_regions(np.zeros((3, 4), bool))[1] == 0
    with pytest.raises(ValueError, match="H, W"):
        connected_regions(np.ones(5, bool))


def test_connected_regions_match_scipy_on_noise_and_on_a_long_snake():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    snake = np.zeros((60, 61), bool)
    snake[::2] = True
    snake[1::4, -1] = True
    snake[3::4, 0] = True
    for mask in (rng.random((97, 131)) < 0.55, rng.random((40, 50)) < 0.3, snake):
        labels, count = connected_regions(mask)
        expected, expected_count = ndimage.label(mask)
        assert count == expected_count
        assert np.array_equal(labels, expected)
    assert connected_regions(snake)[1] == 1


def test_void_thing_regions_are_void_read_as_things_and_large_enough():
    refined_void = np.zeros((8, 8), bool)
    refined_void[:, :5] = True
    thing = np.ones((8, 8), bool)
    thing[2, :] = False
    thing[5, :] = False
    labels, kept = void_thing_regions(refined_void, thing, min_area=6)
    # rows 0-1, 3-4 and 6-7 of the first five columns: three regions of 10 pixels; rows 2 and 5 are stuff to PRN
    assert labels.max() == 3 and np.bincount(labels.ravel()).tolist() == [34, 10, 10, 10]
    assert kept == [1, 2, 3]
    thing[4, :] = False
    labels, kept = void_thing_regions(refined_void, thing, min_area=6)
    assert np.bincount(labels.ravel()).tolist() == [39, 10, 5, 10] and kept == [1, 3]
    assert void_thing_regions(refined_void, thing, min_area=11)[1] == []
    with pytest.raises(ValueError, match="one shape"):
        void_thing_regions(refined_void, thing[:4], min_area=1)


#: (rows, columns) where PRN reads a thing that it leaves void: on base void (256 pixels), on base void too small
#: to count (36 pixels), and on base stuff (256 pixels)
PATCHES = ((slice(30, 46), slice(30, 46)), (slice(54, 60), slice(4, 10)), (slice(4, 20), slice(40, 56)))


def test_the_predictor_gives_a_void_region_prn_reads_as_a_thing_to_the_classifiers_class():
    torch.manual_seed(0)
    cfg = PRNConfig.tiny()
    cfg.classifier_channels, cfg.classifier_crop_size = (4, 4, 4), 16
    model = build_model(cfg, CATS).eval()
    with torch.no_grad():   # the classifier says "disc" (thing index 1) with probability sigmoid(6) ~ 0.9975
        model.classifier.read_out.weight.zero_()
        model.classifier.read_out.bias.copy_(torch.tensor([0.0, 6.0]))
    ids = np.full((64, 64), 100, np.int64)
    ids[8:24, 8:24] = 1
    ids[30:46, 30:46] = 0     # 256 void pixels: a thing the base missed
    ids[54:60, 4:10] = 0      # 36 void pixels: too small
    # and at rows 4-19, columns 40-55, a thing the base gave to the ground around it
    segments = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 100, "category_id": 7, "iscrowd": 0}]
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)

    def read_as_things(module, args, outputs):
        # PRN's semantic head says "disc" on the three patches, and its foreground branch "background" there, so
        # no centre groups them and the refined map leaves them void
        outputs = dict(outputs)
        for rows, cols in PATCHES:
            outputs["semantic"] = outputs["semantic"].clone()
            outputs["semantic"][:, 1, rows, cols] = 100.0
            outputs["foreground"] = outputs["foreground"].clone()
            outputs["foreground"][:, :, rows, cols] = -100.0
        return outputs

    model.register_forward_hook(read_as_things)

    def refine(confidence, min_area=50):
        post = PostProcessConfig(stuff_area=0, restore_base_segments="all", void_thing_confidence=confidence,
                                 void_thing_min_area=min_area)
        return Refiner.from_model(model, CATS, RenderConfig(), post)(rgb, ids, segments)

    plain = refine(0.0)
    for rows, cols in PATCHES:
        assert (plain.ids[rows, cols] == 0).all()
    found = refine(0.99)
    new = sorted((s for s in found.segments if s["id"] not in {t["id"] for t in plain.segments}),
                 key=lambda s: int(np.argmax(found.ids.ravel() == s["id"])))
    assert [s["category_id"] for s in new] == [2, 2]
    assert [s["score"] for s in new] == pytest.approx([0.9975, 0.9975], abs=1e-4)
    assert np.array_equal(found.ids == new[0]["id"], np.pad(np.ones((16, 16), bool), ((4, 44), (40, 8))))
    assert np.array_equal(found.ids == new[1]["id"], np.pad(np.ones((16, 16), bool), ((30, 18), (30, 18))))
    outside = ~np.isin(found.ids, [s["id"] for s in new])
    assert np.array_equal(found.ids[outside], plain.ids[outside])   # nothing else moves
    assert {s["id"]: s["category_id"] for s in found.segments if s not in new} == \
        {s["id"]: s["category_id"] for s in plain.segments}
    small_too = refine(0.99, min_area=30)
    assert (small_too.ids[54:60, 4:10] > 0).all()
    unsure = refine(0.998)
    assert np.array_equal(unsure.ids, plain.ids) and unsure.segments == plain.segments
    with pytest.raises(ValueError, match="void_thing_confidence"):
        PostProcessConfig(void_thing_confidence=1.0)
    with pytest.raises(ValueError, match="void_thing_min_area"):
        PostProcessConfig(void_thing_min_area=0)
