"""Every format converts losslessly: a prediction encoded the way its framework encodes it, converted through
the in-memory API and through ``prn convert``, scores PQ 100 against the ground truth it encodes; and
``prn convert --to`` round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convert_helpers import (GT_JSON, TWO_CHANNEL_DIR, crop_set, deeplab_map, detectron2_pair, gt_images, hf_result,
                             id2label, mmdet_map, mmdet_png_rgb, pq, prn)

from prn_cli.convert import CONVERTERS, ConvertOptions, from_cityscapes
from prn_cli.panoptic import PanopticWriter, load_set, rgb2id, validate_set

# case -> (format, CLI options, ConvertOptions fields)
CASES = {
    "hf": ("hf", [], {}),
    "hf-repeated-fused-ids": ("hf", [], {}),
    "detectron2": ("detectron2", [], {}),
    "detectron2-separated": ("detectron2", ["--label-map", "separated"], {"label_map": "separated"}),
    "panoptic-deeplab": ("detectron2", [], {}),
    "mmdet-npy": ("mmdet", [], {}),
    "mmdet-png": ("mmdet", [], {}),
    "2ch": ("2ch", [], {}),
    "divisor-deeplab2-png": ("divisor", ["--label-map", "id", "--label-divisor", "256", "--void", "0"],
                             {"label_map": "id", "label_divisor": 256, "void": 0}),
    "divisor-npy": ("divisor", [], {}),
}


def encode_case(case: str, folder: Path, tmp: Path):
    """Write the case's prediction files into ``folder``; return (GT JSON, extra CLI args, in-memory objects
    [(stem, object, converter kwargs)])."""
    import torch

    folder.mkdir(parents=True)
    gt, images = gt_images()
    cats = gt.categories
    extra_args: list[str] = []
    objects = []
    gt_json = GT_JSON
    if case.startswith("hf"):
        pytest.importorskip("transformers")
        gt_json = crop_set(tmp)
        crop = load_set(gt_json)
        config = tmp / "config.json"
        config.write_text(json.dumps({"model_type": "mask2former", "id2label": id2label(cats)}))
        extra_args = ["--id2label", config]
        for ann in crop.annotations:
            result = hf_result(crop.read_ids(ann), ann["segments_info"], cats,
                               split_stuff=case == "hf-repeated-fused-ids")
            if case == "hf-repeated-fused-ids":
                ids_listed = [s["id"] for s in result["segments_info"]]
                assert len(ids_listed) > len(set(ids_listed))      # transformers really lists an id twice
            torch.save(result, folder / f"{Path(ann['file_name']).stem}.pt")
            objects.append((Path(ann["file_name"]).stem, result, {}))
        return gt_json, extra_args, objects
    for stem, ids, segs in images:
        if case in ("detectron2", "detectron2-separated"):
            obj = detectron2_pair(ids, segs, cats, separated=case == "detectron2-separated")
            torch.save(obj, folder / f"{stem}.pt")
        elif case == "panoptic-deeplab":
            obj = (torch.from_numpy(deeplab_map(ids, segs, cats).astype(np.int32)), None)
            torch.save(obj, folder / f"{stem}.pt")
        elif case == "mmdet-npy":
            obj = mmdet_map(ids, segs, cats).astype(np.int32)[None]        # 3.x: (1, H, W)
            np.save(folder / f"{stem}.npy", obj)
        elif case == "mmdet-png":
            rgb = mmdet_png_rgb(ids, segs, cats)
            Image.fromarray(rgb).save(folder / f"{stem}_panoptic_seg.png")
            obj = rgb2id(rgb)
        elif case == "2ch":
            obj = np.asarray(Image.open(TWO_CHANNEL_DIR / f"{stem}.png"))    # panopticapi's own sample files
            Image.fromarray(obj).save(folder / f"{stem}.png")
        elif case == "divisor-deeplab2-png":
            values = deeplab_map(ids, segs, cats, divisor=256, label="id", void=0)
            assert values.max() < 2 ** 16
            Image.fromarray(values.astype(np.uint16)).save(folder / f"{stem}.png")
            obj = values
        elif case == "divisor-npy":
            obj = deeplab_map(ids, segs, cats).astype(np.int32)
            np.save(folder / f"{stem}.npy", obj)
        objects.append((stem, obj, {"from_png": True} if case == "mmdet-png" else {}))
    return gt_json, extra_args, objects


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    made = {}

    def get(case):
        if case not in made:
            tmp = tmp_path_factory.mktemp(case)
            made[case] = (tmp, *encode_case(case, tmp / "pred", tmp))
        return made[case]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_api_converts_losslessly(case, encoded, tmp_path):
    fmt, _, fields = CASES[case]
    tmp, gt_json, extra_args, objects = encoded(case)
    gt = load_set(gt_json)
    if case.startswith("hf"):
        fields = {**fields, "id2label": str(extra_args[1])}
    options = ConvertOptions(**fields)
    records = {Path(im["file_name"]).stem: im for im in gt.images}
    with PanopticWriter(tmp_path / "api.json", tmp_path / "api", gt.categories) as writer:
        for stem, obj, kwargs in objects:
            ids, segments = CONVERTERS[fmt](obj, gt.categories, options, **kwargs)
            assert ids.dtype == np.uint32 and all(s["iscrowd"] == 0 for s in segments)
            writer.add(records[stem], ids, segments, file_name=f"{stem}.png")
    assert pq(gt_json, tmp_path / "api.json") == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_cli_converts_losslessly(case, encoded, tmp_path):
    fmt, args, _ = CASES[case]
    tmp, gt_json, extra_args, _ = encoded(case)
    out = tmp_path / "out"
    run = prn("convert", tmp / "pred", "--from", fmt, "--categories", gt_json, "--images-json", gt_json,
              "--out", out, *args, *extra_args)
    assert run.returncode == 0, run.stderr
    converted = load_set(out)
    assert validate_set(converted, load_set(gt_json).categories_by_id) == []      # areas from the PNGs
    gt = load_set(gt_json)
    assert [a["image_id"] for a in converted.annotations] == [a["image_id"] for a in gt.annotations]
    assert all(s["iscrowd"] == 0 and s["area"] > 0 for a in converted.annotations for s in a["segments_info"])
    assert pq(gt_json, out) == pytest.approx(1.0, abs=1e-12)


def test_hf_keeps_scores_and_groups_repeated_ids(encoded):
    _, gt_json, extra_args, objects = encoded("hf-repeated-fused-ids")
    gt = load_set(gt_json)
    _, result, _ = objects[0]
    ids, segments = CONVERTERS["hf"](result, gt.categories, ConvertOptions(id2label=str(extra_args[1])))
    listed = [s["id"] for s in result["segments_info"]]
    assert sorted(s["id"] for s in segments) == sorted(set(listed))
    assert all(s["score"] > 0.99 for s in segments)
    stuff = [s for s in segments if not gt.categories_by_id[s["category_id"]]["isthing"]]
    assert len(stuff) == len({s["category_id"] for s in stuff})       # one segment per fused stuff class


def _cityscapes_scene():
    """instanceIds of a 40x60 street: road, sky, two cars, a crowd of persons, ego vehicle and unlabeled (void),
    and the COCO panoptic segments createPanopticImgs.py makes of it."""
    values = np.zeros((40, 60), dtype=np.int64)
    values[:15] = 23                    # sky
    values[15:] = 7                     # road
    values[20:30, 5:15] = 26000         # car 0
    values[20:30, 20:32] = 26001        # car 1
    values[18:35, 40:50] = 24           # persons, crowd
    values[35:, :10] = 1                # ego vehicle: ignored in eval -> void
    values[0:3, 0:3] = 0                # unlabeled
    segments = [{"id": 23, "category_id": 23, "iscrowd": 0}, {"id": 7, "category_id": 7, "iscrowd": 0},
                {"id": 26000, "category_id": 26, "iscrowd": 0}, {"id": 26001, "category_id": 26, "iscrowd": 0},
                {"id": 24, "category_id": 24, "iscrowd": 1}]
    ids = np.where(np.isin(values, [0, 1]), 0, values).astype(np.uint32)
    return values, ids, segments


def test_cityscapes_converts_as_createPanopticImgs(tmp_path):
    from prn_cli.convert import cityscapes_categories

    values, ids, segments = _cityscapes_scene()
    cats = cityscapes_categories()
    assert len(cats) == 19 and sum(c["isthing"] for c in cats) == 8
    got_ids, got_segments = from_cityscapes(values)
    assert np.array_equal(got_ids, ids)
    assert sorted(got_segments, key=lambda s: s["id"]) == sorted(segments, key=lambda s: s["id"])
    # CLI, from a city folder as Cityscapes lays it out; image ids are Cityscapes' <city>_<seq>_<frame>
    city = tmp_path / "gtFine" / "val" / "frankfurt"
    city.mkdir(parents=True)
    Image.fromarray(values.astype(np.uint16)).save(city / "frankfurt_000000_000294_gtFine_instanceIds.png")
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(city / "frankfurt_000000_000294_gtFine_labelIds.png")
    gt_json = tmp_path / "gt.json"
    with PanopticWriter(gt_json, tmp_path / "gt", cats) as writer:
        writer.add({"id": "frankfurt_000000_000294", "file_name": "frankfurt_000000_000294_leftImg8bit.png",
                    "width": 60, "height": 40}, ids, segments)
    run = prn("convert", tmp_path / "gtFine", "--from", "cityscapes", "--out", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    out = load_set(tmp_path / "out")
    assert out.annotations[0]["image_id"] == "frankfurt_000000_000294"
    assert {s["id"]: s["iscrowd"] for s in out.annotations[0]["segments_info"]}[24] == 1
    assert pq(gt_json, tmp_path / "out") == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("fmt,args", [("2ch", []), ("divisor", []), ("divisor", ["--label-map", "id"]),
                                      ("cityscapes", [])])
def test_to_and_back_is_lossless(fmt, args, tmp_path):
    if fmt == "cityscapes":
        values, ids, segments = _cityscapes_scene()
        from prn_cli.convert import cityscapes_categories

        source = tmp_path / "src.json"
        with PanopticWriter(source, tmp_path / "src", cityscapes_categories()) as writer:
            writer.add({"id": "aachen_000000_000019", "file_name": "aachen_000000_000019_leftImg8bit.png",
                        "width": 60, "height": 40}, ids, segments)
        cats_args = []
    else:
        source = GT_JSON
        cats_args = ["--categories", GT_JSON]
    run = prn("convert", source, "--to", fmt, "--out", tmp_path / "files", *args)
    assert run.returncode == 0, run.stderr
    files = sorted(p.name for p in (tmp_path / "files").iterdir())
    expected = {"2ch": ["000000142238.png", "000000439180.png"], "divisor": ["000000142238.npy", "000000439180.npy"],
                "cityscapes": ["aachen_000000_000019_instanceIds.png"]}[fmt]
    assert files == expected
    back = prn("convert", tmp_path / "files", "--from", fmt, *cats_args, "--images-json", source,
               "--out", tmp_path / "back", *args)
    assert back.returncode == 0, back.stderr
    assert pq(source, tmp_path / "back") == pytest.approx(1.0, abs=1e-12)
    if fmt == "2ch":       # the same pixels as panopticapi's own 2-channel sample of this GT
        for name in expected:
            mine = np.asarray(Image.open(tmp_path / "files" / name))
            theirs = np.asarray(Image.open(TWO_CHANNEL_DIR / name))
            assert np.array_equal(mine[..., 0], theirs[..., 0])


def test_panoptic_deeplab_on_cityscapes_labels_are_train_ids(tmp_path):
    """Panoptic-DeepLab's Cityscapes labels are trainIds: the i-th of Cityscapes' categories in id order."""
    import torch

    from prn_cli.convert import cityscapes_categories, from_detectron2

    pred = torch.full((4, 6), 13 * 1000 + 2, dtype=torch.int32)     # trainId 13 (car), instance 2
    pred[:2] = 0                                                     # trainId 0 (road), stuff: value 0, not void
    pred[0, 0] = -1
    ids, segments = from_detectron2((pred, None), cityscapes_categories())
    assert sorted(s["category_id"] for s in segments) == [7, 26]     # road and car as labelIds
    assert ids[0, 0] == 0 and (ids > 0).sum() == 23
    torch.save((pred, None), tmp_path / "frankfurt_000000_000294.pt")
    run = prn("convert", tmp_path, "--from", "detectron2", "--categories", "cityscapes", "--out", tmp_path / "o")
    assert run.returncode == 0, run.stderr
    assert {c["name"] for c in load_set(tmp_path / "o").categories} >= {"road", "car", "bicycle"}
