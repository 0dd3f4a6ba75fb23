"""PRN's boundary refiner (models/prn/boundary.py): the network at start, its band and loss, training it alone, and
the re-cut of thing boundaries it drives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prn_cli.models.prn.boundary import BoundaryRefiner, boundary_band, refine_thing_boundaries
from prn_cli.models.prn.config import PRNConfig
from prn_cli.models.prn.model import build_model

CATS = [
    {"id": 1, "name": "square", "isthing": 1, "supercategory": "shape"},
    {"id": 7, "name": "ground", "isthing": 0, "supercategory": "ground"},
]
H = W = 32


def config(**kw) -> PRNConfig:
    cfg = PRNConfig.tiny()
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def square_scene(base_rows=(8, 24), true_rows=(10, 24)):
    """A thing square (cols 8..23) on stuff; the base's square spans ``base_rows``, the true one ``true_rows``."""
    base_fg = torch.zeros(1, H, W)
    base_fg[0, base_rows[0]:base_rows[1], 8:24] = 1
    base_maps = torch.zeros(1, 9, H, W)
    base_maps[:, 0] = base_fg
    truth = torch.zeros(1, H, W)
    truth[0, true_rows[0]:true_rows[1], 8:24] = 1
    sem = torch.where(base_fg.bool(), 0, 1)
    image = (truth[:, None].expand(1, 3, H, W) * 2 - 1).clone()
    inputs = {"image": image, "base_semantic": sem, "base_maps": base_maps}
    targets = {"semantic": torch.where(truth.bool(), 0, 1), "semantic_weight": torch.ones(1, H, W),
               "center": torch.zeros(1, 1, H, W), "center_weight": torch.ones(1, H, W),
               "offset": torch.zeros(1, 2, H, W), "offset_weight": truth.clone(), "box": torch.zeros(1, 4, H, W),
               "foreground": truth, "foreground_weight": torch.ones(1, H, W)}
    return inputs, targets


def test_a_fresh_boundary_refiner_reproduces_the_base_thing_mask():
    refiner = BoundaryRefiner(channels=4)
    inputs, _ = square_scene()
    logits = refiner(inputs["image"], inputs["base_maps"])
    assert logits.shape == (1, 1, H, W)
    expected = 2.0 * (2 * inputs["base_maps"][:, 0:1] - 1)
    assert torch.equal(logits, expected)   # +2 on the base's thing, -2 elsewhere: the re-cut changes nothing
    model = build_model(config(boundary_channels=4), CATS).eval()
    with torch.no_grad():
        assert "thing_foreground" in model(inputs)
        model.run_boundary = False                 # what a predictor does when boundary_radius is 0
        assert "thing_foreground" not in model(inputs)


def test_the_band_is_every_pixel_within_width_of_the_boundary():
    fg = torch.zeros(1, 16, 16)
    fg[0, 5:11, 5:11] = 1
    band = boundary_band(fg, 1)[0]
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[4:12, 4:12] = True
    expected[6:10, 6:10] = False
    assert torch.equal(band, expected)          # 8x8 minus the 4x4 core: 48 pixels
    assert int(boundary_band(fg, 2)[0].sum()) == 10 * 10 - 2 * 2
    assert not boundary_band(torch.zeros(1, 8, 8), 3).any()


def test_the_boundary_loss_counts_the_band_fully_and_the_rest_at_boundary_outside():
    torch.manual_seed(0)
    model = build_model(config(boundary_channels=4, boundary_band=1), CATS).train()
    inputs, targets = square_scene(base_rows=(8, 24), true_rows=(8, 24))
    outputs = model.predict(inputs)
    # the base is right: +-2 logits everywhere, the same BCE on every pixel
    exact = float(F.binary_cross_entropy_with_logits(torch.tensor(2.0), torch.tensor(1.0)))
    losses = model.loss(outputs, targets, inputs)
    assert losses["loss_boundary"].item() == pytest.approx(exact, rel=1e-5)
    # one wrong pixel far from the boundary costs boundary_outside of one in the band
    far = dict(outputs, thing_foreground=outputs["thing_foreground"].clone())
    near = dict(outputs, thing_foreground=outputs["thing_foreground"].clone())
    far["thing_foreground"][0, 0, 0, 0] = 10.0     # 8 px from the square
    near["thing_foreground"][0, 0, 7, 12] = 10.0   # just outside its top edge
    base = losses["loss_boundary"].item()
    d_far = model.loss(far, targets, inputs)["loss_boundary"].item() - base
    d_near = model.loss(near, targets, inputs)["loss_boundary"].item() - base
    assert d_far > 0 and d_far / d_near == pytest.approx(model.config.loss.boundary_outside, rel=1e-4)
    with pytest.raises(ValueError, match="inputs"):
        model.loss(outputs, targets)


def test_training_the_boundary_refiner_alone_moves_the_boundary_to_the_image_edge():
    """The base's square starts 2 rows too high; the image shows the true edge. Trained alone (the rest of PRN
    frozen), the refiner's thing foreground follows the image."""
    torch.manual_seed(0)
    model = build_model(config(boundary_channels=8, boundary_band=3, trainable="boundary"), CATS)
    model.train()
    assert model.boundary.training and not model.backbone.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("boundary.") for n in trainable)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)

    def wrong_pixels():
        model.eval()
        with torch.no_grad():
            inputs, targets = square_scene(base_rows=(8, 24), true_rows=(10, 24))
            prob = torch.sigmoid(model(inputs)["thing_foreground"])[0, 0]
        model.train()
        return int(((prob > 0.5) != targets["foreground"][0].bool()).sum())

    assert wrong_pixels() == 2 * 16        # the base's two extra rows
    for step in range(300):
        top, true_top = 6 + step % 5, 6 + (step + 2) % 5     # the base's top row is off by up to 2 either way
        inputs, targets = square_scene(base_rows=(top, 24), true_rows=(true_top, 24))
        losses = model(inputs, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    assert wrong_pixels() <= 4
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("boundary.") for k in changed)
    with pytest.raises(ValueError, match="boundary_channels"):
        build_model(config(trainable="boundary"), CATS)


def test_the_config_round_trips_and_rejects_bad_values():
    cfg = PRNConfig.from_dict({"boundary_channels": 8, "boundary_dilations": [1, 2], "boundary_band": 2})
    assert (cfg.boundary_channels, cfg.boundary_dilations, cfg.boundary_band) == (8, (1, 2), 2)
    assert PRNConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"boundary_channels": -1}, {"boundary_band": 0}, {"boundary_dilations": (1, 0)}):
        with pytest.raises(ValueError, match="boundary"):
            PRNConfig(**bad)
    model = build_model(config(boundary_channels=4, boundary_dilations=(1, 2)), CATS)
    assert [m.dilation for m in model.boundary.body if isinstance(m, torch.nn.Conv2d)] == [(1, 1), (2, 2)]


# ------------------------------------------------------------------------------------------------------------------
# the re-cut

THINGS = {1}
SEGMENTS = [{"id": 5, "category_id": 7}, {"id": 9, "category_id": 1}, {"id": 11, "category_id": 1}]


def scene():
    ids = np.full((12, 12), 5, np.int64)
    ids[3:7, 3:7] = 9          # a thing
    ids[3:7, 7:9] = 11         # a second thing, touching the first
    return ids


def test_the_recut_moves_thing_boundaries_by_the_probability():
    ids = scene()
    prob = (ids != 5).astype(float)
    prob[2, 3:7] = 0.9         # a row above thing 9 belongs to it
    prob[6, 3:9] = 0.1         # the bottom row of both things is background
    out = refine_thing_boundaries(ids, SEGMENTS, prob, THINGS, radius=2)
    expected = ids.copy()
    expected[2, 3:7] = 9
    expected[6, 3:9] = 5
    assert np.array_equal(out, expected)
    # where two things touch, nothing moves between them; radius 0 changes nothing
    assert np.array_equal(out[3:6, 6:8], ids[3:6, 6:8])
    assert refine_thing_boundaries(ids, SEGMENTS, prob, THINGS, radius=0) is ids


def test_the_recut_stays_within_the_radius_and_never_drops_a_segment():
    ids = scene()
    prob = (ids != 5).astype(float)
    prob[0, :] = 1.0           # 3 rows above the things: outside a radius of 2
    prob[3:7, 7:9] = 0.0       # thing 11 would lose every pixel
    out = refine_thing_boundaries(ids, SEGMENTS, prob, THINGS, radius=2)
    assert np.array_equal(out, ids)
    # a thing pixel next to void leaves to void (id 0), not to a stuff segment further away
    ids[7, 3:7] = 0
    prob = (ids != 5).astype(float)
    prob[ids == 0] = 0.0
    prob[6, 4] = 0.2
    out = refine_thing_boundaries(ids, SEGMENTS, prob, THINGS, radius=1)
    assert out[6, 4] == 0 and (out != ids).sum() == 1


def test_a_confidence_above_one_half_moves_only_the_pixels_the_refiner_is_sure_of():
    ids = scene()
    prob = (ids != 5).astype(float)
    prob[2, 3:5] = 0.95        # sure: joins thing 9
    prob[2, 5:7] = 0.7         # unsure: stays stuff at confidence 0.9
    prob[6, 3:5] = 0.02        # sure: leaves to stuff
    prob[6, 5:7] = 0.3         # unsure: stays
    out = refine_thing_boundaries(ids, SEGMENTS, prob, THINGS, radius=2, confidence=0.9)
    expected = ids.copy()
    expected[2, 3:5] = 9
    expected[6, 3:5] = 5
    assert np.array_equal(out, expected)
    every = refine_thing_boundaries(ids, SEGMENTS, prob, THINGS, radius=2)     # 0.5: every pixel follows prob
    assert (every[2, 3:7] == 9).all() and (every[6, 3:7] == 5).all()


def test_a_thing_keeps_its_recut_only_when_it_is_large_and_sure_enough():
    ids = scene()               # thing 9: 16 pixels, thing 11: 8 pixels
    prob = (ids != 5).astype(float)
    prob[2, 3:7] = 0.9          # 4 sure pixels join thing 9 ...
    prob[6, 3:7] = 0.1          # ... and 4 sure ones leave it: expected gain 8 x 0.8 / 16 = 0.4
    prob[2, 7:9] = 0.6          # 2 unsure pixels join thing 11: expected gain 2 x 0.2 / 8 = 0.05
    recut_9 = ids.copy()
    recut_9[2, 3:7] = 9
    recut_9[6, 3:7] = 5
    both = recut_9.copy()
    both[2, 7:9] = 11
    assert np.array_equal(refine_thing_boundaries(ids, SEGMENTS, prob, THINGS, radius=2), both)
    assert np.array_equal(refine_thing_boundaries(ids, SEGMENTS, prob, THINGS, radius=2, min_gain=0.04), both)
    assert np.array_equal(refine_thing_boundaries(ids, SEGMENTS, prob, THINGS, radius=2, min_gain=0.1), recut_9)
    assert np.array_equal(refine_thing_boundaries(ids, SEGMENTS, prob, THINGS, radius=2, min_gain=0.5), ids)
    # by size: thing 11 (8 pixels) keeps the base's mask below a minimum area of 10, thing 9 (16) is re-cut
    assert np.array_equal(refine_thing_boundaries(ids, SEGMENTS, prob, THINGS, radius=2, min_area=10), recut_9)
    assert np.array_equal(refine_thing_boundaries(ids, SEGMENTS, prob, THINGS, radius=2, min_area=17), ids)


def test_a_recut_that_moves_pixels_on_one_side_only_is_undone_below_the_minimum_coverage():
    # a 12x12 thing (9) on stuff (5): its boundary has 44 pixels
    ids = np.full((32, 32), 5, np.int64)
    ids[10:22, 10:22] = 9
    segments = [{"id": 5, "category_id": 7}, {"id": 9, "category_id": 1}]
    one_side = (ids == 9).astype(float)
    one_side[9, 10:22] = 0.95       # a sure run along the top only, as next to a neighbour the base dropped
    top = ids.copy()
    top[9, 10:22] = 9
    # the run is within 2 px (city block) of the top row (12) and of the next row's two ends (2): 14 / 44 = 0.318
    assert np.array_equal(refine_thing_boundaries(ids, segments, one_side, {1}, radius=2), top)
    assert np.array_equal(refine_thing_boundaries(ids, segments, one_side, {1}, radius=2, min_coverage=0.31), top)
    assert np.array_equal(refine_thing_boundaries(ids, segments, one_side, {1}, radius=2, min_coverage=0.33), ids)
    around = (ids == 9).astype(float)
    around[9:23, 9:23] = 0.95       # a coarse mask: one pixel short all around
    grown = ids.copy()
    grown[9:23, 9:23] = 9
    assert np.array_equal(refine_thing_boundaries(ids, segments, around, {1}, radius=2, min_coverage=1.0), grown)


def test_the_per_thing_gate_is_validated_in_the_post_processing_config():
    from prn_cli.models.prn.postprocess import PostProcessConfig

    assert PostProcessConfig(boundary_min_area=256, boundary_min_gain=0.05).boundary_min_gain == 0.05
    with pytest.raises(ValueError, match="boundary_min_area"):
        PostProcessConfig(boundary_min_area=-1)
    with pytest.raises(ValueError, match="boundary_min_gain"):
        PostProcessConfig(boundary_min_gain=1.5)
    with pytest.raises(ValueError, match="boundary_min_coverage"):
        PostProcessConfig(boundary_min_coverage=-0.1)


def test_the_refiner_computed_on_tiles_near_the_boundaries_equals_the_whole_map_there():
    torch.manual_seed(0)
    refiner = BoundaryRefiner(6).eval()
    torch.nn.init.normal_(refiner.read_out.weight)
    image = torch.randn(2, 3, 150, 170)
    base_maps = torch.zeros(2, 9, 150, 170)
    base_maps[:, 0, 40:90, 30:120] = 1
    base_maps[1, 0, 100:140, 140:165] = 1
    whole = refiner(image, base_maps)
    region = boundary_band(base_maps[:, 0] > 0.5, 3)
    tiled = refiner(image, base_maps, region=region, tile=32)
    near = region[:, None]
    assert torch.allclose(tiled[near], whole[near], atol=1e-5)
    # away from the tiles only the prior term is left, which the read-out does not reach
    assert (tiled[0, 0, 0, 0] - refiner.prior * -1).abs() < 1e-6 and not torch.allclose(tiled, whole)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_recut_on_the_things_window_equals_the_recut_of_the_whole_map(seed):
    from prn_cli.models.prn.boundary import _recut

    rng = np.random.default_rng(seed)
    ids = np.full((40, 50), 5, np.int64)
    ids[:, 30:] = 6                                    # a second stuff segment
    ids[12:20, 14:22] = 9
    ids[16:24, 22:27] = 11
    ids[30:33, 31:34] = 0                              # void near a thing
    ids[29:31, 33:36] = 9                              # a second part of thing 9
    prob = np.clip((np.isin(ids, [9, 11])).astype(float) + rng.normal(0, 0.45, ids.shape), 0, 1)
    segments = SEGMENTS + [{"id": 6, "category_id": 7}]
    things = np.array([9, 11], np.int64)
    for kw in ({}, {"confidence": 0.7}, {"min_area": 30, "min_gain": 0.05}):
        windowed = refine_thing_boundaries(ids, segments, prob, THINGS, radius=2, **kw)
        whole = _recut(ids, np.isin(ids, things), prob, things, 2, kw.get("confidence", 0.5),
                       kw.get("min_area", 0), kw.get("min_gain", 0.0))
        assert np.array_equal(windowed, whole)
    assert not np.array_equal(windowed, ids)           # the re-cut moved pixels


def _dense_propagate(labels, source, steps):
    """The re-cut's propagation over the whole map, as it was written first: the reference for the band-only one."""
    out = np.where(source, labels, 0).astype(np.int64)
    reached = source.copy()
    h, w = out.shape
    for _ in range(steps):
        padded = np.pad(out, 1)
        for shifts in (((0, 1), (1, 0), (1, 2), (2, 1)), ((0, 0), (0, 2), (2, 0), (2, 2))):
            best = np.zeros_like(out)
            for dy, dx in shifts:
                np.maximum(best, padded[dy:dy + h, dx:dx + w], out=best)
            grow = ~reached & (best > 0)
            out[grow] = best[grow]
            reached |= grow
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_band_and_the_band_only_propagation_equal_their_whole_map_versions(seed):
    from prn_cli.models.prn.boundary import _pixel_graph, _propagate, boundary_band_numpy

    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 6, (7, 9)).repeat(4, 0).repeat(3, 1)[:, : 25 + seed]  # blocks of labels, odd sizes
    ids[rng.random(ids.shape) < 0.05] = 7                                      # and single pixels
    is_thing = np.isin(ids, [3, 4, 7])
    for radius in (1, 2, 3):
        band = boundary_band_numpy(is_thing, radius)
        assert np.array_equal(band, boundary_band(torch.from_numpy(is_thing)[None], radius)[0].numpy())
        graph = _pixel_graph(band)
        ys, xs = graph[0], graph[1]
        for source, offset in ((is_thing, 0), (~is_thing, 1)):
            got = _propagate(ids, source, graph, radius, offset=offset)
            want = _dense_propagate(ids + offset, source, radius)[ys, xs]
            assert np.array_equal(got, want)
            assert (got[~source[ys, xs]] > 0).any()                     # labels did travel
        assert radius > 1 or not band.all()


def test_training_the_refiner_alone_skips_the_frozen_trunk_and_gives_the_same_boundary_loss():
    """With trainable "boundary" the training forward computes the refiner only: the same loss_boundary as the
    full forward (whose other losses cannot change a frozen trunk), the same gradients, and nothing else."""
    torch.manual_seed(0)
    model = build_model(config(boundary_channels=8, boundary_band=3, trainable="boundary"), CATS).train()
    inputs, targets = square_scene(base_rows=(8, 24), true_rows=(10, 24))
    calls = []
    model.backbone.register_forward_hook(lambda *a: calls.append(1))
    losses = model(inputs, targets)
    assert list(losses) == ["loss_boundary"] and not calls
    full = model.loss(model.predict(inputs), targets, inputs)
    assert calls and set(full) > {"loss_boundary", "loss_semantic"}
    assert losses["loss_boundary"].item() == pytest.approx(full["loss_boundary"].item(), rel=1e-6)
    grads = torch.autograd.grad(losses["loss_boundary"], list(model.boundary.parameters()))
    full_grads = torch.autograd.grad(full["loss_boundary"], list(model.boundary.parameters()))
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(grads, full_grads))
    with pytest.raises(ValueError, match="needs targets"):
        model(inputs)
