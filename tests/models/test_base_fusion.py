"""Do-no-harm fusion with the base (models/prn/base_fusion.py): exact masks on hand-made maps."""

from __future__ import annotations

import numpy as np
import torch

from prn_cli.models.prn.base_fusion import (confidence_map, keep_base_thing_classes, restore_base_segments,
                                            separate_joined_base_things, snap_to_base)

THINGS = {1, 2}          # category ids that are things; 9 is stuff


def _maps():
    base = np.zeros((8, 8), np.uint32)
    base[:, :] = 50                  # stuff
    base[1:3, 1:3] = 10              # small thing, which PRN drops
    base[4:8, 4:8] = 11              # thing PRN keeps
    base_segs = [{"id": 50, "category_id": 9}, {"id": 10, "category_id": 1, "score": 0.7},
                 {"id": 11, "category_id": 2}]
    ref = np.full((8, 8), 7, np.uint32)   # stuff
    ref[4:8, 4:8] = 8
    segs = [{"id": 7, "category_id": 9}, {"id": 8, "category_id": 2}]
    return base, base_segs, ref, segs


def test_a_dropped_base_thing_comes_back_on_stuff_pixels_only():
    base, base_segs, ref, segs = _maps()
    out, out_segs = restore_base_segments(ref, segs, base, base_segs, THINGS)
    assert (out[1:3, 1:3] == 10).all() and int((out == 10).sum()) == 4
    assert (out[4:8, 4:8] == 8).all()                       # the kept thing is untouched
    assert {"id": 10, "category_id": 1, "iscrowd": 0, "score": 0.7} in out_segs
    assert len(out_segs) == 3


def test_a_base_thing_prn_covers_with_its_own_thing_is_not_restored():
    base, base_segs, ref, segs = _maps()
    ref[1:3, 1:4] = 9                                     # PRN's own (bigger) thing where the base had 10
    segs.append({"id": 9, "category_id": 1})
    out, out_segs = restore_base_segments(ref, segs, base, base_segs, THINGS)
    assert np.array_equal(out, ref) and out_segs == segs


def test_a_restored_id_that_is_taken_gets_the_smallest_free_id():
    base, base_segs, ref, segs = _maps()
    ref[0, 0] = 10                                        # id 10 is a refined stuff segment's
    segs.append({"id": 10, "category_id": 9})
    out, out_segs = restore_base_segments(ref, segs, base, base_segs, THINGS)
    new = [s for s in out_segs if s["category_id"] == 1]
    assert [s["id"] for s in new] == [1] and int((out == 1).sum()) == 4


def test_a_dropped_stuff_region_comes_back_on_void_pixels_only():
    base, base_segs, ref, segs = _maps()
    base[0, 4:8] = 60                                     # a small stuff region PRN's stuff-area limit removed
    base_segs.append({"id": 60, "category_id": 9})
    ref[0, 4:6] = 0                                       # ... two of its pixels left void, two given to stuff 7
    out, out_segs = restore_base_segments(ref, segs, base, base_segs, THINGS)
    assert (out[0, 4:6] == 60).all() and (out[0, 6:8] == 7).all()
    assert {"id": 60, "category_id": 9, "iscrowd": 0, "score": 1.0} in out_segs
    things_only, _ = restore_base_segments(ref, segs, base, base_segs, THINGS, stuff=False)
    assert (things_only[0, 4:6] == 0).all() and (things_only[1:3, 1:3] == 10).all()


def test_snap_moves_only_unsure_thing_pixels_to_the_base_shape():
    base, _, ref, _ = _maps()
    ref[4:8, 4:8] = 7
    ref[5:8, 5:8] = 8                                     # PRN's thing lost a row and a column (blurred boundary)
    unsure = np.zeros((8, 8), bool)
    unsure[4, 4:8] = True                                 # PRN is unsure along the top row only
    unsure[0, 0] = True                                   # a stuff pixel: stays stuff
    out = snap_to_base(ref, base, unsure, {8})
    expected = ref.copy()
    expected[4, 4:8] = 8
    assert np.array_equal(out, expected)


def test_snap_leaves_stuff_boundaries_alone():
    base = np.zeros((4, 4), np.uint32)
    base[:, :2], base[:, 2:] = 1, 2
    ref = np.zeros((4, 4), np.uint32)
    ref[:, :3], ref[:, 3:] = 5, 6                         # PRN moved the stuff boundary by one column
    out = snap_to_base(ref, base, np.ones((4, 4), bool), thing_segment_ids=set())
    assert np.array_equal(out, ref)


def test_confidence_map_is_the_lower_of_class_and_foreground_confidence():
    sem = torch.zeros(3, 1, 2)
    sem[0, 0, 0] = 10.0                                   # pixel 0: sure of the class; pixel 1: uniform (1/3)
    fg = torch.tensor([[[0.0, 10.0]]])                    # pixel 0: p 0.5; pixel 1: sure
    conf = confidence_map({"semantic": sem, "foreground": fg}, "foreground")
    assert torch.allclose(conf, torch.tensor([[0.5, 1 / 3]]), atol=1e-4)
    only_sem = confidence_map({"semantic": sem, "foreground": fg}, "semantic")
    assert float(only_sem[0, 0]) > 0.99


def test_an_orphan_drawn_over_a_dropped_base_thing_gives_way_and_its_rest_is_dissolved():
    base, base_segs, ref, segs = _maps()
    ref[1, 1:3] = 12                                      # PRN's own poor version of base thing 10 (IoU 2/5)
    ref[0, 3] = 12
    segs.append({"id": 12, "category_id": 1})
    out, out_segs = restore_base_segments(ref, segs, base, base_segs, THINGS)
    assert (out[1:3, 1:3] == 10).all()
    assert int((out == 12).sum()) == 0 and out[0, 3] == 0                      # its rest: void
    assert {s["id"] for s in out_segs} == {7, 8, 10}
    kept, _ = restore_base_segments(ref, segs, base, base_segs, THINGS, replace_orphans=False)
    assert int((kept == 12).sum()) == 3 and (kept[2, 1:3] == 10).all()


def test_a_base_thing_swallowed_by_a_neighbour_of_another_class_is_reclaimed_only_when_asked():
    base, base_segs, ref, segs = _maps()
    base[4:6, 2:4] = 12                                   # a small base thing of class 1 beside thing 11 (class 2)
    base_segs.append({"id": 12, "category_id": 1})
    ref[4:8, 2:8] = 8                                     # PRN's thing 8 (class 2, matches 11) swallowed it
    out, out_segs = restore_base_segments(ref, segs, base, base_segs, THINGS)
    assert not (out == 12).any()                          # default: pixels of a matched refined thing stay
    out, out_segs = restore_base_segments(ref, segs, base, base_segs, THINGS, reclaim_other_classes=True)
    assert (out[4:6, 2:4] == 12).all() and int((out == 12).sum()) == 4
    assert (out[4:8, 4:8] == 8).all() and {"id": 12, "category_id": 1, "iscrowd": 0, "score": 1.0} in out_segs
    base_segs[-1]["category_id"] = 2                      # the same class: maybe a split PRN repaired, kept
    out, _ = restore_base_segments(ref, segs, base, base_segs, THINGS, reclaim_other_classes=True)
    assert not (out == 12).any()


def _joined(gap: int):
    """Two base things of class 1 in a 12x12 image, 4x4 each, ``gap`` columns apart (0: side by side), joined by
    PRN into one thing 5 that also covers the gap; a third base thing of class 2 stays apart."""
    base = np.full((12, 12), 50, np.uint32)
    base[2:6, 1:5] = 10
    base[2:6, 5 + gap:9 + gap] = 11
    base[8:11, 8:11] = 12
    base_segs = [{"id": 50, "category_id": 9}, {"id": 10, "category_id": 1}, {"id": 11, "category_id": 1},
                 {"id": 12, "category_id": 2}]
    ref = np.full((12, 12), 7, np.uint32)
    ref[2:6, 1:9 + gap] = 5
    ref[8:11, 8:11] = 6
    segs = [{"id": 7, "category_id": 9}, {"id": 5, "category_id": 1, "score": 0.8}, {"id": 6, "category_id": 2}]
    return base, base_segs, ref, segs


def test_base_things_prn_joined_are_separated_unless_they_share_a_long_boundary():
    # side by side: a shared boundary of 4 pixel pairs = 1 x sqrt(16): kept up to 1.0, separated above
    base, base_segs, ref, segs = _joined(0)
    out, out_segs = separate_joined_base_things(ref, segs, base, base_segs, THINGS, min_contact=1.0)
    assert np.array_equal(out, ref) and out_segs == segs
    out, out_segs = separate_joined_base_things(ref, segs, base, base_segs, THINGS, min_contact=1.1)
    assert (out[2:6, 1:5] == 5).all()                     # the first piece (ties: lowest base id) keeps the id
    new = int(out[2, 5])
    assert new not in (5, 6, 7) and (out[2:6, 5:9] == new).all() and int((out == new).sum()) == 16
    assert {"id": new, "category_id": 1, "score": 0.8} in out_segs and len(out_segs) == 4
    assert (out[8:11, 8:11] == 6).all()


def test_base_things_prn_joined_across_a_gap_are_separated_and_the_gap_stays_prn_s():
    base, base_segs, ref, segs = _joined(2)               # 2 columns of stuff between the pieces
    out, out_segs = separate_joined_base_things(ref, segs, base, base_segs, THINGS, min_contact=0.1)
    new = int(out[2, 8])
    assert new != 5 and (out[2:6, 7:11] == new).all()
    assert (out[2:6, 1:7] == 5).all()                     # first piece and the gap PRN drew: the kept segment
    assert {s["id"] for s in out_segs} == {5, 6, 7, new}
    off, off_segs = separate_joined_base_things(ref, segs, base, base_segs, THINGS, min_contact=0)
    assert off is ref and off_segs is segs


def test_base_things_of_two_classes_are_separated_however_long_they_touch_and_keep_their_class():
    base, base_segs, ref, segs = _joined(0)
    base_segs[2]["category_id"] = 2                       # the second piece is another class: two objects
    out, out_segs = separate_joined_base_things(ref, segs, base, base_segs, THINGS, min_contact=0.1)
    assert (out[2:6, 1:5] == 5).all()
    new = int(out[2, 5])
    assert new not in (5, 6, 7) and (out[2:6, 5:9] == new).all()
    assert {"id": new, "category_id": 2, "score": 0.8} in out_segs and len(out_segs) == 4


def test_base_things_mostly_outside_are_not_separated():
    base, base_segs, ref, segs = _joined(2)
    ref[2:6, 8:11] = 7                                    # PRN covers only 1 of the second piece's 4 columns
    out, _ = separate_joined_base_things(ref, segs, base, base_segs, THINGS, min_contact=0.1)
    assert np.array_equal(out, ref)


def test_a_refined_thing_matching_a_base_thing_takes_its_class():
    base, base_segs, ref, segs = _maps()
    segs[1]["category_id"] = 1                            # PRN renamed the base's class-2 thing to class 1
    ref[0:2, 0:2] = 9                                     # a thing of PRN's own, on the base's stuff
    segs.append({"id": 9, "category_id": 2})
    out_segs = keep_base_thing_classes(ref, segs, base, base_segs, THINGS)
    assert {s["id"]: s["category_id"] for s in out_segs} == {7: 9, 8: 2, 9: 2}
    assert segs[1]["category_id"] == 1                    # the input list is not changed
    ref[4:8, 4:8] = 7                                     # turned into stuff: left alone
    assert keep_base_thing_classes(ref, segs[:1], base, base_segs, THINGS) == segs[:1]
