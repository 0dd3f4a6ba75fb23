"""The faster post-processing gives the results of the plain formulations it replaced, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prn_cli.models.prn.base_fusion import dense_labels, restore_base_segments, snap_to_base
from prn_cli.models.prn.postprocess import (box_iou_inclusive, box_iou_rows, channel_argmax, group_pixels,
                                            window_max)


def blocks(rng, values, shape=(40, 56), cell=8):
    """An id map of rectangular blocks (long runs, like real segmentations) drawn from ``values``."""
    small = rng.choice(values, size=(shape[0] // cell, shape[1] // cell))
    return np.kron(small, np.ones((cell, cell), dtype=small.dtype))


@pytest.mark.parametrize("dtype,high", [(np.uint32, 2 ** 24), (np.uint32, 300), (np.int64, 2 ** 24)])
def test_dense_labels_equal_np_unique(dtype, high):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, high, (37, 41)).astype(dtype)
    ids[::5] = 0
    values, labels = dense_labels(ids)
    want_values, want_labels = np.unique(ids, return_inverse=True)
    np.testing.assert_array_equal(values, want_values)
    np.testing.assert_array_equal(labels, want_labels.ravel())
    assert labels.dtype == np.int32


def test_dense_labels_with_known_ids_and_the_fallback():
    ids = np.array([[5, 5, 0], [9, 9, 5]], dtype=np.uint32)
    values, labels = dense_labels(ids, known=[9, 5, 77])          # 77 has no pixels: listed anyway
    assert values.tolist() == [0, 5, 9, 77]
    np.testing.assert_array_equal(values[labels], ids.ravel())
    values, labels = dense_labels(ids, known=[5])                 # 9 is not known: the general case
    assert values.tolist() == [0, 5, 9]
    np.testing.assert_array_equal(values[labels], ids.ravel())


def test_base_fusion_with_precomputed_labels_is_unchanged():
    rng = np.random.default_rng(3)
    base_ids_pool = np.array([0, 11, 12, 13, 14, 1001, 1002], dtype=np.uint32)
    ref_pool = np.array([0, 70001, 70002, 70003, 80001], dtype=np.uint32)
    things = {1, 2}
    for trial in range(6):
        base = blocks(rng, base_ids_pool, cell=4)
        ref = blocks(rng, ref_pool, cell=8)
        base_segs = [{"id": int(v), "category_id": (1 if v < 100 else 101)} for v in base_ids_pool[1:]]
        ref_segs = [{"id": int(v), "category_id": (2 if v < 80000 else 102)} for v in ref_pool[1:]]
        unsure = rng.random(base.shape) < 0.5
        base_labels = dense_labels(base, known=[s["id"] for s in base_segs])
        labels = dense_labels(ref, known=[s["id"] for s in ref_segs])
        thing_ids = {s["id"] for s in ref_segs if s["category_id"] in things}
        plain = snap_to_base(ref, base, unsure, thing_ids)
        fast, (values, snapped) = snap_to_base(ref, base, unsure, thing_ids, base_labels=base_labels, labels=labels,
                                               return_labels=True)
        np.testing.assert_array_equal(fast, plain)
        np.testing.assert_array_equal(values[snapped], plain.ravel())
        for stuff in (True, False):
            want = restore_base_segments(plain, ref_segs, base, base_segs, things, stuff=stuff)
            got = restore_base_segments(plain, ref_segs, base, base_segs, things, stuff=stuff,
                                        base_labels=base_labels, labels=(values, snapped))
            np.testing.assert_array_equal(got[0], want[0])
            assert got[1] == want[1]


@pytest.mark.parametrize("kernel", [1, 3, 7, 17])
def test_window_max_equals_max_pool(kernel):
    heat = torch.rand(23, 31)
    heat[5, 5] = heat[5, 6] = 2.0                                 # a plateau
    want = F.max_pool2d(heat[None, None], kernel, stride=1, padding=kernel // 2)[0, 0]
    assert torch.equal(window_max(heat, kernel), want)


@pytest.mark.parametrize("channels,dtype", [(12, torch.float32), (2, torch.float64), (255, torch.float32),
                                            (300, torch.float32), (1, torch.float32)])
def test_channel_argmax_equals_argmax_ties_included(channels, dtype):
    logits = torch.randint(0, 3, (channels, 5000)).to(dtype)      # many ties
    assert torch.equal(channel_argmax(logits), logits.argmax(0))
    logits = torch.randn(channels, 3000, dtype=dtype)
    assert torch.equal(channel_argmax(logits), logits.argmax(0))
    logits[channels // 2, 7] = float("nan")                       # torch picks the NaN
    assert torch.equal(channel_argmax(logits), logits.argmax(0))


def test_iou_rows_are_the_diagonal_of_the_matrix_and_grouping_equals_the_plain_rule():
    g = torch.Generator().manual_seed(0)
    p, k = 3000, 9
    xy = torch.rand(p, 2, generator=g) * 60
    boxes = torch.cat([xy - torch.rand(p, 2, generator=g) * 12, xy + torch.rand(p, 2, generator=g) * 12], 1)
    centers = torch.rand(k, 2, generator=g) * 60
    cxy = centers.flip(1)
    center_boxes = torch.cat([cxy - torch.rand(k, 2, generator=g) * 12, cxy + torch.rand(k, 2, generator=g) * 12], 1)
    votes = xy.flip(1) + torch.randn(p, 2, generator=g) * 3
    nearest = torch.randint(0, k, (p,), generator=g)
    assert torch.equal(box_iou_rows(boxes, center_boxes[nearest]),
                       box_iou_inclusive(boxes, center_boxes)[torch.arange(p), nearest])
    # the rule written out plainly: nearest among agreeing centres, else the plain nearest
    d = ((votes[:, None, :] - centers[None]) ** 2).sum(-1)
    agree = box_iou_inclusive(boxes, center_boxes) >= 0.5
    want = torch.where(agree.any(1), d.masked_fill(~agree, float("inf")).argmin(1), d.argmin(1))
    got = group_pixels(votes, centers, boxes, center_boxes, 0.5, chunk_elements=1000)
    assert torch.equal(got, want)
    assert 0 < int((agree.any(1) & (want != d.argmin(1))).sum())      # the rule mattered for some pixels


def test_snap_asks_only_for_the_pixels_that_could_move_and_gives_the_same_map():
    rng = np.random.default_rng(5)
    base_pool = np.array([0, 11, 12, 13, 1001, 1002], dtype=np.uint32)
    ref_pool = np.array([0, 70001, 70002, 80001], dtype=np.uint32)
    asked = []
    for trial in range(6):
        base = blocks(rng, base_pool, cell=4)
        # PRN's map: the base's segments under other ids, with a fifth of the pixels redrawn
        ref = np.select([base == 11, base == 12, base == 1001], [70001, 70002, 80001], 0).astype(np.uint32)
        ref = np.where(rng.random(base.shape) < 0.2, blocks(rng, ref_pool, cell=4), ref)
        unsure = rng.random(base.shape) < 0.5
        things = {70001, 70002}

        def lazy(flat):
            asked.append(len(flat))
            return unsure.ravel()[flat]

        want = snap_to_base(ref, base, unsure, things)
        np.testing.assert_array_equal(snap_to_base(ref, base, lazy, things), want)
        np.testing.assert_array_equal(snap_to_base(ref, base, lazy, None), snap_to_base(ref, base, unsure, None))
    assert 0 < sum(asked) < 12 * base.size / 2          # only candidates, far fewer than every pixel


def test_confidence_at_gathered_pixels_equals_the_whole_map():
    from prn_cli.models.prn.base_fusion import confidence_at, confidence_map

    g = torch.Generator().manual_seed(2)
    sem, fg = torch.randn(7, 9, 11, generator=g) * 3, torch.randn(1, 9, 11, generator=g)
    whole = confidence_map({"semantic": sem, "foreground": fg}, "foreground")
    want = torch.minimum(torch.softmax(sem, 0).amax(0), torch.maximum(torch.sigmoid(fg[0]), 1 - torch.sigmoid(fg[0])))
    assert torch.allclose(whole, want, atol=1e-6)
    at = torch.tensor([0, 5, 17, 98])
    part = confidence_at(sem.reshape(7, -1).index_select(1, at), fg.reshape(1, -1).index_select(1, at))
    assert torch.equal(part, whole.reshape(-1)[at])
