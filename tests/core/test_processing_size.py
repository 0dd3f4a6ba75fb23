"""Inference at a processing size (issue 10): the networks run on the photo shrunk to --min-size / --max-size,
and the PNG is written at the photo's own size, agreeing pixel for pixel with the processing-size result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from prn_cli.errors import UsageError
from prn_cli.options import PostProcessOverrides, ProcessingSize
from prn_cli.panoptic import load_set, read_id_png
from prn_cli.resize import resize_ids
from prn_cli.synth import SynthConfig, write_dataset

PHOTO = (120, 160)                       # (h, w) of the test photos
SMALL = ProcessingSize(min_size=48, max_size=64)


def test_processing_size_shrinks_to_detectron2s_sizes_and_never_enlarges():
    default = ProcessingSize()
    assert default.shape_for(3000, 3000) == (800, 800)
    assert default.shape_for(4000, 6000) == (800, 1200)          # shorter side 800
    assert default.shape_for(1000, 4000) == (333, 1333)          # longer side 1333 binds first
    assert default.shape_for(256, 256) == (256, 256)             # small photos run at their own size
    assert default.shape_for(800, 1333) == (800, 1333)
    assert SMALL.shape_for(*PHOTO) == (48, 64)
    with pytest.raises(UsageError, match="--min-size 8"):
        ProcessingSize(min_size=8)
    with pytest.raises(UsageError, match="--max-size"):
        ProcessingSize(max_size=1.5)


def test_numpy_resize_ids_matches_the_training_resize():
    from prn_cli.data import resize_ids as torch_resize_ids

    ids = np.random.default_rng(0).integers(0, 2 ** 24, (37, 53)).astype(np.uint32)
    for shape in ((120, 160), (11, 7), (37, 53), (74, 106)):
        expected = torch_resize_ids(torch.from_numpy(ids.astype(np.int64)), shape).numpy()
        got = resize_ids(ids, shape)
        assert got.dtype == np.uint32 and got.shape == shape
        np.testing.assert_array_equal(got, expected)
    # enlarging keeps every source pixel (no segment can vanish), each as a block
    big = resize_ids(ids, (111, 159))
    assert set(np.unique(big).tolist()) == set(np.unique(ids).tolist())
    np.testing.assert_array_equal(big[::3, ::3], ids)


def _enlarged(small: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour enlargement written out independently: source pixel floor((i + 0.5) * h / H)."""
    rows = np.floor((np.arange(shape[0]) + 0.5) * small.shape[0] / shape[0]).astype(int)
    cols = np.floor((np.arange(shape[1]) + 0.5) * small.shape[1] / shape[1]).astype(int)
    return small[rows][:, cols]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    summary = write_dataset(root, SynthConfig(n=2, width=PHOTO[1], height=PHOTO[0], seed=4, split="val",
                                              max_things=6))
    return summary


def test_segment_writes_the_photo_size_and_agrees_with_the_processing_size_result(photos, tmp_path):
    from prn_cli.data import collate, normalize, resize_image
    from prn_cli.io import read_photo
    from prn_cli.predictors import Segmenter
    from prn_cli.segment import SegmentOptions, segment

    segment([photos["images_dir"]], None, tmp_path / "out", options=SegmentOptions(device="cpu",
                                                                                   processing_size=SMALL))
    written = load_set(tmp_path / "out")
    segmenter = Segmenter(device="cpu")
    checked_segments = 0
    for image, ann in zip(written.images, written.annotations):
        png = read_id_png(written.png_path(ann))
        assert png.shape == PHOTO and (image["height"], image["width"]) == PHOTO
        rgb = read_photo(Path(photos["images_dir"]) / image["file_name"])
        # the processing-size result, computed here from the network directly
        x = resize_image(normalize(rgb), SMALL.shape_for(*PHOTO))
        batch, _, sizes = collate([(x, None)], size_divisibility=segmenter.size_divisibility)
        with torch.inference_mode():
            out = segmenter.model(batch, image_sizes=sizes)[0]
            small, segments = segmenter.model.panoptic(out)
        assert small.shape == (48, 64)
        np.testing.assert_array_equal(png, _enlarged(small, PHOTO))
        assert ({s["id"]: s["category_id"] for s in ann["segments_info"]}
                == {s["id"]: s["category_id"] for s in segments})
        checked_segments += len(segments)
    assert checked_segments >= 4          # the comparison saw real segmentations, not empty maps


def test_refine_writes_the_photo_size_and_agrees_with_the_processing_size_result(photos, tmp_path):
    from prn_cli.predictors import NETWORK_INPUTS, Refiner
    from prn_cli.io import read_photo
    from prn_cli.models.prn.postprocess import panoptic_from_outputs
    from prn_cli.refine import RefineOptions, refine
    from prn_cli.refine_data import collate_refine

    no_fusion = PostProcessOverrides(restore_base_segments="none", base_snap_confidence=0.0, min_join_contact=0.0,
                                     keep_base_thing_class=False, classifier_confidence=0.0,
                                     classifier_remove_confidence=0.0, void_thing_confidence=0.0)
    refine(photos["json"], photos["images_dir"], None, tmp_path / "refined",
           options=RefineOptions(device="cpu", overrides=no_fusion, processing_size=SMALL))
    written = load_set(tmp_path / "refined")
    base = load_set(photos["json"])
    refiner = Refiner(device="cpu", overrides=no_fusion, processing_size=SMALL)
    category_of_class = list(refiner.category_map.class_ids)
    for ann in written.annotations:
        png = read_id_png(written.png_path(ann))
        assert png.shape == PHOTO
        base_ann = next(a for a in base.annotations if a["image_id"] == ann["image_id"])
        image = next(i for i in base.images if i["id"] == ann["image_id"])
        prepared = refiner.prepare(read_photo(Path(photos["images_dir"]) / image["file_name"]),
                                   read_id_png(base.png_path(base_ann)), base_ann["segments_info"])
        inputs, _ = collate_refine([({k: prepared[k] for k in NETWORK_INPUTS}, None)])
        with torch.inference_mode():
            outputs = refiner.model(inputs)
            small, infos = panoptic_from_outputs({k: v[0, :, :48, :64] for k, v in outputs.items()},
                                                 refiner._thing, refiner.postprocess_config)
        expected = _enlarged(small.numpy(), PHOTO)
        # the same partition, segment by segment (the PNG's ids are random COCO-like colours)
        pairs = np.unique(np.stack([png.ravel().astype(np.int64), expected.ravel()]), axis=1)
        assert pairs.shape[1] == len(np.unique(png)) == len(np.unique(expected))
        category = {s["id"]: s["category_id"] for s in ann["segments_info"]}
        for sid, index in pairs.T:
            if sid == 0:
                assert index == 0
                continue
            assert category[int(sid)] == category_of_class[infos[int(index) - 1]["class_index"]]
        assert len(infos) >= 2


def test_refine_fuses_with_the_base_at_the_photos_size(photos, tmp_path):
    """With the base fusion on, PRN's stride-4, processing-size boundaries are snapped to the full-size base where
    PRN is unsure: the refined PNG follows the base more closely than the enlarged PRN map does."""
    from prn_cli.refine import RefineOptions, refine

    fused = PostProcessOverrides(restore_base_segments="all", base_snap_confidence=1.0)
    none = PostProcessOverrides(restore_base_segments="none", base_snap_confidence=0.0, min_join_contact=0.0,
                                keep_base_thing_class=False)
    agree = {}
    for name, overrides in (("fused", fused), ("plain", none)):
        refine(photos["json"], photos["images_dir"], None, tmp_path / name,
               options=RefineOptions(device="cpu", overrides=overrides, processing_size=SMALL))
        written, base = load_set(tmp_path / name), load_set(photos["json"])
        total = 0
        for ann, base_ann in zip(written.annotations, base.annotations):
            png, base_png = read_id_png(written.png_path(ann)), read_id_png(base.png_path(base_ann))
            assert png.shape == base_png.shape == PHOTO
            # pixels whose refined segment is the one that best covers their base segment
            _, inv = np.unique(base_png, return_inverse=True)
            pairs = inv.ravel().astype(np.int64) * (2 ** 25) + png.ravel()
            values, counts = np.unique(pairs, return_counts=True)
            best = {}
            for v, c in zip(values.tolist(), counts.tolist()):
                b = v >> 25
                best[b] = max(best.get(b, 0), c)
            total += sum(best.values())
        agree[name] = total
    assert agree["fused"] > agree["plain"]
