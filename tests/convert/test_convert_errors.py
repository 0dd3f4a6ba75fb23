"""Every inconsistency of a prediction stops ``prn convert`` with one line naming the file and the fix, exit 3
(usage mistakes exit 2), and leaves nothing half-written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convert_helpers import GT_JSON, contiguous, crop_set, gt_images, hf_result, id2label, mmdet_map, prn

from prn_cli.convert import ConvertOptions, from_detectron2, from_hf
from prn_cli.errors import InvalidInputError
from prn_cli.panoptic import load_set


def one_line(run, code, *fragments):
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == code, run.stderr
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def sample():
    gt, images = gt_images()
    return gt.categories, images


def _hf_folder(tmp_path, sample, mutate):
    import torch

    pytest.importorskip("transformers")
    cats, _ = sample
    crop = load_set(crop_set(tmp_path))
    ann = crop.annotations[0]
    result = hf_result(crop.read_ids(ann), ann["segments_info"], cats)
    mutate(result)
    (tmp_path / "pred").mkdir()
    torch.save(result, tmp_path / "pred" / "000000142238.pt")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"id2label": id2label(cats)}))
    return tmp_path / "pred", config


def test_hf_id_in_the_map_but_not_in_segments_info(tmp_path, sample):
    pred, config = _hf_folder(tmp_path, sample, lambda r: r["segments_info"].pop(0))
    run = prn("convert", pred, "--from", "hf", "--categories", GT_JSON, "--id2label", config, "--out", tmp_path / "o")
    one_line(run, 3, "000000142238.pt", "is in the map but not in segments_info")
    assert not (tmp_path / "o").exists()


def test_hf_label_not_in_the_categories(tmp_path, sample):
    pred, config = _hf_folder(tmp_path, sample, lambda r: None)
    data = json.loads(config.read_text())
    data["id2label"]["0"] = "pedestrian"            # label 0 (person) named differently from the categories
    config.write_text(json.dumps(data))
    run = prn("convert", pred, "--from", "hf", "--categories", GT_JSON, "--id2label", config, "--out", tmp_path / "o")
    one_line(run, 3, "000000142238.pt", "label 0 ('pedestrian') matches no category name")


def test_hf_id_with_two_labels_from_transformers_reusing_a_fused_id(sample):
    """transformers resets its running id when a fused label reappears: the next segment reuses an id."""
    pytest.importorskip("transformers")
    cats, _ = sample
    index = contiguous(cats)
    ids = np.zeros((40, 40), np.uint32)
    ids[:20] = 1            # sky (stuff, fused), first query
    ids[20:, :20] = 2       # person
    ids[20:, 20:] = 3       # sky again, as a second query of the fused label
    segs = [{"id": 1, "category_id": 187}, {"id": 2, "category_id": 1}, {"id": 3, "category_id": 187}]
    car = np.zeros((40, 40), bool)
    car[30:, 30:] = True
    ids[car] = 0
    result = hf_result(ids, segs, cats, extra_queries=[(index[3], car)])    # a car after the repeated sky
    labels_of = {}
    for s in result["segments_info"]:
        labels_of.setdefault(s["id"], set()).add(s["label_id"])
    assert any(len(v) > 1 for v in labels_of.values())     # transformers' own output carries the collision
    with pytest.raises(InvalidInputError, match="is listed with two labels"):
        from_hf(result, cats, ConvertOptions(id2label=id2label(cats)))


def test_hf_no_segment_result_is_all_void(sample):
    import torch

    cats, _ = sample
    ids, segments = from_hf({"segmentation": torch.full((5, 7), -1.0), "segments_info": []}, cats,
                            ConvertOptions(id2label=id2label(cats)))
    assert ids.shape == (5, 7) and not ids.any() and segments == []


def test_size_differing_from_images_json_and_nothing_half_written(tmp_path, sample):
    cats, images = sample
    folder = tmp_path / "pred"
    folder.mkdir()
    for k, (stem, ids, segs) in enumerate(images):
        pan = mmdet_map(ids, segs, cats)
        np.save(folder / f"{stem}.npy", pan[:-1] if k == 1 else pan)      # the second map is one row short
    out = tmp_path / "out"
    run = prn("convert", folder, "--from", "mmdet", "--categories", GT_JSON, "--images-json", GT_JSON, "--out", out)
    one_line(run, 3, "000000439180.npy", "map is 640x359", "640x360")
    assert not out.exists()                 # the first image's PNG was removed again, no JSON


def test_label_outside_the_categories_mmdet(tmp_path, sample):
    cats, images = sample
    stem, ids, segs = images[0]
    pan = mmdet_map(ids, segs, cats)
    pan[0, 0] = 150 + 1000                          # a label past the 133 classes (void is 133)
    np.save(tmp_path / f"{stem}.npy", pan)
    run = prn("convert", tmp_path / f"{stem}.npy", "--from", "mmdet", "--categories", GT_JSON, "--out", tmp_path / "o")
    one_line(run, 3, f"{stem}.npy", "label 150 is outside the 133 categories")


def test_unknown_category_in_a_2ch_png(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 12                                # 12 is no COCO panoptic category id
    Image.fromarray(rgb).save(tmp_path / "1.png")
    run = prn("convert", tmp_path / "1.png", "--from", "2ch", "--categories", GT_JSON, "--out", tmp_path / "o")
    one_line(run, 3, "1.png", "category id 12 is not in the categories")


def test_detectron2_isthing_disagreeing_with_the_label_map(sample):
    """PanopticFPN's separated labels read as combined ones: thing 0 is person but stuff 1 is 'bicycle', a
    thing; the isthing flag catches it and says which label map fits."""
    import torch

    cats, _ = sample
    ids = torch.zeros((4, 4), dtype=torch.int32)
    ids[:2] = 1
    ids[2:] = 2
    pair = (ids, [{"id": 1, "isthing": True, "category_id": 0}, {"id": 2, "isthing": False, "category_id": 1}])
    with pytest.raises(InvalidInputError, match="--label-map separated"):
        from_detectron2(pair, cats, where="x.pt")
    got, segments = from_detectron2(pair, cats, ConvertOptions(label_map="separated"))
    assert [s["category_id"] for s in segments] == [1, 92]        # person; the first stuff category (banner)


@pytest.mark.parametrize("content,problem", [
    (b"not a torch file", "cannot be loaded"),
    (None, "is not detectron2's panoptic_seg pair"),
])
def test_files_not_of_the_declared_format(tmp_path, content, problem):
    import torch

    path = tmp_path / "1.pt"
    if content is None:
        torch.save({"segmentation": torch.zeros(2, 2)}, path)        # a transformers dict given as detectron2
    else:
        path.write_bytes(content)
    run = prn("convert", path, "--from", "detectron2", "--categories", GT_JSON, "--out", tmp_path / "o")
    one_line(run, 3, "1.pt", problem)


def test_pt_that_runs_code_is_refused(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "1.pt"
    path.write_bytes(pickle.dumps(Payload()))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"id2label": {"0": "person"}}))
    run = prn("convert", path, "--from", "hf", "--categories", GT_JSON, "--id2label", config, "--out", tmp_path / "o")
    one_line(run, 3, "1.pt", "weights_only=True")
    assert "ran" not in run.stdout


def test_cityscapes_to_from_coco_categories_is_refused(tmp_path):
    run = prn("convert", GT_JSON, "--to", "cityscapes", "--out", tmp_path / "o")
    one_line(run, 3, "category 1 ('person') is not a Cityscapes labelId (labelId 1 is 'ego vehicle')")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--from", "yolo"], "unknown format 'yolo'"),
    (["--from", "mmdet"], "needs --categories"),
    (["--from", "hf", "--categories", GT_JSON], "--label-map name needs --id2label"),
    (["--from", "2ch", "--to", "2ch"], "either --from"),
    (["--from", "divisor", "--categories", GT_JSON, "--label-map", "names"], "--label-map must be one of"),
])
def test_usage_mistakes_exit_2(tmp_path, args, fragment):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "1.npy", np.zeros((2, 2), np.int32))
    (tmp_path / "in" / "1.pt").write_bytes(b"")
    run = prn("convert", tmp_path / "in", *args, "--out", tmp_path / "o")
    one_line(run, 2, fragment)


def test_existing_output_needs_overwrite(tmp_path):
    from convert_helpers import TWO_CHANNEL_DIR

    args = ["convert", TWO_CHANNEL_DIR, "--from", "2ch", "--categories", GT_JSON, "--out", tmp_path / "o"]
    assert prn(*args).returncode == 0
    one_line(prn(*args), 2, "--overwrite")
    assert prn(*args, "--overwrite").returncode == 0
