"""PanopticFPN-style fusion of MS-PanopticFPN on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prn_cli.models.categories import CategoryMap
from prn_cli.models.ms_panoptic_fpn.config import InferenceConfig
from prn_cli.models.ms_panoptic_fpn.fusion import panoptic_fusion, stuff_area_limit
from prn_cli.panoptic import PanopticWriter, category_dict, segment_stats

# class index 0, 1 = things (thing index 0, 1); 2, 3 = stuff. Ids are deliberately sparse.
CATEGORIES = [
    category_dict(1, "square", True, (200, 30, 30), "polygon"),
    category_dict(2, "disc", True, (30, 200, 30), "round"),
    category_dict(101, "sky", False, (70, 130, 180), "sky"),
    category_dict(102, "grass", False, (60, 160, 60), "ground"),
]
CMAP = CategoryMap.from_categories(CATEGORIES)
H = W = 20
#: stuff limit of 10 px at 20 x 20 (scaled from 40 px at 40 x 40)
CFG = InferenceConfig(stuff_area=40, stuff_area_reference_pixels=1600)


def _mask(y0, y1, x0, x1, value=0.9):
    m = torch.zeros(H, W)
    m[y0:y1, x0:x1] = value
    return m


def _check_consistent(ids, segs):
    assert ids.dtype == np.int64 and ids.shape == (H, W)
    listed = [s["id"] for s in segs]
    assert len(listed) == len(set(listed))
    assert set(segment_stats(ids)) == set(listed)
    assert all(0 < i < 2 ** 24 for i in listed)


def _fuse(masks, scores, labels, semantic, cfg=CFG, **kw):
    ids, segs = panoptic_fusion(torch.stack(masks) if masks else torch.zeros(0, H, W), torch.tensor(scores),
                                torch.tensor(labels, dtype=torch.long), semantic, CMAP, cfg, **kw)
    _check_consistent(ids, segs)
    return ids, segs


def test_score_threshold_stops_the_loop():
    semantic = torch.zeros(H, W, dtype=torch.long)          # all "thing" class: no stuff fill
    masks = [_mask(0, 5, 0, 5), _mask(10, 15, 0, 5), _mask(0, 5, 10, 15)]
    ids, segs = _fuse(masks, [0.9, 0.49, 0.6], [0, 1, 1], semantic)
    assert [s["score"] for s in segs] == pytest.approx([0.9, 0.6])
    assert [s["category_id"] for s in segs] == [1, 2]
    assert (ids[10:15, 0:5] == 0).all()                      # the 0.49 instance is not used
    assert all(s["isthing"] and s["iscrowd"] == 0 for s in segs)


def test_overlap_rule_drops_or_keeps_unclaimed_pixels():
    semantic = torch.zeros(H, W, dtype=torch.long)
    a = _mask(0, 10, 0, 10)                                  # 100 px, best score
    b = _mask(0, 10, 4, 14)                                  # 60 % under a -> dropped
    c = _mask(0, 10, 5, 15)                                  # 50 % under a (not more) -> kept, 50 px
    ids, segs = _fuse([a, b, c], [0.9, 0.8, 0.7], [0, 1, 1], semantic)
    assert len(segs) == 2
    a_id, c_id = segs[0]["id"], segs[1]["id"]
    assert segs[1]["score"] == pytest.approx(0.7)
    assert (ids[0:10, 0:10] == a_id).all()
    assert (ids[0:10, 10:15] == c_id).all() and (ids == c_id).sum() == 50
    assert (ids[10:] == 0).all() and (ids[:, 15:] == 0).all()


def test_mask_threshold_empty_and_bool_masks():
    semantic = torch.zeros(H, W, dtype=torch.long)
    faint = _mask(0, 10, 0, 10, value=0.3)                   # below mask_threshold -> empty -> skipped
    sharp = _mask(10, 20, 10, 20, value=1.0) > 0             # bool masks are used as they are
    ids, segs = panoptic_fusion(torch.stack([faint, sharp.float()]), torch.tensor([0.95, 0.9]),
                                torch.tensor([0, 1]), semantic, CMAP, CFG)
    _check_consistent(ids, segs)
    assert [s["category_id"] for s in segs] == [2]
    ids_b, segs_b = panoptic_fusion(sharp[None], torch.tensor([0.9]), torch.tensor([1]), semantic, CMAP, CFG)
    assert np.array_equal(ids_b, ids) and segs_b == segs


def test_stuff_fill_area_limit_and_thing_labels_stay_void():
    assert stuff_area_limit(H, W, CFG) == 10
    assert stuff_area_limit(480, 640, InferenceConfig()) == 4096
    assert stuff_area_limit(1, 1, InferenceConfig()) == 1
    semantic = torch.full((H, W), 2, dtype=torch.long)       # sky everywhere ...
    semantic[10:, :] = 0                                     # ... but the bottom half says "thing" (square)
    semantic[0:3, 0:3] = 3                                   # 9 px of grass: below the 10 px limit
    semantic[5:7, 15:20] = 3                                 # 10 more grass px elsewhere: 19 in all -> kept
    inst = _mask(0, 2, 0, 20)                                # claims rows 0-1, incl. 6 of the grass pixels
    ids, segs = _fuse([inst], [0.9], [1], semantic)
    by_cat = {s["category_id"]: s for s in segs}
    assert set(by_cat) == {2, 101, 102}                      # the thing class in the semantic map is not a segment
    assert not by_cat[101]["isthing"] and not by_cat[102]["isthing"]
    assert (ids[10:] == 0).all()                             # thing-labelled semantic pixels stay void
    assert (ids == by_cat[102]["id"]).sum() == 3 + 10        # only unclaimed grass: 13 >= 10
    semantic[5:7, 15:20] = 2
    ids, segs = _fuse([inst], [0.9], [1], semantic)          # 3 unclaimed grass px < 10 -> void
    assert {s["category_id"] for s in segs} == {2, 101}
    assert (ids[2, 0:3] == 0).all()


def test_segment_ids_deterministic_custom_and_valid_for_the_writer(tmp_path):
    semantic = torch.full((H, W), 3, dtype=torch.long)
    masks = [_mask(0, 5, 0, 5), _mask(8, 12, 8, 12)]
    ids, segs = _fuse(masks, [0.6, 0.8], [0, 1], semantic)
    assert [s["id"] for s in segs] == [1, 2, 3]              # by creation: things by score, then stuff
    assert [s["category_id"] for s in segs] == [2, 1, 102]
    ids2, segs2 = _fuse(masks, [0.6, 0.8], [0, 1], semantic)
    assert np.array_equal(ids, ids2) and segs == segs2
    ids3, segs3 = _fuse(masks, [0.6, 0.8], [0, 1], semantic, id_fn=lambda cat, n: cat * 1000 + n)
    assert [s["id"] for s in segs3] == [2000, 1001, 102002]
    with pytest.raises(ValueError):
        _fuse(masks, [0.6, 0.8], [0, 1], semantic, id_fn=lambda cat, n: 7)
    with PanopticWriter(tmp_path / "p.json", tmp_path / "p", CATEGORIES) as writer:
        ann = writer.add({"id": 1, "file_name": "a.jpg", "width": W, "height": H}, ids, segs)
    assert sum(s["area"] for s in ann["segments_info"]) == H * W


def test_stuff_score_from_semantic_probabilities():
    semantic = torch.full((H, W), 2, dtype=torch.long)
    probs = torch.zeros(4, H, W)
    probs[2] = 0.75
    ids, segs = _fuse([], [], [], semantic, semantic_probs=probs)
    assert len(segs) == 1 and segs[0]["score"] == pytest.approx(0.75) and (ids == segs[0]["id"]).all()
