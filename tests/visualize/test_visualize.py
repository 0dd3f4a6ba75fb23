"""prn viz: colours, blending, boundaries, labels, panels, the output folder, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import CATEGORIES, COCO_SAMPLE, scene
from prn_cli.errors import InvalidInputError, OutputExistsError
from prn_cli.panoptic import category_dict, load_set
from prn_cli.visualize import (NEUTRAL_BACKGROUND, VizOptions, category_color, compose_panel, instance_color,
                               render_overlay, visualize)

CATS = {c["id"]: c for c in CATEGORIES}
PLAIN = VizOptions(boundaries=False)


def png(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def two_squares(h: int = 40, w: int = 60) -> tuple[np.ndarray, list[dict]]:
    """Two instances of category 1 (ids 11, 13) and one of category 2 (id 12) on void."""
    ids = np.zeros((h, w), dtype=np.uint32)
    ids[5:20, 5:20] = 11
    ids[5:20, 25:40] = 13
    ids[25:35, 5:50] = 12
    return ids, [{"id": 11, "category_id": 1}, {"id": 13, "category_id": 1}, {"id": 12, "category_id": 2}]


def interior(ids: np.ndarray, sid: int) -> tuple[int, int]:
    """A pixel of ``sid`` whose 8 neighbours all belong to ``sid`` (first in raster order)."""
    m = ids == sid
    core = m.copy()
    core[1:-1, 1:-1] &= m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:] & m[:-2, :-2] & m[2:, 2:]
    core[[0, -1], :] = False
    core[:, [0, -1]] = False
    ys, xs = np.nonzero(core)
    return int(ys[0]), int(xs[0])


def outputs(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------------------
# colours


def test_instance_colors_are_stable_and_well_spread():
    assert instance_color(11) == instance_color(11) == (lambda: instance_color(11))()
    colors = [instance_color(i) for i in range(1, 13)]
    assert len(set(colors)) == 12
    spread = min(sum(abs(a - b) for a, b in zip(c1, c2)) for k, c1 in enumerate(colors) for c2 in colors[k + 1:])
    assert spread >= 30
    # Saturated and bright enough to stand apart from the neutral grey background.
    for c in colors:
        assert max(c) - min(c) >= 60


def test_category_color_uses_the_color_field_else_a_stable_fallback():
    assert category_color(CATS[1]) == (200, 30, 30)
    no_color = category_dict(7, "blob", True)
    assert category_color(no_color) == category_color(dict(no_color)) != NEUTRAL_BACKGROUND
    assert category_color({"id": 7, "name": "x", "color": [300, 0, 0]}) == category_color(no_color)


# --------------------------------------------------------------------------------------------------------------
# overlays


def test_instance_mode_separates_instances_category_mode_uses_category_color():
    ids, segs = two_squares()
    inst = render_overlay(None, ids, segs, CATS, PLAIN)
    cat = render_overlay(None, ids, segs, CATS, VizOptions(color_by="category", boundaries=False))
    a, b, c = interior(ids, 11), interior(ids, 13), interior(ids, 12)
    assert tuple(inst[a]) == instance_color(11)
    assert tuple(inst[b]) == instance_color(13)
    assert tuple(inst[a]) != tuple(inst[b])
    assert tuple(cat[a]) == tuple(cat[b]) == (200, 30, 30)
    assert tuple(cat[c]) == (30, 200, 30)
    # Without boundaries every pixel of a segment has its colour; void is the neutral background.
    assert (inst[ids == 11] == instance_color(11)).all()
    assert (inst[ids == 0] == NEUTRAL_BACKGROUND).all()
    assert (cat[ids == 0] == NEUTRAL_BACKGROUND).all()
    assert inst.shape == (40, 60, 3) and inst.dtype == np.uint8


def test_panoptic_mode_colours_stuff_by_category_and_things_by_instance():
    ids, segs = two_squares()
    segs = [{"id": 11, "category_id": 1}, {"id": 13, "category_id": 101}, {"id": 12, "category_id": 101}]
    out = render_overlay(None, ids, segs, CATS, VizOptions(color_by="panoptic", boundaries=False))
    assert tuple(out[interior(ids, 11)]) == instance_color(11)                      # a thing: its segment id
    assert tuple(out[interior(ids, 13)]) == tuple(out[interior(ids, 12)]) == (70, 130, 180)  # sky: its colour
    with pytest.raises(InvalidInputError, match="unknown category_id 7"):
        render_overlay(None, ids, [*segs[:2], {"id": 12, "category_id": 7}], CATS, VizOptions(color_by="panoptic"))


def test_blending_over_a_photo_keeps_void_pixels_exact():
    ids, segs = two_squares()
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=ids.shape + (3,), dtype=np.uint8)
    full = render_overlay(photo, ids, segs, CATS, VizOptions(alpha=1.0, boundaries=False))
    none = render_overlay(photo, ids, segs, CATS, VizOptions(alpha=0.0, boundaries=False))
    half = render_overlay(photo, ids, segs, CATS, VizOptions(alpha=0.5, boundaries=False))
    assert (full[ids == 11] == instance_color(11)).all()
    assert (none == photo).all()
    for out in (full, half):
        assert (out[ids == 0] == photo[ids == 0]).all()
    expected = (photo[ids == 13].astype(int) + np.array(instance_color(13))) / 2
    assert np.abs(half[ids == 13] - expected).max() <= 1
    # Grey photos are accepted.
    grey = render_overlay(photo[..., 0], ids, segs, CATS, VizOptions(alpha=0.0, boundaries=False))
    assert (grey == photo[..., :1]).all()


def test_boundaries_lie_exactly_on_segment_borders():
    ids = np.zeros((20, 30), dtype=np.uint32)
    ids[2:18, 2:14] = 1
    ids[2:18, 14:26] = 2
    segs = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}]
    white = VizOptions(boundary_color=(255, 255, 255))
    lined = render_overlay(None, ids, segs, CATS, white)
    plain = render_overlay(None, ids, segs, CATS, PLAIN)
    changed = (lined != plain).any(axis=2)
    expected = np.zeros_like(changed)
    for y in range(20):
        for x in range(30):
            if ids[y, x] == 0:
                continue
            neighbours = [ids[y + dy, x + dx] for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
                          if 0 <= y + dy < 20 and 0 <= x + dx < 30]
            expected[y, x] = any(n != ids[y, x] for n in neighbours)
    assert (changed == expected).all()
    assert (lined[expected] == 255).all()
    # Both sides of the segment/segment border, only the segment side of a segment/void border.
    assert changed[10, 13] and changed[10, 14] and not changed[10, 12] and not changed[10, 15]
    assert changed[10, 2] and not changed[10, 1] and tuple(lined[10, 1]) == NEUTRAL_BACKGROUND
    assert tuple(lined[10, 7]) == instance_color(1)


def test_labels_only_for_segments_at_or_above_the_area_threshold():
    ids = np.zeros((120, 200), dtype=np.uint32)
    ids[20:100, 10:90] = 11  # 6400 px
    ids[100:110, 180:190] = 12  # 100 px, far from the big one
    segs = [{"id": 11, "category_id": 1}, {"id": 12, "category_id": 2}]

    def draw(**kw):
        return render_overlay(None, ids, segs, CATS, VizOptions(labels=True, **kw))

    off = render_overlay(None, ids, segs, CATS, VizOptions())
    all_labels, big_only, none = draw(area_threshold=0), draw(area_threshold=101), draw(area_threshold=10 ** 6)
    assert (none == off).all()
    big_diff = (big_only != off).any(axis=2)
    assert big_diff.any()
    ys, xs = np.nonzero(big_diff)
    assert xs.max() < 120  # the label of segment 11 stays around segment 11
    small_diff = (all_labels != big_only).any(axis=2)
    ys, xs = np.nonzero(small_diff)
    assert len(ys) > 0 and xs.min() >= 120 and ys.min() >= 60  # a second label, around segment 12
    # The text box darkens; the text inside it is light.
    region = all_labels[small_diff]
    assert region.min() < 60 and region.max() > 200
    assert draw(area_threshold=100).tobytes() == all_labels.tobytes()


def test_crowd_regions_are_hatched():
    ids, segs = two_squares()
    segs[0]["iscrowd"] = 1
    out = render_overlay(None, ids, segs, CATS, PLAIN)
    crowd_colors = {tuple(c) for c in out[ids == 11]}
    assert len(crowd_colors) == 2 and instance_color(11) in crowd_colors
    assert {tuple(c) for c in out[ids == 13]} == {instance_color(13)}
    flat = render_overlay(None, ids, segs, CATS, VizOptions(boundaries=False, hatch_crowd=False))
    assert (flat[ids == 11] == instance_color(11)).all()


def test_render_overlay_errors():
    ids, segs = two_squares()
    with pytest.raises(InvalidInputError, match="segment id 13 is in the PNG but not in segments_info"):
        render_overlay(None, ids, segs[:1] + segs[2:], CATS, PLAIN, source="x.json: image 1")
    bad = [dict(s, category_id=999) if s["id"] == 12 else s for s in segs]
    with pytest.raises(InvalidInputError, match="segment 12 has unknown category_id 999"):
        render_overlay(None, ids, bad, CATS, VizOptions(color_by="category"))
    with pytest.raises(ValueError):
        VizOptions(alpha=1.5)
    with pytest.raises(ValueError):
        VizOptions(color_by="class")


# --------------------------------------------------------------------------------------------------------------
# panels


def test_panel_width_is_the_sum_of_tiles_plus_padding_and_titles_are_drawn():
    rng = np.random.default_rng(1)
    tiles = [rng.integers(0, 256, size=(60, w, 3), dtype=np.uint8) for w in (80, 100)]
    tiles.append(rng.integers(0, 256, size=(40, 80, 3), dtype=np.uint8))
    panel = compose_panel(tiles, ["image", "base", ""], padding=5)
    bar = panel.shape[0] - 60
    assert panel.shape == (bar + 60, 80 + 100 + 80 + 2 * 5, 3)
    assert bar >= 12
    assert (panel[bar:, :80] == tiles[0]).all()
    assert (panel[bar:, 85:185] == tiles[1]).all()
    assert (panel[bar:bar + 40, 190:] == tiles[2]).all()
    assert (panel[bar + 40:, 190:] == 255).all()  # a shorter tile sits on white
    assert (panel[:, 80:85] == 255).all()  # the gap
    assert len(np.unique(panel[:bar, :80].reshape(-1, 3), axis=0)) > 2  # "image" is written
    assert len(np.unique(panel[:bar, 190:].reshape(-1, 3), axis=0)) == 1  # an empty title is a plain bar
    assert compose_panel(tiles, ["image", "base", ""], padding=0).shape[1] == 260
    assert compose_panel(tiles, ["a", "b", "c"], title_height=30).shape[0] == 90


# --------------------------------------------------------------------------------------------------------------
# the command


def relabelled(ids: np.ndarray, segs: list[dict], old: int, new: int):
    ids = ids.copy()
    ids[ids == old] = new
    return ids, [dict(s, id=new) if s["id"] == old else s for s in segs]


@pytest.fixture
def gt_pred(make_set):
    """GT with two images; the prediction keeps segment 11 and gives the disc (12) the id 77."""
    a = scene()
    b = scene(30, 40)
    gt = load_set(make_set("gt", [a, b]))
    pred = load_set(make_set("pred", [relabelled(*a, 12, 77), relabelled(*b, 12, 77)], categories=[]),
                    need_categories=False)
    return gt, pred


def test_visualize_writes_overlays_panels_and_gallery(gt_pred, tmp_path):
    gt, pred = gt_pred
    out = tmp_path / "viz"
    calls = []
    summary = visualize([("base", pred), ("ground truth", gt)], out, html=True,
                        progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 2), (1, 2), (2, 2)]
    assert summary["images"] == 2 and summary["overlays"] == 4 and summary["panels"] == 2
    assert summary["files_written"] == 7 and summary["out_dir"] == str(out)
    files = set(outputs(out))
    assert files == {"base/000001.png", "base/000002.png", "ground_truth/000001.png", "ground_truth/000002.png",
                     "panels/000001.png", "panels/000002.png", "index.html", "viz.json"}
    assert json.loads((out / "viz.json").read_text())["images"] == [1, 2]

    page = (out / "index.html").read_text()
    for rel in ("panels/000001.png", "panels/000002.png"):
        assert f'src="{rel}"' in page and f'href="{rel}"' in page
    assert "image 1" in page and "image 2" in page
    assert "http" not in page and "<script" not in page and "/tmp" not in page

    ids, _ = scene()
    panel = png(out / "panels/000001.png")
    bar = panel.shape[0] - 24
    pad = VizOptions().padding
    assert panel.shape[1] == 32 + 32 + pad
    base, truth = panel[bar:, :32], panel[bar:, 32 + pad:]
    assert (base == png(out / "base/000001.png")).all() and (truth == png(out / "ground_truth/000001.png")).all()
    y, x = interior(ids, 11)
    assert tuple(base[y, x]) == tuple(truth[y, x]) == instance_color(11)  # same id, same colour in each tile
    y, x = interior(ids, 12)
    assert tuple(base[y, x]) == instance_color(77) and tuple(truth[y, x]) == instance_color(12)
    assert len(np.unique(panel[:bar, :32].reshape(-1, 3), axis=0)) > 2  # titles drawn
    assert png(out / "panels/000002.png").shape[1] == 40 + 40 + pad


def test_two_runs_write_byte_identical_files(gt_pred, tmp_path):
    gt, pred = gt_pred
    options = VizOptions(labels=True, area_threshold=0, label_font_size=10)
    first = visualize([("base", pred), ("gt", gt)], tmp_path / "one", options=options, html=True)
    second = visualize([("base", pred), ("gt", gt)], tmp_path / "two", options=options, html=True)
    assert first["files_written"] == second["files_written"] == 7
    one, two = outputs(tmp_path / "one"), outputs(tmp_path / "two")
    one.pop("viz.json"), two.pop("viz.json")
    assert one == two and len(one) == 7


def test_single_set_without_photos_writes_overlays_only(gt_pred, tmp_path):
    gt, _ = gt_pred
    summary = visualize([("gt", gt)], tmp_path / "viz", html=True)
    assert summary["panels"] == 0
    assert set(outputs(tmp_path / "viz")) == {"gt/000001.png", "gt/000002.png", "index.html", "viz.json"}
    assert 'src="gt/000001.png"' in (tmp_path / "viz/index.html").read_text()


def test_photos_are_found_and_drawn_under_the_overlay(gt_pred, tmp_path):
    gt, pred = gt_pred
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(2)
    photo1 = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    photo2 = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    # Lossless photos, so pixels can be compared exactly. Image 1 through its record's file_name,
    # image 2 through the PNG stem (its record names a file that does not exist).
    Image.fromarray(photo1).save(photos / "000001.jpg", format="PNG")
    Image.fromarray(photo2).save(photos / "000002.png")
    gt.images[1]["file_name"] = "elsewhere.jpg"
    summary = visualize([("gt", gt)], tmp_path / "viz", images_dir=photos)
    assert summary["panels"] == 2
    ids, _ = scene()
    panel = png(tmp_path / "viz/panels/000001.png")
    bar = panel.shape[0] - 24
    assert (panel[bar:, :32] == photo1).all()  # the image tile
    overlay = png(tmp_path / "viz/gt/000001.png")
    y, x = interior(ids, 11)
    expected = (photo1[y, x].astype(int) * (256 - 141) + np.array(instance_color(11)) * 141 + 128) >> 8
    assert tuple(overlay[y, x]) == tuple(expected)
    assert (png(tmp_path / "viz/panels/000002.png")[-30:, :40] == photo2).all()


def test_photo_size_mismatch_names_both_files(gt_pred, tmp_path):
    gt, _ = gt_pred
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((20, 32, 3), dtype=np.uint8)).save(photos / "000001.jpg")
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(photos / "000002.jpg")
    with pytest.raises(InvalidInputError) as err:
        visualize([("gt", gt)], tmp_path / "viz", images_dir=photos)
    message = str(err.value)
    assert "000001.jpg is 32x20" in message and str(gt.png_dir / "000001.png") in message and "32x24" in message
    assert "\n" not in message


def test_missing_photo_is_reported_before_drawing(gt_pred, tmp_path):
    gt, _ = gt_pred
    (tmp_path / "photos").mkdir()
    with pytest.raises(InvalidInputError, match="no photo for image 1 .and 1 more"):
        visualize([("gt", gt)], tmp_path / "viz", images_dir=tmp_path / "photos")
    assert not (tmp_path / "viz").exists()


def test_refuses_to_overwrite_unless_asked_and_removes_stale_files(gt_pred, tmp_path):
    gt, pred = gt_pred
    out = tmp_path / "viz"
    visualize([("base", pred), ("gt", gt)], out)
    before = outputs(out)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        visualize([("base", pred), ("gt", gt)], out)
    assert outputs(out) == before
    visualize([("base", pred), ("gt", gt)], out, limit=1, overwrite=True)
    assert set(outputs(out)) == {"base/000001.png", "gt/000001.png", "panels/000001.png", "viz.json"}
    visualize([("gt", gt)], out, limit=1, overwrite=True)
    assert set(outputs(out)) == {"gt/000001.png", "viz.json"} and not (out / "base").exists()
    # Leftovers of an interrupted run (no viz.json yet) are protected too.
    (out / "viz.json").unlink()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        visualize([("base", pred), ("gt", gt)], out)


def test_a_run_stopped_midway_leaves_no_overlays_without_their_manifest(gt_pred, tmp_path, monkeypatch):
    # issue 10, problem 11: viz stopping midway left overlays without viz.json (and a rerun then needed --overwrite)
    import prn_cli.visualize.core as core

    gt, pred = gt_pred
    out = tmp_path / "viz"
    real = core._write_panel
    calls = {"n": 0}

    def stops_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "_write_panel", stops_on_second)
    with pytest.raises(KeyboardInterrupt):
        visualize([("base", pred), ("gt", gt)], out, html=True)
    assert outputs(out) == {} and [p for p in out.rglob("*")] == []
    monkeypatch.setattr(core, "_write_panel", real)
    summary = visualize([("base", pred), ("gt", gt)], out, html=True)      # a plain rerun writes it all
    assert summary["panels"] == 2 and "viz.json" in outputs(out) and len(outputs(out)) == 8


def test_never_writes_into_an_input_folder(gt_pred, tmp_path):
    gt, _ = gt_pred
    before = outputs(gt.png_dir)
    with pytest.raises(InvalidInputError, match="input folder"):
        visualize([("gt", gt)], tmp_path, overwrite=True)
    assert outputs(gt.png_dir) == before


def test_a_set_lacking_an_image_gets_a_missing_tile(make_set, tmp_path):
    a, b = scene(), scene()
    gt = load_set(make_set("gt", [a, b]))
    pred = load_set(make_set("pred", [a]))
    summary = visualize([("gt", gt), ("pred", pred)], tmp_path / "viz")
    assert summary["sets"] == [{"title": "gt", "folder": "gt", "missing": 0},
                               {"title": "pred", "folder": "pred", "missing": 1}]
    assert not (tmp_path / "viz/pred/000002.png").exists()
    panel = png(tmp_path / "viz/panels/000002.png")
    tile = panel[-24:, 32 + VizOptions().padding:]
    assert len(np.unique(tile.reshape(-1, 3), axis=0)) > 2  # "missing" written on it


def test_unknown_category_names_json_image_and_segment_and_writes_nothing(make_set, tmp_path):
    ids, segs = scene()
    gt = load_set(make_set("gt", [(ids, segs), (ids, segs)]))
    bad = [dict(s, category_id=999) if s["id"] == 12 else s for s in segs]
    pred = load_set(make_set("pred", [(ids, segs), (ids, bad)], categories=[]), need_categories=False)
    with pytest.raises(InvalidInputError) as err:
        visualize([("pred", pred), ("gt", gt)], tmp_path / "viz")
    message = str(err.value)
    assert str(pred.json_path) in message and "image 2" in message and "segment 12" in message
    assert "999" in message and str(gt.json_path) in message
    assert not (tmp_path / "viz").exists()


def test_category_mode_needs_a_set_with_categories(gt_pred, tmp_path):
    _, pred = gt_pred
    with pytest.raises(InvalidInputError, match="no set lists categories"):
        visualize([("pred", pred)], tmp_path / "viz", options=VizOptions(color_by="category"))
    assert visualize([("pred", pred)], tmp_path / "viz")["overlays"] == 2  # instance colours need none


def test_image_ids_and_limit_select_images(gt_pred, tmp_path):
    gt, _ = gt_pred
    assert visualize([("gt", gt)], tmp_path / "a", image_ids=["2"])["images"] == 1
    assert set(outputs(tmp_path / "a")) == {"gt/000002.png", "viz.json"}
    assert visualize([("gt", gt)], tmp_path / "b", image_ids=["000001", 2], limit=1)["images"] == 1
    assert (tmp_path / "b/gt/000001.png").exists()
    with pytest.raises(InvalidInputError, match="no annotation for image 5"):
        visualize([("gt", gt)], tmp_path / "c", image_ids=[5])


def test_coco_sample_without_photos(tmp_path):
    pset = load_set(COCO_SAMPLE / "panoptic_examples.json")
    summary = visualize([("coco", pset)], tmp_path / "viz", options=VizOptions(color_by="category"))
    assert summary["images"] == 2 and summary["overlays"] == 2 and summary["panels"] == 0
    cats = pset.categories_by_id
    for ann in pset.annotations:
        ids = pset.read_ids(ann)
        out = png(tmp_path / "viz/coco" / ann["file_name"])
        assert out.shape == ids.shape + (3,)
        assert (out[ids == 0] == NEUTRAL_BACKGROUND).all()
        for seg in ann["segments_info"]:
            if not seg["iscrowd"] and seg["area"] > 500:
                assert (out[interior(ids, seg["id"])] == cats[seg["category_id"]]["color"]).all()
        labelled = render_overlay(None, ids, ann["segments_info"], cats, VizOptions(color_by="category",
                                                                                      labels=True))
        assert (labelled != out).any()


def test_importing_visualize_stays_light():
    code = ("import sys, prn_cli.visualize; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'scipy', 'cv2') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_set_titles_become_safe_distinct_folder_names(gt_pred, tmp_path):
    gt, pred = gt_pred
    summary = visualize([("panels", pred), ("../a b", gt), ("A_B", gt)], tmp_path / "viz", limit=1)
    assert [s["folder"] for s in summary["sets"]] == ["panels-2", "a_b", "A_B-2"]
    assert set(outputs(tmp_path / "viz")) == {"panels-2/000001.png", "a_b/000001.png", "A_B-2/000001.png",
                                              "panels/000001.png", "viz.json"}


def test_gallery_heading_names_the_panel_columns_photo_included(gt_pred, tmp_path):
    from PIL import Image

    gt, pred = gt_pred
    photos = tmp_path / "photos"
    photos.mkdir()
    for k, (h, w) in enumerate([(24, 32), (30, 40)], start=1):
        Image.fromarray(np.zeros((h, w, 3), dtype=np.uint8)).save(photos / f"{k:06d}.jpg")
    visualize([("base", pred), ("ground truth", gt)], tmp_path / "viz", images_dir=photos, html=True)
    assert "<h1>prn viz: image | base | ground truth</h1>" in (tmp_path / "viz/index.html").read_text()
    visualize([("base", pred), ("ground truth", gt)], tmp_path / "viz2", html=True)
    assert "<h1>prn viz: base | ground truth</h1>" in (tmp_path / "viz2/index.html").read_text()


def test_default_titles_call_a_datasets_own_annotations_ground_truth(tmp_path):
    from conftest import write_set
    from prn_cli.visualize.selection import default_titles

    image = [scene()]
    gt = load_set(write_set(tmp_path / "annotations/panoptic_val.json", tmp_path / "annotations/panoptic_val", image))
    base = load_set(write_set(tmp_path / "base/panoptic.json", tmp_path / "base/panoptic", image))
    other = load_set(write_set(tmp_path / "annotations/panoptic_train.json", tmp_path / "annotations/panoptic_train",
                               image))
    assert default_titles([base, gt]) == ["base", "ground truth"]
    assert default_titles([gt, other]) == ["panoptic_val", "panoptic_train"]   # two datasets: their names
