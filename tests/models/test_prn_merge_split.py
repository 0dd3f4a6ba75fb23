"""Cutting a thing that holds two objects in two (models/prn/merge_split.py): the cuts proposed, the choice of one
by the classifier's probabilities of its parts, and the predictor's step
(PostProcessConfig.classifier_split_confidence)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prn_cli.models.prn.config import PRNConfig
from prn_cli.models.prn.merge_split import best_two_part_split, parts_touch, two_part_proposals
from prn_cli.models.prn.model import build_model
from prn_cli.models.prn.postprocess import PostProcessConfig
from prn_cli.models.prn.render import RenderConfig
from prn_cli.predictors import Refiner

CATS = [
    {"id": 1, "name": "square", "isthing": 1, "supercategory": "shape"},
    {"id": 2, "name": "disc", "isthing": 1, "supercategory": "shape"},
    {"id": 7, "name": "ground", "isthing": 0, "supercategory": "ground"},
]


def two_discs(r1: float, r2: float, gap: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ys, xs, which): the pixels of two discs of radii r1 and r2 side by side on one row, touching (``gap`` 0)
    or overlapping, and which disc each pixel belongs to (True: the second)."""
    yy, xx = np.mgrid[0:60, 0:90]
    c1, c2 = (30, 10 + r1), (30, 10 + 2 * r1 + r2 - gap)
    first = (yy - c1[0]) ** 2 + (xx - c1[1]) ** 2 <= r1 ** 2
    second = ((yy - c2[0]) ** 2 + (xx - c2[1]) ** 2 <= r2 ** 2) & ~first
    ys, xs = np.nonzero(first | second)
    return ys, xs, second[ys, xs]


def model_with_classifier():
    """A tiny PRN with a small thing classifier that has a "no thing" class (its reads are replaced in the tests)."""
    torch.manual_seed(0)
    cfg = PRNConfig.tiny()
    cfg.classifier_channels, cfg.classifier_crop_size, cfg.classifier_background = (4, 4, 4), 16, True
    return build_model(cfg, CATS).eval()


def merge_and_square(third: int, where: tuple[slice, slice]):
    """``(ids, segments, rgb)`` of a 64x64 scene on grey ground (segment 100): thing 1, a bright square at columns
    8-23 and a dark one at 24-39, touching (a merge); thing 2, one bright square; and thing ``third`` at ``where``
    (its colour is the caller's). All things are squares (category 1)."""
    ids = np.full((64, 64), 100, np.int64)
    ids[8:24, 8:40] = 1
    ids[40:56, 8:24] = 2
    ids[where] = third
    segments = [{"id": sid, "category_id": 1, "iscrowd": 0} for sid in (1, 2, third)]
    segments.append({"id": 100, "category_id": 7, "iscrowd": 0})
    rgb = np.full((64, 64, 3), 128, np.uint8)
    rgb[8:24, 8:24] = 255
    rgb[8:24, 24:40] = 0
    rgb[40:56, 8:24] = 255
    return ids, segments, rgb


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_the_position_cut_separates_two_touching_discs_well_enough_to_match_both():
    ys, xs, which = two_discs(10, 10)
    cuts = two_part_proposals(ys, xs)
    assert len(cuts) == 1                            # k-means on positions; no colours, no second cut
    assert max((cuts[0] == which).mean(), (cuts[0] != which).mean()) > 0.99     # equal discs: all but a pixel
    ys, xs, which = two_discs(14, 8)
    by_position = two_part_proposals(ys, xs)[0]
    by_position = by_position if (by_position == which).mean() > 0.5 else ~by_position     # either side may be True
    # unequal: the cut lies midway between the centres, inside the larger disc, but both parts match (IoU > 0.5)
    assert 0.5 < iou(by_position, which) < 0.9 and 0.8 < iou(~by_position, ~which) < 1.0


def test_the_colour_cut_follows_colours_where_positions_alone_cannot():
    # one square of two colours, left third dark: k-means on positions halves it, colours find the third
    yy, xx = np.mgrid[0:30, 0:30]
    ys, xs = yy.ravel(), xx.ravel()
    colours = np.where((xs < 10)[:, None], 0.0, 1.0) * np.ones((1, 3))
    cuts = two_part_proposals(ys, xs, colours)
    assert len(cuts) == 2
    by_colour = cuts[1]
    assert np.array_equal(by_colour, xs >= 10) or np.array_equal(by_colour, xs < 10)
    assert abs(cuts[0].mean() - 0.5) < 0.05


def test_a_cut_with_a_part_under_the_minimum_is_not_made():
    ys, xs, _ = two_discs(10, 10)
    assert all(c is not None for c in two_part_proposals(ys, xs, min_part=16))
    assert all(c is None for c in two_part_proposals(ys, xs, min_part=ys.size // 2 + 1))
    assert two_part_proposals(np.array([0]), np.array([0]), np.zeros((1, 3))) == [None, None]


def test_a_cut_between_pieces_that_lie_apart_is_not_made():
    # one thing in two pieces three columns apart (an object seen around another): k-means finds the pieces
    pieces = np.zeros((10, 23), bool)
    pieces[:, :10] = pieces[:, 13:] = True
    ys, xs = np.nonzero(pieces)
    assert two_part_proposals(ys, xs) == [None]
    assert not parts_touch(ys, xs, xs >= 13) and parts_touch(ys, xs, xs >= 5)
    assert parts_touch(np.array([0, 0]), np.array([0, 1]), np.array([False, True]))
    assert not parts_touch(np.array([0, 1]), np.array([0, 1]), np.array([False, True]))      # diagonal: apart


def test_the_kept_cut_is_the_one_whose_less_certain_part_is_surest_and_surer_than_the_whole():
    whole = np.array([0.5, 0.2, 0.3])                         # two thing classes and "no thing"
    parts = np.array([[[0.9, 0.05, 0.05], [0.6, 0.1, 0.3]],   # less certain part 0.6
                      [[0.8, 0.1, 0.1], [0.1, 0.85, 0.05]],   # 0.8: the best, though its parts disagree
                      [[0.99, 0.0, 0.01], [0.0, 0.0, 1.0]]])  # "no thing" counts for nothing: 0.0
    assert best_two_part_split(whole, parts, 2, 0.7) == 1
    assert best_two_part_split(whole, parts, 2, 0.8) is None           # strictly above the confidence
    assert best_two_part_split(np.array([0.85, 0.1, 0.05]), parts, 2, 0.5) is None   # the whole is surer
    parts[1] = np.nan                                                   # a cut not made is never kept
    assert best_two_part_split(whole, parts, 2, 0.5) == 0
    assert best_two_part_split(whole, np.zeros((0, 2, 3)), 2, 0.5) is None


def test_the_predictor_cuts_a_thing_of_two_colours_where_each_part_is_surer_than_the_whole():
    model = model_with_classifier()
    # the merge, the single square, and thing 3: a bright and a dark square as one thing at the image's right edge
    ids, segments, rgb = merge_and_square(3, (slice(40, 56), slice(40, 64)))
    rgb[40:56, 40:52] = 255
    rgb[40:56, 52:64] = 0

    read_as = {"mixed": [0.5, 0.2, 0.3], "one colour": [0.9, 0.05, 0.05]}

    def probabilities(crops):
        # one colour under the mask: a square (0.9); both: unsure (0.5, "no thing" 0.3)
        inside = crops[:, 3] > 0
        red = torch.where(inside, crops[:, 0], torch.nan)
        mixed = (red.nan_to_num(-1e9).amax((1, 2)) > 0) & (red.nan_to_num(1e9).amin((1, 2)) < 0)
        return torch.where(mixed[:, None], torch.tensor(read_as["mixed"]), torch.tensor(read_as["one colour"]))

    model.classifier.probabilities = probabilities

    def refine(**post):
        refiner = Refiner.from_model(model, CATS, RenderConfig(),
                                     PostProcessConfig(stuff_area=0, restore_base_segments="all", **post))
        return refiner(rgb, ids, segments)

    plain = refine()
    cut = refine(classifier_split_confidence=0.8)
    left, right, single = int(cut.ids[16, 16]), int(cut.ids[16, 32]), int(cut.ids[48, 16])
    assert int(plain.ids[16, 16]) == int(plain.ids[16, 32])
    assert left != right and (cut.ids[8:24, 8:24] == left).all() and (cut.ids[8:24, 24:40] == right).all()
    cats = {s["id"]: s["category_id"] for s in cut.segments}
    assert cats[left] == cats[right] == 1 and len(cut.segments) == len(plain.segments) + 1
    assert left == int(plain.ids[16, 16]) and single == int(plain.ids[48, 16])   # the first part keeps its id
    assert int(cut.ids[48, 45]) == int(cut.ids[48, 60]) == int(plain.ids[48, 60])  # at the edge: never cut
    assert np.array_equal(cut.ids[plain.ids != left], plain.ids[plain.ids != left])  # nothing else moves
    assert np.array_equal(refine(classifier_split_confidence=0.95).ids, plain.ids)
    # a whole read surely (above merge_split.MAX_WHOLE_CERTAINTY) is not cut, however sure its parts would be
    read_as.update({"mixed": [0.96, 0.02, 0.02], "one colour": [0.99, 0.005, 0.005]})
    assert np.array_equal(refine(classifier_split_confidence=0.8).ids, plain.ids)
    read_as["mixed"] = [0.94, 0.03, 0.03]
    assert np.array_equal(refine(classifier_split_confidence=0.8).ids, cut.ids)
    with pytest.raises(ValueError, match="classifier_split_confidence"):
        PostProcessConfig(classifier_split_confidence=1.0)


def test_the_cut_reads_again_only_the_things_whose_masks_changed_since_the_relabelling_read_them():
    model = model_with_classifier()
    # the merge, the single square, and thing 4: a green strip along thing 1's bottom that the classifier reads as
    # "no thing", so that it is removed and joins thing 1
    ids, segments, rgb = merge_and_square(4, (slice(24, 27), slice(8, 40)))
    rgb[24:27, 8:40] = (128, 255, 128)
    calls: list[int] = []

    def probabilities(crops):
        calls.append(len(crops))
        inside = crops[:, 3] > 0
        red = torch.where(inside, crops[:, 0], torch.nan)
        mixed = (red.nan_to_num(-1e9).amax((1, 2)) > 0) & (red.nan_to_num(1e9).amin((1, 2)) < 0)
        out = torch.where(mixed[:, None], torch.tensor([0.5, 0.2, 0.3]), torch.tensor([0.9, 0.05, 0.05]))
        # mostly green under the mask: "no thing"
        green = ((crops[:, 1] - crops[:, 0] > 1) & inside).sum((1, 2)) > 0.5 * inside.sum((1, 2))
        return torch.where(green[:, None], torch.tensor([0.05, 0.05, 0.9]), out)

    model.classifier.probabilities = probabilities

    def refine(**post):
        calls.clear()
        refiner = Refiner.from_model(model, CATS, RenderConfig(),
                                     PostProcessConfig(stuff_area=0, restore_base_segments="all", **post))
        return refiner(rgb, ids, segments), list(calls)

    relabel = dict(classifier_confidence=0.99, classifier_remove_confidence=0.8)
    joined, joined_calls = refine(**relabel, classifier_join_share=0.2, classifier_split_confidence=0.8)
    kept, kept_calls = refine(**relabel, classifier_split_confidence=0.8)
    # crops per read: the relabelling reads the three things; with the strip joined to thing 1 the cut reads thing 1
    # again (its mask changed) but not thing 2; with the strip removed and left void it reads neither; then both
    # parts of two cuts of things 1 and 2
    assert joined_calls == [3, 1, 4, 4] and kept_calls == [3, 4, 4]
    assert (joined.ids[24:27, 8:40] == joined.ids[8, 8]).all() and (kept.ids[24:27, 8:40] == 0).all()
    # without the relabelling the cut reads every thing away from the edge itself, the strip too
    alone, alone_calls = refine(classifier_split_confidence=0.8)
    assert alone_calls == [3, 6, 6]
    for refined in (kept, alone):     # the merge is cut in both
        assert int(refined.ids[16, 16]) != int(refined.ids[16, 32])
