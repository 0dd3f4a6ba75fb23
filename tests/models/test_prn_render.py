"""PRN renderer: centroids, offsets, box distances, heatmap, boundary, weights, panoptic conversion, input maps."""

from __future__ import annotations

import math

import pytest
import torch

from prn_cli.models.categories import CategoryMap
from prn_cli.models.prn import render
from prn_cli.models.prn.render import (BASE_MAP_CHANNELS, IGNORE, RenderConfig, gaussian_heatmap, input_maps,
                                       render_maps, render_panoptic)

# class 0: stuff, classes 1 and 2: things
THINGS = torch.tensor([False, True, True])


def _gauss(d2: float, sigma: float) -> float:
    return math.exp(-d2 / (2 * sigma ** 2))


def _canvas(h, w, fill=0):
    """semantic (all class ``fill``), instances (0), crowd (False)."""
    return (torch.full((h, w), fill, dtype=torch.long), torch.zeros((h, w), dtype=torch.long),
            torch.zeros((h, w), dtype=torch.bool))


# ------------------------------------------------------------------------------------ centroid, offset, box


def test_rectangle_centroid_offsets_and_box_distances():
    sem, inst, crowd = _canvas(8, 10)
    sem[2:5, 3:7] = 1          # 3 x 4 rectangle: rows 2..4, cols 3..6 -> centroid (3, 4.5)
    inst[2:5, 3:7] = 7
    cfg = RenderConfig(sigma=2.0)
    out = render_maps(sem, inst, crowd, THINGS, cfg)

    # offset = centroid - pixel
    assert out["offset"][:, 2, 3].tolist() == [1.0, 1.5]
    assert out["offset"][:, 4, 6].tolist() == [-1.0, -1.5]
    assert out["offset"][:, 3, 4].tolist() == [0.0, 0.5]
    # box (l, t, r, b) at the four corners and inside
    assert out["box"][:, 2, 3].tolist() == [0, 0, 3, 2]
    assert out["box"][:, 2, 6].tolist() == [3, 0, 0, 2]
    assert out["box"][:, 4, 3].tolist() == [0, 2, 3, 0]
    assert out["box"][:, 4, 6].tolist() == [3, 2, 0, 0]
    assert out["box"][:, 3, 5].tolist() == [2, 1, 1, 1]
    # every instance pixel recovers the same inclusive box (x - l, y - t, x + r, y + b) = (3, 2, 6, 4)
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(10.0), indexing="ij")
    m = inst > 0
    b = out["box"]
    assert torch.equal((xs - b[0])[m], torch.full((12,), 3.0))
    assert torch.equal((ys - b[1])[m], torch.full((12,), 2.0))
    assert torch.equal((xs + b[2])[m], torch.full((12,), 6.0))
    assert torch.equal((ys + b[3])[m], torch.full((12,), 4.0))
    # and every pixel's offset points at the centroid
    assert torch.equal((ys + out["offset"][0])[m], torch.full((12,), 3.0))
    assert torch.equal((xs + out["offset"][1])[m], torch.full((12,), 4.5))
    # zero outside the instance
    assert out["offset"][:, ~m].abs().sum() == 0 and out["box"][:, ~m].abs().sum() == 0
    # heatmap peaks around the fractional centroid
    assert out["center"][0, 3, 4].item() == pytest.approx(_gauss(0.25, 2.0), rel=1e-6)
    assert out["center"][0, 3, 5].item() == pytest.approx(_gauss(0.25, 2.0), rel=1e-6)
    assert out["center"][0, 0, 0].item() == pytest.approx(_gauss(9 + 4.5 ** 2, 2.0), rel=1e-5)


def test_instance_is_label_and_class_and_labels_are_arbitrary():
    sem, inst, crowd = _canvas(4, 8)
    big = 10 ** 12
    sem[:, 0:2], inst[:, 0:2] = 1, big          # label ``big`` in class 1 (cols 0..1)
    sem[:, 2:4], inst[:, 2:4] = 2, big          # same label in class 2: a different instance (cols 2..3)
    sem[:, 6:8], inst[:, 6:8] = 1, -3           # a negative label is an instance too (cols 6..7)
    out = render_maps(sem, inst, crowd, THINGS)
    assert out["offset"][1, 0, 0].item() == 0.5 and out["offset"][1, 0, 2].item() == 0.5
    assert out["offset"][1, 0, 7].item() == -0.5
    assert out["box"][:, 0, 3].tolist() == [1, 0, 0, 3]
    assert out["offset_weight"].sum().item() == 24


def test_instance_labels_on_stuff_pixels_make_no_instance():
    sem, inst, crowd = _canvas(4, 4)
    inst[:2] = 5                                 # class 0 is stuff
    out = render_maps(sem, inst, crowd, THINGS)
    assert out["center"].sum() == 0 and out["offset_weight"].sum() == 0 and out["foreground"].sum() == 0
    # but the labels still separate segments
    assert out["boundary"][0, 1:3].sum() == 8


def test_centroid_exact_on_large_image():
    # integer sums of ~1e9 are beyond float32's mantissa; the centroid must still be exact
    h, w = 512, 1024
    sem, inst, crowd = _canvas(h, w, fill=1)
    inst.fill_(1)
    out = render_maps(sem, inst, crowd, THINGS)
    assert out["offset"][:, 0, 0].tolist() == [255.5, 511.5]
    assert out["offset"][:, h - 1, w - 1].tolist() == [-255.5, -511.5]
    assert out["box"][:, 0, 0].tolist() == [0, 0, w - 1, h - 1]
    assert out["box"][:, h - 1, w - 1].tolist() == [w - 1, h - 1, 0, 0]


# ------------------------------------------------------------------------------------------------ heatmap


def test_gaussian_value_at_centre_and_at_known_distances():
    sem, inst, crowd = _canvas(9, 9)
    sem[3:6, 3:6], inst[3:6, 3:6] = 2, 1         # 3 x 3 square, centroid (4, 4)
    out = render_maps(sem, inst, crowd, THINGS, RenderConfig(sigma=2.0))
    c = out["center"][0]
    assert c[4, 4].item() == 1.0
    assert c[4, 7].item() == pytest.approx(_gauss(9, 2.0), rel=1e-6)
    assert c[0, 4].item() == pytest.approx(_gauss(16, 2.0), rel=1e-6)
    assert c[1, 2].item() == pytest.approx(_gauss(9 + 4, 2.0), rel=1e-6)
    assert c[8, 8].item() == pytest.approx(_gauss(32, 2.0), rel=1e-6)
    assert c.max().item() == 1.0


def test_default_sigma_is_eight():
    sem, inst, crowd = _canvas(1, 20)
    sem[0, 0], inst[0, 0] = 1, 1
    out = render_maps(sem, inst, crowd, THINGS)
    assert out["center"][0, 0, 8].item() == pytest.approx(math.exp(-0.5), rel=1e-6)


def test_overlapping_gaussians_take_the_max():
    sem, inst, crowd = _canvas(1, 12)
    sem[0, 1], inst[0, 1] = 1, 1                 # centre (0, 1)
    sem[0, 6], inst[0, 6] = 1, 2                 # centre (0, 6)
    out = render_maps(sem, inst, crowd, THINGS, RenderConfig(sigma=3.0))
    c = out["center"][0, 0]
    for x in range(12):
        expected = max(_gauss((x - 1) ** 2, 3.0), _gauss((x - 6) ** 2, 3.0))
        assert c[x].item() == pytest.approx(expected, rel=1e-6), x
    assert c[1].item() == 1.0 and c[6].item() == 1.0
    # between the peaks the max, not the sum
    assert c[3].item() == pytest.approx(_gauss(4, 3.0), rel=1e-6)


def test_chunked_heatmap_equals_unchunked(monkeypatch):
    g = torch.Generator().manual_seed(0)
    centers = torch.rand(37, 2, generator=g) * torch.tensor([30.0, 50.0])
    whole = gaussian_heatmap(centers, 30, 50, 4.0, max_elements=10 ** 9)
    one_by_one = gaussian_heatmap(centers, 30, 50, 4.0, max_elements=1)
    by_three = gaussian_heatmap(centers, 30, 50, 4.0, max_elements=3 * 30 * 50)
    torch.testing.assert_close(one_by_one, whole, rtol=1e-6, atol=0)
    torch.testing.assert_close(by_three, whole, rtol=1e-6, atol=0)
    # brute force reference
    ys, xs = torch.meshgrid(torch.arange(30.0), torch.arange(50.0), indexing="ij")
    d2 = (ys[None] - centers[:, 0, None, None]) ** 2 + (xs[None] - centers[:, 1, None, None]) ** 2
    torch.testing.assert_close(whole, torch.exp(-d2 / 32).amax(0), rtol=1e-5, atol=1e-7)

    # render_maps uses the module's bound: force chunks of one instance
    sem, inst, crowd = _canvas(30, 50)
    for k in range(6):
        sem[5 * k:5 * k + 4, 8 * k:8 * k + 7] = 1
        inst[5 * k:5 * k + 4, 8 * k:8 * k + 7] = k + 1
    ref = render_maps(sem, inst, crowd, THINGS)["center"]
    monkeypatch.setattr(render, "HEATMAP_CHUNK_ELEMENTS", 1)
    torch.testing.assert_close(render_maps(sem, inst, crowd, THINGS)["center"], ref, rtol=1e-6, atol=0)


def test_gaussian_heatmap_without_centres_is_zero():
    out = gaussian_heatmap(torch.zeros((0, 2)), 5, 7, 8.0)
    assert out.shape == (5, 7) and out.dtype == torch.float32 and out.abs().sum() == 0


# ------------------------------------------------------------------------------------------------ boundary


def test_boundary_of_a_square():
    sem, inst, crowd = _canvas(6, 6)
    sem[2:4, 2:4], inst[2:4, 2:4] = 1, 1
    out = render_maps(sem, inst, crowd, THINGS)
    expected = torch.zeros(6, 6)
    expected[2:4, 2:4] = 1                                   # every square pixel touches the background
    for y, x in [(1, 2), (1, 3), (4, 2), (4, 3), (2, 1), (3, 1), (2, 4), (3, 4)]:
        expected[y, x] = 1                                   # 4-neighbours outside (diagonals are not)
    assert torch.equal(out["boundary"][0], expected)


def test_boundary_between_instances_classes_and_void():
    sem, inst, crowd = _canvas(1, 8)
    sem[0] = torch.tensor([1, 1, 1, 1, 2, 2, IGNORE, IGNORE])
    inst[0] = torch.tensor([1, 1, 2, 2, 2, 2, 9, 4])         # labels on void pixels do not split void
    out = render_maps(sem, inst, crowd, THINGS)
    assert out["boundary"][0, 0].tolist() == [0, 1, 1, 1, 1, 1, 1, 0]


# ------------------------------------------------------------------------------------------------ weights


def test_weights_void_small_large_crowd_and_stuff():
    sem, inst, crowd = _canvas(6, 8)                         # class 0 stuff everywhere
    sem[0, :] = IGNORE                                       # void row
    sem[1:3, 0:2], inst[1:3, 0:2] = 1, 1                     # small instance, area 4
    sem[1:6, 4:8], inst[1:6, 4:8] = 2, 2                     # large instance, area 20
    sem[4:6, 0:2], inst[4:6, 0:2] = 1, 3                     # crowd thing region (label ignored)
    crowd[4:6, 0:2] = True
    cfg = RenderConfig(small_instance_area=10, small_instance_weight=3.0)
    out = render_maps(sem, inst, crowd, THINGS, cfg)

    sw = out["semantic_weight"]
    assert sw[0].abs().sum() == 0                            # void
    assert torch.all(sw[1:3, 0:2] == 3.0)                    # small instance
    assert torch.all(sw[1:6, 4:8] == 1.0)                    # large instance
    assert torch.all(sw[4:6, 0:2] == 1.0)                    # crowd: no instance, plain weight
    assert sw[3, 2].item() == 1.0                            # stuff

    cw = out["center_weight"]
    assert cw[0].abs().sum() == 0 and cw[4:6, 0:2].abs().sum() == 0
    assert cw.sum().item() == 6 * 8 - 8 - 4

    ow = out["offset_weight"]
    expected = torch.zeros(6, 8)
    expected[1:3, 0:2] = 1
    expected[1:6, 4:8] = 1
    assert torch.equal(ow, expected)
    assert out["offset"][:, ow == 0].abs().sum() == 0 and out["box"][:, ow == 0].abs().sum() == 0

    fg = torch.zeros(6, 8)
    fg[1:3, 0:2] = fg[1:6, 4:8] = fg[4:6, 0:2] = 1           # crowd counts as foreground
    assert torch.equal(out["foreground"], fg)
    assert torch.equal(out["foreground_weight"], (sem != IGNORE).float())
    # crowd: no peak at its centroid (4.5, 0.5); the small instance (centroid (1.5, 0.5)) gives the max
    assert out["center"][0, 4, 0].item() == pytest.approx(_gauss(2.5 ** 2 + 0.25, 8.0), rel=1e-6)


def test_output_types_and_semantic_copy():
    sem, inst, crowd = _canvas(3, 5)
    sem[0, 0] = IGNORE
    out = render_maps(sem.int(), inst.int(), crowd, THINGS)
    shapes = {"semantic": (3, 5), "foreground": (3, 5), "center": (1, 3, 5), "offset": (2, 3, 5),
              "box": (4, 3, 5), "boundary": (1, 3, 5), "semantic_weight": (3, 5), "center_weight": (3, 5),
              "offset_weight": (3, 5), "foreground_weight": (3, 5)}
    assert set(out) == set(shapes)
    for key, shape in shapes.items():
        assert out[key].shape == shape, key
        assert out[key].dtype == (torch.long if key == "semantic" else torch.float32), key
    assert torch.equal(out["semantic"], sem)
    out["semantic"][0, 1] = 2
    assert sem[0, 1] == 0


def test_bad_semantic_values_and_shapes_raise():
    sem, inst, crowd = _canvas(2, 2)
    sem[0, 0] = 3                                            # C = 3
    with pytest.raises(ValueError, match="3"):
        render_maps(sem, inst, crowd, THINGS)
    with pytest.raises(ValueError):
        render_maps(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), crowd, THINGS)
    with pytest.raises(ValueError):
        render_maps(torch.zeros(2, 2), inst, crowd, THINGS)


# ------------------------------------------------------------------------------------------------ empty


def test_empty_maps():
    # all void
    sem, inst, crowd = _canvas(4, 6, fill=IGNORE)
    out = render_maps(sem, inst, crowd, THINGS)
    for key, value in out.items():
        if key != "semantic":
            assert value.abs().sum() == 0, key
    # only stuff: no instance, weights 1
    sem, inst, crowd = _canvas(4, 6)
    out = render_maps(sem, inst, crowd, THINGS)
    assert out["center"].abs().sum() == 0 and out["offset_weight"].sum() == 0 and out["boundary"].sum() == 0
    assert torch.all(out["semantic_weight"] == 1) and torch.all(out["center_weight"] == 1)
    # degenerate sizes
    sem, inst, crowd = _canvas(0, 5)
    out = render_maps(sem, inst, crowd, THINGS)
    assert out["center"].shape == (1, 0, 5) and input_maps(out).shape == (BASE_MAP_CHANNELS, 0, 5)


# ------------------------------------------------------------------------------------------------ panoptic


CATS = CategoryMap.from_categories([
    {"id": 1, "name": "square", "isthing": 1},
    {"id": 5, "name": "disc", "isthing": 1},
    {"id": 101, "name": "sky", "isthing": 0},
])


def test_render_panoptic_thing_crowd_stuff_and_void():
    ids = torch.full((6, 8), 300, dtype=torch.long)          # sky (stuff)
    ids[0, :] = 0                                            # 0: not in segments_info -> void
    ids[1:3, 0:3] = 10                                       # square instance, 2 x 3
    ids[1:4, 5:8] = 20                                       # disc crowd
    ids[5, 7] = 77                                           # id missing from segments_info -> void
    ids[4:6, 0:2] = 30                                       # a second square instance
    segments = [
        {"id": 10, "category_id": 1, "iscrowd": 0},
        {"id": 20, "category_id": 5, "iscrowd": 1},
        {"id": 300, "category_id": 101},
        {"id": 30, "category_id": 1, "iscrowd": 0},
    ]
    out = render_panoptic(ids, segments, CATS, RenderConfig(small_instance_area=5))

    sem = out["semantic"]
    assert torch.all(sem[0] == IGNORE) and sem[5, 7] == IGNORE
    assert torch.all(sem[1:3, 0:3] == 0) and torch.all(sem[1:4, 5:8] == 1) and sem[3, 3] == 2
    assert torch.all(sem[4:6, 0:2] == 0)

    fg = torch.zeros(6, 8)
    fg[1:3, 0:3] = fg[1:4, 5:8] = fg[4:6, 0:2] = 1
    assert torch.equal(out["foreground"], fg)
    ow = torch.zeros(6, 8)
    ow[1:3, 0:3] = ow[4:6, 0:2] = 1
    assert torch.equal(out["offset_weight"], ow)
    cw = (sem != IGNORE).float()
    cw[1:4, 5:8] = 0
    assert torch.equal(out["center_weight"], cw)
    assert torch.equal(out["foreground_weight"], (sem != IGNORE).float())
    # instance 10: centroid (1.5, 1); instance 30 (area 4 < 5): centroid (4.5, 0.5), weight 3
    assert out["offset"][:, 1, 0].tolist() == [0.5, 1.0]
    assert out["offset"][:, 5, 1].tolist() == [-0.5, -0.5]
    assert torch.all(out["semantic_weight"][4:6, 0:2] == 3) and torch.all(out["semantic_weight"][1:3, 0:3] == 1)
    assert out["semantic_weight"][0].sum() == 0 and out["semantic_weight"][5, 7] == 0
    # crowd has no box/offset, and no peak
    assert out["box"][:, 1:4, 5:8].abs().sum() == 0 and out["center"][0, 2, 6].item() < 0.99
    # the square (3, 2) and (4, 0) instances touch: their boundary separates them although same class
    assert out["boundary"][0, 3, 0] == 1 and out["boundary"][0, 4, 0] == 1


def test_render_panoptic_separates_touching_crowd_segments_and_matches_render_maps():
    ids = torch.zeros((2, 4), dtype=torch.long)
    ids[:, :2], ids[:, 2:] = 1, 2
    segments = [{"id": 1, "category_id": 5, "iscrowd": 1}, {"id": 2, "category_id": 5, "iscrowd": 1}]
    out = render_panoptic(ids, segments, CATS)
    assert out["boundary"][0, :, 1:3].sum() == 4 and out["boundary"][0, :, 0].sum() == 0
    assert out["center_weight"].sum() == 0 and out["foreground"].sum() == 8

    # the same labelling given to render_maps directly renders the same maps
    sem = torch.ones((2, 4), dtype=torch.long)
    maps = render_maps(sem, ids, torch.ones((2, 4), dtype=torch.bool), torch.tensor([True, True, False]))
    for key in out:
        assert torch.equal(out[key], maps[key]), key


def test_render_panoptic_unknown_category_raises_naming_it():
    ids = torch.ones((2, 2), dtype=torch.long)
    with pytest.raises(ValueError, match="category_id 42"):
        render_panoptic(ids, [{"id": 1, "category_id": 42}], CATS)


# ------------------------------------------------------------------------------------------------ input maps


def test_input_maps_channel_order_and_scaling():
    sem, inst, crowd = _canvas(5, 6)
    sem[1:4, 1:5], inst[1:4, 1:5] = 1, 1
    cfg = RenderConfig(offset_scale=4.0)
    out = render_maps(sem, inst, crowd, THINGS, cfg)
    x = input_maps(out, cfg)
    assert x.shape == (BASE_MAP_CHANNELS, 5, 6) and x.dtype == torch.float32
    assert torch.equal(x[0], out["foreground"])
    assert torch.equal(x[1], out["center"][0])
    assert torch.equal(x[2:4], out["offset"] / 4.0)
    assert torch.equal(x[4:8], out["box"] / 4.0)
    assert torch.equal(x[8], out["boundary"][0])
    # pixel (1, 1): offset to centroid (2, 2.5) = (1, 1.5); box (0, 0, 3, 2)
    assert x[:, 1, 1].tolist() == [1.0, pytest.approx(_gauss(1 + 2.25, 8.0), rel=1e-6), 0.25, 0.375,
                                   0.0, 0.0, 0.75, 0.5, 1.0]
    # default scale 64, and batched dicts
    batched = {k: torch.stack([v, v]) for k, v in out.items()}
    xb = input_maps(batched)
    assert xb.shape == (2, BASE_MAP_CHANNELS, 5, 6)
    assert torch.equal(xb[1, 2:4], out["offset"] / 64.0)


def test_render_config_validation():
    with pytest.raises(ValueError):
        RenderConfig(sigma=0)
    with pytest.raises(ValueError):
        RenderConfig(offset_scale=0)
