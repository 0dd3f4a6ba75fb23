"""prn refine's core without a network: change accounting, base/image pairing, category checks, padding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prn_cli.errors import InvalidInputError
from prn_cli.panoptic import PanopticSet
from prn_cli.refine import category_translation, compare_segmentations
from prn_cli.refine_data import collate_refine, pair_with_images


def _boxes(h, w, *rects):
    """An id map with id k+1 on rectangle k (y0, y1, x0, x1)."""
    ids = np.zeros((h, w), np.int64)
    for k, (y0, y1, x0, x1) in enumerate(rects):
        ids[y0:y1, x0:x1] = k + 1
    return ids


def test_identical_maps_change_nothing():
    ids = _boxes(20, 20, (0, 10, 0, 10), (10, 20, 0, 20))
    c = compare_segmentations(ids, {1: 5, 2: 101}, ids * 7, {7: 5, 14: 101})
    assert c == {"segments_base": 2, "segments_refined": 2, "added": 0, "removed": 0, "split": 0, "merged": 0,
                 "relabelled": 0, "pixels_changed": 0, "pixels": 400}


def test_split_merge_add_remove_relabel_are_told_apart():
    # base: A = left half, B = a small square (removed), C+D = two halves of the bottom (merged), E (relabelled)
    base = _boxes(40, 40, (0, 20, 0, 20), (0, 4, 30, 34), (30, 40, 0, 20), (30, 40, 20, 40), (20, 30, 0, 40))
    # refined: A split in two, B gone, C+D one segment, E same mask other class, F a new thing
    ref = _boxes(40, 40, (0, 20, 0, 10), (0, 20, 10, 20), (30, 40, 0, 40), (20, 30, 0, 40), (5, 10, 25, 35))
    base_cats = {1: 1, 2: 2, 3: 101, 4: 101, 5: 3}
    ref_cats = {1: 1, 2: 1, 3: 101, 4: 4, 5: 2}
    c = compare_segmentations(base, base_cats, ref, ref_cats)
    assert (c["split"], c["merged"], c["removed"], c["added"], c["relabelled"]) == (1, 1, 1, 1, 1)
    assert c["segments_base"] == 5 and c["segments_refined"] == 5
    # unchanged pixels are only the void ones that stayed void (E changed class; A, C, D lost their match)
    void_both = int(((base == 0) & (ref == 0)).sum())
    assert c["pixels_changed"] == 1600 - void_both


def test_pixels_changed_counts_a_boundary_shift():
    base = _boxes(10, 10, (0, 10, 0, 5), (0, 10, 5, 10))
    ref = _boxes(10, 10, (0, 10, 0, 6), (0, 10, 6, 10))
    c = compare_segmentations(base, {1: 1, 2: 2}, ref, {1: 1, 2: 2})
    assert c["pixels_changed"] == 10 and c["split"] == c["merged"] == c["added"] == c["removed"] == 0


def test_segments_that_become_void_are_removed_not_merged():
    # issue 10, problem 10: void held several base segments and counted as their merge target, so none was
    # reported removed (the demo's 236 -> 219 segments read "removed 13")
    base = _boxes(20, 20, (0, 5, 0, 5), (0, 5, 10, 15), (10, 15, 0, 5), (10, 20, 10, 20))
    ref = _boxes(20, 20, (10, 20, 10, 20))      # the first three become void, the fourth stays
    c = compare_segmentations(base, {1: 1, 2: 1, 3: 2, 4: 101}, ref, {1: 101})
    assert (c["removed"], c["merged"], c["split"], c["added"]) == (3, 0, 0, 0)
    assert c["segments_base"] - c["removed"] == c["segments_refined"]
    # and the other way round: void that becomes several segments adds them, it does not split
    back = compare_segmentations(ref, {1: 101}, base, {1: 1, 2: 1, 3: 2, 4: 101})
    assert (back["added"], back["split"], back["merged"], back["removed"]) == (3, 0, 0, 0)
    assert back["pixels_changed"] == 75 and c["pixels_changed"] == 75


def _set(tmp_path, images, annotations, categories=()):
    return PanopticSet(tmp_path / "base.json", tmp_path / "base", list(categories), list(images), list(annotations))


def test_pairing_uses_images_records_then_stems(tmp_path):
    files = [tmp_path / "000000142238.jpg", tmp_path / "street.png", tmp_path / "other.jpg"]
    anns = [{"image_id": 142238, "file_name": "000000142238.png", "segments_info": []},
            {"image_id": 7, "file_name": "pred_7.png", "segments_info": []}]
    base = _set(tmp_path, [{"id": 7, "file_name": "street.png", "width": 4, "height": 4}], anns)
    pairs = pair_with_images(base, files)
    assert [p.image_path.name for p in pairs] == ["000000142238.jpg", "street.png"]
    assert pairs[1].image == {"id": 7, "file_name": "street.png", "width": 4, "height": 4}


def test_unpaired_annotation_is_an_error_naming_it(tmp_path):
    base = _set(tmp_path, [], [{"image_id": 3, "file_name": "frame_3.png", "segments_info": []}])
    with pytest.raises(InvalidInputError, match="frame_3.png.*no image"):
        pair_with_images(base, [tmp_path / "frame_4.jpg"])


def test_ambiguous_stem_is_an_error(tmp_path):
    base = _set(tmp_path, [], [{"image_id": 3, "file_name": "a.png", "segments_info": []}])
    with pytest.raises(InvalidInputError, match="several images"):
        pair_with_images(base, [tmp_path / "a.jpg", tmp_path / "x" / "a.png"])


CATS = [{"id": 1, "name": "car", "isthing": 1}, {"id": 2, "name": "road", "isthing": 0}]


def _base_using(tmp_path, cat_ids, categories=()):
    anns = [{"image_id": 1, "file_name": "1.png",
             "segments_info": [{"id": 10 + i, "category_id": c} for i, c in enumerate(cat_ids)]}]
    return _set(tmp_path, [], anns, categories)


def test_category_checks(tmp_path):
    assert category_translation(_base_using(tmp_path, [1, 2]), CATS, None) == {1: 1, 2: 2}
    with pytest.raises(InvalidInputError, match=r"category ids \[9\].*--category-map"):
        category_translation(_base_using(tmp_path, [9]), CATS, None)
    renamed = [{"id": 1, "name": "truck", "isthing": 1}, {"id": 2, "name": "road", "isthing": 0}]
    with pytest.raises(InvalidInputError, match="'truck'.*differs"):
        category_translation(_base_using(tmp_path, [1], renamed), CATS, None)
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"9": 1, "8": 2}))
    assert category_translation(_base_using(tmp_path, [9, 8, 2]), CATS, str(mapping)) == {9: 1, 8: 2, 2: 2}
    mapping.write_text(json.dumps({"9": 77}))
    with pytest.raises(InvalidInputError, match=r"\[77\]"):
        category_translation(_base_using(tmp_path, [9]), CATS, str(mapping))


def test_collate_pads_labels_void_and_weights_zero():
    def item(h, w):
        inputs = {"image": torch.ones(3, h, w), "base_semantic": torch.zeros(h, w, dtype=torch.long),
                  "base_maps": torch.ones(9, h, w)}
        targets = {"semantic": torch.ones(h, w, dtype=torch.long), "center_weight": torch.ones(h, w),
                   "offset": torch.ones(2, h, w)}
        return inputs, targets

    inputs, targets = collate_refine([item(30, 40), item(20, 33)], size_divisibility=32)
    assert inputs["image"].shape == (2, 3, 32, 64) and targets["offset"].shape == (2, 2, 32, 64)
    assert inputs["base_semantic"][1, 25, 10] == 255 and inputs["base_semantic"][1, 5, 10] == 0
    assert targets["semantic"][0, 31, 0] == 255 and targets["semantic"][0, 29, 39] == 1
    assert targets["center_weight"][1].sum() == 20 * 33 and inputs["base_maps"][0, :, :, 40:].abs().sum() == 0
    only_inputs, none = collate_refine([(item(8, 8)[0], None)], size_divisibility=32)
    assert none is None and only_inputs["image"].shape == (1, 3, 32, 32)


def test_the_resume_request_takes_every_refine_option(tmp_path):
    from prn_cli.options import PostProcessOverrides
    from prn_cli.refine import RESUME_MAY_CHANGE, RefineOptions, refine_request

    cats = [{"id": 1, "name": "a", "isthing": 1}]
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    a = refine_request(tmp_path / "base.json", [tmp_path / "b", tmp_path / "a"], weights,
                       RefineOptions(base_format="hf", base_categories=cats,
                                     overrides=PostProcessOverrides(top_k=5)))
    assert json.loads(json.dumps(a)) == a                      # stored as JSON in the progress file
    assert a["images"] == [str(tmp_path / "a"), str(tmp_path / "b")] and a["base_categories"] == cats
    assert a["top_k"] == 5 and a["weights_sha256"] and a["base_format"] == "hf"
    b = refine_request(tmp_path / "base.json", [tmp_path / "a", tmp_path / "b"], weights,
                       RefineOptions(base_format="hf", base_categories=str(tmp_path / "cats.json")))
    assert b["base_categories"] == str(tmp_path / "cats.json") and b["top_k"] is None
    assert set(RESUME_MAY_CHANGE) == {"device", "batch_size"}
