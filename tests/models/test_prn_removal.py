"""Removing the things the thing classifier calls "no thing" (models/prn/removal.py): void, or joined to the kept
thing of its category along which it lies (a split's smaller half)."""

from __future__ import annotations

import numpy as np
import pytest

from prn_cli.models.prn.postprocess import PostProcessConfig
from prn_cli.models.prn.removal import boundary_contacts, remove_things


def scene() -> tuple[np.ndarray, dict[int, int]]:
    """A 40x40 map on ground (7): a square split into a left half (11) and a thin right part (12), a disc (13,
    another class) touching the thin part below, and a thing of the first class (14) touching 11 at one pixel pair."""
    ids = np.full((40, 40), 7, np.int64)
    ids[5:15, 5:12] = 11
    ids[5:15, 12:15] = 12
    ids[15:25, 12:15] = 13
    ids[15:20, 0:6] = 14
    return ids, {7: 101, 11: 1, 12: 1, 13: 2, 14: 1}


def test_contacts_count_each_pair_of_neighbouring_pixels_once_per_direction():
    ids = np.array([[1, 1, 2],
                    [1, 3, 2]])
    a, b, n = boundary_contacts(ids)
    counts = {(int(x), int(y)): int(c) for x, y, c in zip(a, b, n)}
    assert counts == {(1, 2): 1, (2, 1): 1, (1, 3): 2, (3, 1): 2, (3, 2): 1, (2, 3): 1}
    assert [v.size for v in boundary_contacts(np.ones((3, 3), np.int64))] == [0, 0, 0]


def test_a_removed_piece_lying_along_a_thing_of_its_class_joins_it_and_others_turn_void():
    ids, category_of = scene()
    # 12's boundary: 10 pairs with 11, 3 with the disc, 10 + 3 with the ground (26 in all): 11 has 10/26 = 0.38
    out, joined = remove_things(ids, [12], category_of, join_share=0.3)
    assert joined == {12: 11}
    assert (out[5:15, 5:15] == 11).all() and (out[ids != 12] == ids[ids != 12]).all()
    out, joined = remove_things(ids, [12], category_of, join_share=0.5)
    assert joined == {} and (out[ids == 12] == 0).all() and (out[ids != 12] == ids[ids != 12]).all()
    # without a share every removed thing turns void, as the removal alone does
    out, joined = remove_things(ids, [12, 13], category_of)
    assert joined == {} and set(np.unique(out).tolist()) == {0, 7, 11, 14}


def test_a_piece_joins_only_a_kept_thing_of_its_own_category():
    ids, category_of = scene()
    # the disc (class 2) touches 12 (class 1) only: it has no same-class neighbour and turns void
    out, joined = remove_things(ids, [13], category_of, join_share=0.01)
    assert joined == {} and (out[ids == 13] == 0).all()
    # 12 and 11 both removed: neither joins the other (11 touches 14 at 1 of its 34 pairs), both void
    out, joined = remove_things(ids, [11, 12], category_of, join_share=0.2)
    assert joined == {} and (out[5:15, 5:15] == 0).all()
    # 14 touches 11 at one of its 6 + 5 + 6 boundary pairs (the map's edge does not count): a neighbour, not a half
    assert remove_things(ids, [14], category_of, join_share=0.05)[1] == {14: 11}
    out, joined = remove_things(ids, [14], category_of, join_share=0.1)
    assert joined == {} and (out[15:20, 0:6] == 0).all()


def test_the_share_is_a_fraction():
    assert PostProcessConfig(classifier_join_share=0.3).classifier_join_share == 0.3
    with pytest.raises(ValueError, match="classifier_join_share"):
        PostProcessConfig(classifier_join_share=1.5)
