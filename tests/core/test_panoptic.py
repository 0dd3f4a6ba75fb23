"""The COCO panoptic format layer: ids <-> RGB, round trips, set addressing, atomic writing, validation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import CATEGORIES, COCO_SAMPLE, scene, write_set
from prn_cli.errors import InvalidInputError, OutputExistsError
from prn_cli.panoptic import (PanopticWriter, id2rgb, load_set, read_id_png, resolve_set, rgb2id, segment_stats,
                              set_paths, validate_set)


def test_rgb_id_encoding_matches_the_coco_formula():
    rgb = np.array([[[1, 2, 3], [255, 255, 255], [0, 0, 0]]], dtype=np.uint8)
    assert rgb2id(rgb).tolist() == [[1 + 2 * 256 + 3 * 65536, 256 ** 3 - 1, 0]]
    ids = np.random.default_rng(0).integers(0, 256 ** 3, size=(7, 5))
    assert (rgb2id(id2rgb(ids)) == ids).all()
    assert id2rgb(np.array([[0x030201]])).tolist() == [[[1, 2, 3]]]
    with pytest.raises(ValueError):
        id2rgb(np.array([[256 ** 3]]))


def test_segment_stats_area_and_bbox():
    ids = np.zeros((6, 8), dtype=np.uint32)
    ids[1:4, 2:7] = 5
    ids[5, 0] = 9
    assert segment_stats(ids) == {5: (15, [2, 1, 5, 3]), 9: (1, [0, 5, 1, 1])}


def test_round_trip_keeps_ids_categories_and_computes_area_bbox(tmp_path):
    ids, segs = scene()
    json_path = write_set(tmp_path / "set.json", tmp_path / "set", [(ids, segs)])
    pset = load_set(json_path)
    assert pset.png_dir == tmp_path / "set"
    assert pset.categories == CATEGORIES
    ann = pset.annotations[0]
    assert ann["file_name"] == "000001.png"
    assert (pset.read_ids(ann) == ids).all()
    by_id = {s["id"]: s for s in ann["segments_info"]}
    assert by_id[11]["area"] == 36 and by_id[11]["bbox"] == [3, 14, 6, 6]
    assert by_id[12]["area"] == int(((np.mgrid[:24, :32][0] - 17) ** 2 + (np.mgrid[:24, :32][1] - 22) ** 2 <= 9).sum())
    assert all(s["iscrowd"] == 0 for s in ann["segments_info"])
    assert validate_set(pset) == []


def test_real_coco_sample_reads_and_validates():
    pset = load_set(COCO_SAMPLE / "panoptic_examples.json")
    assert [a["image_id"] for a in pset.annotations] == [142238, 439180]
    assert validate_set(pset) == []
    ids = pset.read_ids(pset.annotations[0])
    assert ids.shape == (427, 640)
    seg = pset.annotations[0]["segments_info"][0]
    assert segment_stats(ids)[seg["id"]] == (seg["area"], seg["bbox"])


def test_resolve_set_layouts(tmp_path):
    ids, segs = scene()
    out_json, out_png = set_paths(tmp_path / "out")
    write_set(out_json, out_png, [(ids, segs)])
    assert resolve_set(tmp_path / "out") == (out_json, out_png)
    coco_json = tmp_path / "ds" / "annotations" / "panoptic_val.json"
    write_set(coco_json, coco_json.with_suffix(""), [(ids, segs)])
    assert resolve_set(coco_json) == (coco_json, coco_json.with_suffix(""))
    assert resolve_set(tmp_path / "ds") == (coco_json, coco_json.with_suffix(""))
    write_set(coco_json.with_name("panoptic_train.json"), coco_json.with_name("panoptic_train"), [(ids, segs)])
    with pytest.raises(InvalidInputError, match="several panoptic sets"):
        resolve_set(tmp_path / "ds")
    with pytest.raises(InvalidInputError, match="no such file"):
        resolve_set(tmp_path / "nothing")


def test_writer_refuses_existing_output_and_overwrite_replaces(tmp_path):
    ids, segs = scene()
    json_path, png_dir = set_paths(tmp_path / "out")
    write_set(json_path, png_dir, [(ids, segs)])
    with pytest.raises(OutputExistsError, match="--overwrite"):
        PanopticWriter(json_path, png_dir, CATEGORIES)
    ids2 = ids.copy()
    ids2[ids2 == 12] = 1002
    with PanopticWriter(json_path, png_dir, CATEGORIES, overwrite=True) as w:
        w.add({"id": 1, "file_name": "000001.jpg", "width": 32, "height": 24}, ids2, segs[:3])
    pset = load_set(tmp_path / "out")
    assert [s["id"] for s in pset.annotations[0]["segments_info"]] == [1001, 1002, 11]


def test_interrupted_write_leaves_no_json(tmp_path):
    ids, segs = scene()
    json_path, png_dir = set_paths(tmp_path / "out")
    with pytest.raises(RuntimeError):
        with PanopticWriter(json_path, png_dir, CATEGORIES) as w:
            w.add({"id": 1, "file_name": "a.jpg"}, ids, segs)
            raise RuntimeError("killed")
    assert (png_dir / "a.png").exists() and not json_path.exists()
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_overwrite_interrupted_removes_the_old_json_first(tmp_path):
    ids, segs = scene()
    json_path, png_dir = set_paths(tmp_path / "out")
    write_set(json_path, png_dir, [(ids, segs)])
    with pytest.raises(RuntimeError):
        with PanopticWriter(json_path, png_dir, CATEGORIES, overwrite=True):
            raise RuntimeError("killed before any PNG")
    assert not json_path.exists()


def test_writer_rejects_segments_that_disagree_with_the_ids(tmp_path):
    ids, segs = scene()
    with PanopticWriter(tmp_path / "s.json", tmp_path / "s", CATEGORIES) as w:
        with pytest.raises(ValueError, match="segments_info ids"):
            w.add({"id": 1, "file_name": "a.jpg"}, ids, segs[:2])


# ------------------------------------------------------------------------------------------------------------
# validation: every bad input gives one line naming the file and the fix


@pytest.fixture
def good_set(tmp_path):
    ids, segs = scene()
    return write_set(tmp_path / "set.json", tmp_path / "set", [(ids, segs)])


def _edit_json(json_path, edit):
    data = json.loads(json_path.read_text())
    edit(data)
    json_path.write_text(json.dumps(data))


def _one_line_error(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


@pytest.mark.parametrize("edit, needles", [
    (lambda d: d["annotations"][0]["segments_info"].pop(), ["segment id 12", "in the PNG but not in segments_info",
                                                            "add it"]),
    (lambda d: d["annotations"][0]["segments_info"].append({"id": 77, "category_id": 1}),
     ["[77]", "no pixels", "remove them"]),
    (lambda d: d["annotations"][0]["segments_info"][2].update(category_id=55), ["unknown category_id 55"]),
    (lambda d: d["annotations"][0]["segments_info"].append({"id": 11, "category_id": 1}),
     ["segment id 11 is listed twice", "unique id"]),
    (lambda d: d["images"][0].update(width=33), ["32x24", "33x24"]),
])
def test_validation_errors_name_file_image_and_fix(good_set, edit, needles):
    _edit_json(good_set, edit)
    with pytest.raises(InvalidInputError) as excinfo:
        validate_set(load_set(good_set))
    msg = _one_line_error(excinfo, *needles)
    assert str(good_set) in msg and "image 1" in msg


@pytest.mark.parametrize("edit, needles", [
    (lambda d: d["images"].append(dict(d["images"][0], file_name="other.jpg")),
     ["image id 1 is used by two image records ('000001.jpg' and 'other.jpg')", "unique id"]),
    (lambda d: d["images"].append({"file_name": "x.jpg"}), ["images[1] lacks 'id'"]),
    (lambda d: d.update(images={"id": 1}), ["'images' is not a list"]),
])
def test_image_records_are_checked_when_the_set_is_read(good_set, edit, needles):
    _edit_json(good_set, edit)
    with pytest.raises(InvalidInputError) as excinfo:
        load_set(good_set, need_categories=False)
    assert _one_line_error(excinfo, *needles).startswith(str(good_set))


def test_area_disagreement_is_a_warning(good_set):
    _edit_json(good_set, lambda d: d["annotations"][0]["segments_info"][2].update(area=5))
    warnings = validate_set(load_set(good_set))
    assert len(warnings) == 1 and "area 5" in warnings[0] and "36 pixels" in warnings[0]


@pytest.mark.parametrize("file_name", ["../escape.png", "/etc/passwd", "a/../../b.png", "..\\x.png"])
def test_file_name_escaping_its_folder_is_refused(good_set, file_name):
    _edit_json(good_set, lambda d: d["annotations"][0].update(file_name=file_name))
    with pytest.raises(InvalidInputError) as excinfo:
        load_set(good_set)
    _one_line_error(excinfo, str(good_set), "escapes its folder")


def test_malformed_json(tmp_path):
    bad = tmp_path / "bad.json"
    (tmp_path / "bad").mkdir()
    bad.write_text('{"annotations": [1, 2,,]}')
    with pytest.raises(InvalidInputError) as excinfo:
        load_set(bad, need_categories=False)
    _one_line_error(excinfo, str(bad), "malformed JSON at line 1")


def test_missing_png_and_missing_folder(good_set):
    png = good_set.with_suffix("") / "000001.png"
    png.unlink()
    with pytest.raises(InvalidInputError) as excinfo:
        validate_set(load_set(good_set))
    _one_line_error(excinfo, str(png), "is missing")
    shutil.rmtree(good_set.with_suffix(""))
    with pytest.raises(InvalidInputError) as excinfo:
        load_set(good_set)
    _one_line_error(excinfo, "PNG folder", "does not exist")


def _resave(png, convert):
    ids = read_id_png(png)
    convert(id2rgb(ids), png)


@pytest.mark.parametrize("writer, needles", [
    (lambda rgb, p: Image.fromarray(rgb).convert("P").save(p, format="PNG"), ["palette", "8-bit RGB"]),
    (lambda rgb, p: Image.fromarray(rgb[..., 0]).save(p, format="PNG"), ["grayscale", "8-bit RGB"]),
    (lambda rgb, p: Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(p, format="PNG"),
     ["16-bit grayscale"]),
    (lambda rgb, p: Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])).save(p, format="PNG"),
     ["alpha channel"]),
    (lambda rgb, p: Image.fromarray(rgb).save(p, format="JPEG"), ["JPEG", "lossy saving"]),
    (lambda rgb, p: p.write_bytes(p.read_bytes()[:60]), ["cannot be decoded", "corrupt or truncated"]),
    (lambda rgb, p: p.write_bytes(b"hello, not an image"), ["not a PNG"]),
])
def test_png_that_is_not_8bit_rgb_is_refused(good_set, writer, needles):
    png = good_set.with_suffix("") / "000001.png"
    _resave(png, writer)
    with pytest.raises(InvalidInputError) as excinfo:
        read_id_png(png)
    _one_line_error(excinfo, str(png), *needles)


def test_16bit_rgb_png_is_refused(good_set):
    # Pillow cannot write 48-bit RGB, so patch the IHDR bit depth of a valid file: the header alone decides.
    png = good_set.with_suffix("") / "000001.png"
    data = bytearray(png.read_bytes())
    assert data[12:16] == b"IHDR" and data[24] == 8
    data[24] = 16
    png.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError) as excinfo:
        read_id_png(png)
    _one_line_error(excinfo, "16-bit RGB")


def test_opaque_rgba_is_accepted(good_set):
    png = good_set.with_suffix("") / "000001.png"
    ids = read_id_png(png)
    rgba = np.dstack([id2rgb(ids), np.full(ids.shape, 255, np.uint8)])
    Image.fromarray(rgba).save(png, format="PNG")
    assert (read_id_png(png) == ids).all()


def test_written_json_has_ordinary_permissions(tmp_path):
    import os
    ids, segs = scene()
    old = os.umask(0o022)
    try:
        json_path = write_set(tmp_path / "s.json", tmp_path / "s", [(ids, segs)])
    finally:
        os.umask(old)
    assert json_path.stat().st_mode & 0o777 == 0o644


def test_prediction_categories_are_checked_when_present(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p.json").write_text(json.dumps({"annotations": [], "categories": [{"name": "no id"}]}))
    with pytest.raises(InvalidInputError, match=r"categories\[0\] lacks 'id'"):
        load_set(tmp_path / "p.json", need_categories=False)
    (tmp_path / "p.json").write_text(json.dumps({"annotations": [], "categories": [{"id": 3}]}))
    assert load_set(tmp_path / "p.json", need_categories=False).categories == [{"id": 3}]


def test_overwrite_removes_the_replaced_sets_pngs(tmp_path):
    ids, segs = scene()
    json_path, png_dir = set_paths(tmp_path / "out")
    write_set(json_path, png_dir, [(ids, segs), (ids, segs), (ids, segs)])
    (png_dir / "user-notes.txt").write_text("not ours")
    with PanopticWriter(json_path, png_dir, CATEGORIES, overwrite=True) as w:
        w.add({"id": 1, "file_name": "000001.jpg"}, ids, segs)
    assert sorted(p.name for p in png_dir.iterdir()) == ["000001.png", "user-notes.txt"]
