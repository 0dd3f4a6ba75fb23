"""PRN post-processing on hand-made maps: centres, grouping, PredBbox, foreground source, stuff, infos."""

from __future__ import annotations

import pytest
import torch

from prn_cli.models.prn.postprocess import (PostProcessConfig, box_iou_inclusive, find_centers, group_pixels,
                                            panoptic_from_outputs)

SKY, GRASS, CAR, PERSON = 0, 1, 2, 3
THING = torch.tensor([False, False, True, True])
C = 4


def heatmap(h, w, peaks):
    """(1, H, W) heatmap, zero except ``peaks`` {(y, x): value}."""
    heat = torch.zeros(1, h, w)
    for (y, x), v in peaks.items():
        heat[0, y, x] = v
    return heat


def make_outputs(labels, instances, peaks, offsets="perfect", scale=10.0):
    """Outputs of a perfect network for ``labels`` (H, W) class map and ``instances`` (H, W) (0 = none).

    semantic = one-hot logits x scale; foreground = +scale on instance pixels else -scale; offsets point to the
    instance centroid ("perfect") or are zero ("zero"); boxes are the instances' inclusive extents (l, t, r, b).
    """
    h, w = labels.shape
    sem = torch.nn.functional.one_hot(labels, C).permute(2, 0, 1).float() * scale
    fg = torch.where(instances > 0, scale, -scale)[None].float()
    offset = torch.zeros(2, h, w)
    box = torch.zeros(4, h, w)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    for i in instances.unique().tolist():
        if i == 0:
            continue
        m = instances == i
        if offsets == "perfect":
            offset[0][m] = yy[m].mean() - yy[m]
            offset[1][m] = xx[m].mean() - xx[m]
        box[0][m] = xx[m] - xx[m].min()
        box[1][m] = yy[m] - yy[m].min()
        box[2][m] = xx[m].max() - xx[m]
        box[3][m] = yy[m].max() - yy[m]
    return {"semantic": sem, "center": heatmap(h, w, peaks), "offset": offset, "foreground": fg, "box": box}


def cfg(**kw):
    kw.setdefault("stuff_area", 1)
    return PostProcessConfig(**kw)


def check_invariants(seg, infos):
    """Indices 1..S consecutive and unique, areas = pixel counts, things listed before stuff."""
    present = sorted(set(seg.unique().tolist()) - {0})
    assert [i["index"] for i in infos] == list(range(1, len(infos) + 1)) == present
    counts = torch.bincount(seg.flatten(), minlength=len(infos) + 1)
    assert [i["area"] for i in infos] == counts[1:].tolist()
    flags = [i["isthing"] for i in infos]
    assert flags == sorted(flags, reverse=True)
    for info in infos:
        assert bool(THING[info["class_index"]]) == info["isthing"]


# ---------------------------------------------------------------------------------------------------- centres

def test_nms_suppresses_neighbour_within_kernel_only():
    heat = heatmap(12, 16, {(5, 5): 1.0, (5, 8): 0.9, (5, 12): 0.8})
    coords, scores = find_centers(heat, 0.1, nms_kernel=7, top_k=200)
    # (5, 8) is 3 px from the stronger (5, 5): inside a 7x7 window; (5, 12) is 4 px from (5, 8), 7 from (5, 5).
    assert coords.tolist() == [[5, 5], [5, 12]]
    assert scores.tolist() == pytest.approx([1.0, 0.8])
    coords, _ = find_centers(heat, 0.1, nms_kernel=5, top_k=200)
    assert coords.tolist() == [[5, 5], [5, 8], [5, 12]]
    # Diagonal neighbours count too (square window).
    coords, _ = find_centers(heatmap(9, 9, {(2, 2): 0.5, (5, 5): 0.6}), 0.1, nms_kernel=7, top_k=200)
    assert coords.tolist() == [[5, 5]]


@pytest.mark.parametrize("kernel", [3, 7, 41])
def test_nms_matches_square_max_pool(kernel):
    g = torch.Generator().manual_seed(kernel)
    heat = torch.rand(1, 30, 50, generator=g) ** 3
    heat[0, 10:13, 20:23] = 0.9                                  # a plateau: equal neighbours are all kept
    pooled = torch.nn.functional.max_pool2d(heat[None], kernel, stride=1, padding=kernel // 2)[0]
    peak = ((heat == pooled) & (heat > 0.1))[0]
    coords, scores = find_centers(heat, 0.1, kernel, top_k=10_000)
    assert sorted(coords.tolist()) == peak.nonzero().tolist()
    assert torch.equal(scores, heat[0][peak].sort(descending=True, stable=True).values)


def test_top_k_keeps_highest_and_threshold_is_strict():
    heat = heatmap(10, 30, {(5, 2): 0.5, (5, 12): 0.9, (5, 22): 0.7, (1, 27): 0.25})
    coords, scores = find_centers(heat, 0.1, 7, top_k=2)
    assert coords.tolist() == [[5, 12], [5, 22]]
    assert scores.tolist() == pytest.approx([0.9, 0.7])
    coords, _ = find_centers(heat, 0.25, 7, top_k=200)          # 0.25 is not > 0.25
    assert coords.tolist() == [[5, 12], [5, 22], [5, 2]]
    coords, scores = find_centers(heat, 0.95, 7, top_k=200)
    assert coords.shape == (0, 2) and scores.shape == (0,)


def test_single_instance_perfect_maps():
    labels = torch.full((10, 12), SKY)
    inst = torch.zeros(10, 12, dtype=torch.long)
    labels[3:6, 4:9] = CAR
    inst[3:6, 4:9] = 1
    out = make_outputs(labels, inst, {(4, 6): 0.9})
    for source in ("foreground", "semantic"):
        seg, infos = panoptic_from_outputs(out, THING, cfg(foreground_source=source))
        expected = torch.full((10, 12), 2)
        expected[3:6, 4:9] = 1
        assert torch.equal(seg, expected)
        assert seg.dtype == torch.long
        assert infos == [{"index": 1, "class_index": CAR, "isthing": True, "area": 15, "score": pytest.approx(0.9)},
                         {"index": 2, "class_index": SKY, "isthing": False, "area": 105, "score": 1.0}]


# ---------------------------------------------------------------------------------------------------- grouping

def two_centre_case():
    labels = torch.full((7, 10), SKY)
    labels[2:5, :] = CAR
    inst = torch.zeros(7, 10, dtype=torch.long)
    inst[2:5, :] = 1                                           # offsets are zero: every pixel votes for itself
    return make_outputs(labels, inst, {(3, 2): 1.0, (3, 7): 0.8}, offsets="zero")


def test_two_centres_split_by_nearest_vote():
    seg, infos = panoptic_from_outputs(two_centre_case(), THING, cfg())
    expected = torch.full((7, 10), 3)
    expected[2:5, :5] = 1
    expected[2:5, 5:] = 2
    assert torch.equal(seg, expected)
    assert [(i["class_index"], i["area"]) for i in infos] == [(CAR, 15), (CAR, 15), (SKY, 40)]
    assert [i["score"] for i in infos] == pytest.approx([1.0, 0.8, 1.0])


def test_votes_follow_offsets():
    out = two_centre_case()
    out["offset"][1, 2:5, :] = 5.0                             # everyone votes 5 px to the right
    seg, _ = panoptic_from_outputs(out, THING, cfg())
    # Votes x + 5 >= 5 are all nearer to x = 7 than to x = 2: the first centre gets no pixel and is dropped.
    expected = torch.full((7, 10), 2)
    expected[2:5, :] = 1
    assert torch.equal(seg, expected)


@pytest.mark.parametrize("field,value,n_instances", [
    ("top_k", 1, 1), ("center_threshold", 0.85, 1), ("nms_kernel", 11, 1), ("nms_kernel", 7, 2)])
def test_centre_switches_change_result(field, value, n_instances):
    seg, infos = panoptic_from_outputs(two_centre_case(), THING, cfg(**{field: value}))
    assert sum(i["isthing"] for i in infos) == n_instances
    if n_instances == 1:
        assert infos[0]["area"] == 30 and (seg == 1).sum() == 30


def test_no_centres_gives_only_stuff():
    out = two_centre_case()
    out["center"].zero_()
    for source in ("foreground", "semantic"):
        seg, infos = panoptic_from_outputs(out, THING, cfg(foreground_source=source))
        expected = torch.ones(7, 10, dtype=torch.long)
        expected[2:5, :] = 0                                   # foreground without a centre is void
        assert torch.equal(seg, expected)
        assert infos == [{"index": 1, "class_index": SKY, "isthing": False, "area": 40, "score": 1.0}]


def test_min_instance_area_drops_small_instances():
    out = two_centre_case()
    out["offset"][1, 2:5, :] = -3.0                            # votes x - 3: x <= 7 -> centre 1, x >= 8 -> centre 2
    seg, infos = panoptic_from_outputs(out, THING, cfg())
    assert [i["area"] for i in infos] == [24, 6, 40]
    seg, infos = panoptic_from_outputs(out, THING, cfg(min_instance_area=7))
    assert [(i["index"], i["isthing"], i["area"]) for i in infos] == [(1, True, 24), (2, False, 40)]
    assert (seg[2:5, 8:] == 0).all() and (seg[2:5, :8] == 1).all()


# ---------------------------------------------------------------------------------------------------- PredBbox

def touching_case(offsets):
    """Two touching cars in rows 2..4: left cols 0..6 (centroid (3, 3)), right cols 7..9 (centroid (3, 8))."""
    labels = torch.full((8, 10), SKY)
    labels[2:5, :] = CAR
    inst = torch.zeros(8, 10, dtype=torch.long)
    inst[2:5, :7] = 1
    inst[2:5, 7:] = 2
    out = make_outputs(labels, inst, {(3, 3): 1.0, (3, 8): 0.9}, offsets="zero")
    if offsets == "midpoint":
        # Every car pixel votes at the midpoint (3, 5.5) of the two centres: equidistant, the tie goes to centre 1.
        yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(10.0), indexing="ij")
        out["offset"][0][inst > 0] = (3.0 - yy)[inst > 0]
        out["offset"][1][inst > 0] = (5.5 - xx)[inst > 0]
    return out


def masks(seg):
    return {k: (seg == k).nonzero().tolist() for k in seg.unique().tolist()}


def expected_split(split_col):
    e = torch.full((8, 10), 3)
    e[2:5, :split_col] = 1
    e[2:5, split_col:] = 2
    return e


def test_pred_bbox_separates_touching_instances_zero_offsets():
    out = touching_case("zero")
    plain, _ = panoptic_from_outputs(out, THING, cfg())
    # Without boxes the pixels at x = 6 are nearer to the right centre (x = 8) and are mis-assigned.
    assert torch.equal(plain, expected_split(6))
    boxed, infos = panoptic_from_outputs(out, THING, cfg(use_pred_bbox=True))
    assert torch.equal(boxed, expected_split(7))
    assert [(i["class_index"], i["area"]) for i in infos] == [(CAR, 21), (CAR, 9), (SKY, 50)]


def test_pred_bbox_separates_touching_instances_midpoint_offsets():
    out = touching_case("midpoint")
    plain, infos = panoptic_from_outputs(out, THING, cfg())
    merged = torch.full((8, 10), 2)
    merged[2:5, :] = 1
    assert torch.equal(plain, merged)                          # all votes tie -> one merged instance
    assert [i["area"] for i in infos] == [30, 50]
    boxed, _ = panoptic_from_outputs(out, THING, cfg(use_pred_bbox=True))
    assert torch.equal(boxed, expected_split(7))


def test_pred_bbox_fallback_and_threshold():
    out = touching_case("zero")
    out["box"][:, 3, 6] = 0.0           # a one-pixel box: IoU 1/21 with the left box, 0 with the right box
    seg, _ = panoptic_from_outputs(out, THING, cfg(use_pred_bbox=True))
    expected = expected_split(7)
    expected[3, 6] = 2                  # no centre agrees -> plain nearest centre (x = 8)
    assert torch.equal(seg, expected)
    # Threshold 1/21 makes the left centre agree again; threshold 0 makes every centre agree (= plain rule).
    seg, _ = panoptic_from_outputs(out, THING, cfg(use_pred_bbox=True, box_iou_threshold=0.04))
    assert torch.equal(seg, expected_split(7))
    seg, _ = panoptic_from_outputs(out, THING, cfg(use_pred_bbox=True, box_iou_threshold=0.0))
    assert torch.equal(seg, expected_split(6))


def test_box_iou_inclusive_convention():
    a = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    iou = box_iou_inclusive(a, b)
    assert iou.flatten().tolist() == pytest.approx([1.0, 0.0, 0.0, 0.25, 1 / 7, 0.0])


def test_chunking_gives_identical_assignment():
    g = torch.Generator().manual_seed(0)
    votes = torch.rand(500, 2, generator=g) * 50
    centers = torch.randint(0, 50, (13, 2), generator=g)
    boxes = torch.rand(500, 4, generator=g) * 20
    boxes[:, 2:] += boxes[:, :2]
    cboxes = torch.rand(13, 4, generator=g) * 20
    cboxes[:, 2:] += cboxes[:, :2]
    for bx, cb in ((None, None), (boxes, cboxes)):
        ref = group_pixels(votes, centers, bx, cb, 0.2)
        assert torch.equal(group_pixels(votes, centers, bx, cb, 0.2, chunk_elements=7), ref)
        assert torch.equal(group_pixels(votes, centers, bx, cb, 0.2, chunk_elements=1), ref)


# ---------------------------------------------------------------------------------------------------- foreground

def foreground_case():
    labels = torch.full((8, 10), SKY)
    labels[2:6, 2:8] = CAR
    inst = torch.zeros(8, 10, dtype=torch.long)
    inst[2:6, 2:8] = 1
    out = make_outputs(labels, inst, {(3, 4): 0.7})
    out["foreground"][0, 2:6, 2:4] = -10.0     # the branch says background on semantic-thing pixels
    out["foreground"][0, 2:6, 8] = 10.0        # ... and foreground on semantic-sky pixels
    out["semantic"][CAR, 2:6, 8] = 5.0         # their best thing class is CAR (second to SKY)
    return out


def test_foreground_branch_vs_semantic():
    out = foreground_case()
    seg, infos = panoptic_from_outputs(out, THING, cfg(foreground_source="semantic"))
    expected = torch.full((8, 10), 2)
    expected[2:6, 2:8] = 1
    assert torch.equal(seg, expected)
    assert [(i["class_index"], i["area"]) for i in infos] == [(CAR, 24), (SKY, 56)]

    seg, infos = panoptic_from_outputs(out, THING, cfg(foreground_source="foreground"))
    expected = torch.full((8, 10), 2)
    expected[2:6, 2:4] = 0                     # thing argmax but not foreground: void
    expected[2:6, 4:9] = 1                     # stuff argmax but foreground: joins the instance, votes CAR
    assert torch.equal(seg, expected)
    assert [(i["class_index"], i["area"]) for i in infos] == [(CAR, 20), (SKY, 52)]


def test_foreground_threshold():
    out = foreground_case()
    out["foreground"][0, 2:6, 2:4] = 0.0       # sigmoid = 0.5 exactly
    seg, _ = panoptic_from_outputs(out, THING, cfg(foreground_threshold=0.5))
    assert (seg[2:6, 2:4] == 0).all()
    seg, infos = panoptic_from_outputs(out, THING, cfg(foreground_threshold=0.4))
    assert (seg[2:6, 2:9] == 1).all() and infos[0]["area"] == 28


def test_missing_maps_are_errors():
    out = foreground_case()
    del out["foreground"]
    with pytest.raises(ValueError, match="foreground"):
        panoptic_from_outputs(out, THING, cfg(foreground_source="foreground"))
    panoptic_from_outputs(out, THING, cfg(foreground_source="semantic"))   # not needed there
    del out["box"]
    with pytest.raises(ValueError, match="box"):
        panoptic_from_outputs(out, THING, cfg(foreground_source="semantic", use_pred_bbox=True))
    with pytest.raises(ValueError, match="thing_classes"):
        panoptic_from_outputs(out, THING[:3], cfg(foreground_source="semantic"))
    out["offset"] = out["offset"][:, :4]
    with pytest.raises(ValueError, match="offset"):
        panoptic_from_outputs(out, THING, cfg(foreground_source="semantic"))


# ---------------------------------------------------------------------------------------------------- classes, stuff

def test_majority_vote_class():
    labels = torch.full((8, 8), SKY)
    labels[2:6, 2:6] = CAR
    labels[2:4, 2:5] = PERSON                  # 6 person pixels, 10 car pixels
    inst = torch.zeros(8, 8, dtype=torch.long)
    inst[2:6, 2:6] = 1
    out = make_outputs(labels, inst, {(3, 3): 0.5})
    for source in ("foreground", "semantic"):
        seg, infos = panoptic_from_outputs(out, THING, cfg(foreground_source=source))
        assert infos[0]["class_index"] == CAR and infos[0]["area"] == 16
        assert (seg[2:6, 2:6] == 1).all()
    out["semantic"][PERSON, 4:6, 2:6] = 20.0   # now 14 person pixels
    _, infos = panoptic_from_outputs(out, THING, cfg())
    assert infos[0]["class_index"] == PERSON


def test_stuff_area_filter():
    labels = torch.full((6, 10), SKY)
    labels[4:, 5:] = GRASS                      # 10 grass pixels
    labels[0, 0:3] = CAR                        # 3 car pixels, no centre -> void
    inst = torch.zeros(6, 10, dtype=torch.long)
    inst[0, 0:3] = 1
    out = make_outputs(labels, inst, {})
    seg, infos = panoptic_from_outputs(out, THING, cfg(stuff_area=10))
    assert [(i["class_index"], i["area"]) for i in infos] == [(SKY, 47), (GRASS, 10)]
    assert (seg[4:, 5:] == 2).all() and (seg[0, :3] == 0).all()
    seg, infos = panoptic_from_outputs(out, THING, cfg(stuff_area=11))
    assert [(i["index"], i["class_index"], i["area"]) for i in infos] == [(1, SKY, 47)]
    assert (seg[4:, 5:] == 0).all()
    _, infos = panoptic_from_outputs(out, THING, cfg(stuff_area=48))
    assert infos == []


def test_score_with_class_prob():
    labels = torch.full((8, 10), SKY)
    labels[2:6, 2:8] = CAR
    inst = torch.zeros(8, 10, dtype=torch.long)
    inst[2:6, 2:8] = 1
    out = make_outputs(labels, inst, {(3, 4): 0.7}, scale=2.0)
    out["semantic"][PERSON, 2:4, 2:8] = 1.0
    probs = out["semantic"].softmax(0)
    _, infos = panoptic_from_outputs(out, THING, cfg())
    assert [i["score"] for i in infos] == pytest.approx([0.7, 1.0])
    _, infos = panoptic_from_outputs(out, THING, cfg(score_with_class_prob=True))
    car_prob = probs[CAR, 2:6, 2:8].mean().item()
    sky_prob = probs[SKY][labels == SKY].mean().item()
    assert [i["score"] for i in infos] == pytest.approx([0.7 * car_prob, sky_prob], rel=1e-5)


def test_no_thing_classes():
    out = foreground_case()
    seg, infos = panoptic_from_outputs(out, torch.zeros(4, dtype=torch.bool), cfg())
    assert [(i["class_index"], i["isthing"]) for i in infos] == [(SKY, False), (CAR, False)]
    assert (seg > 0).all()


# ---------------------------------------------------------------------------------------------------- invariants

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("source,bbox", [("foreground", False), ("semantic", False), ("foreground", True)])
def test_random_outputs_invariants(seed, source, bbox):
    g = torch.Generator().manual_seed(seed)
    h, w = 24, 32
    out = {"semantic": torch.randn(C, h, w, generator=g) * 3,
           "center": torch.rand(1, h, w, generator=g) ** 4,
           "offset": torch.randn(2, h, w, generator=g) * 4,
           "foreground": torch.randn(1, h, w, generator=g),
           "box": torch.rand(4, h, w, generator=g) * 6}
    config = cfg(foreground_source=source, use_pred_bbox=bbox, stuff_area=20, nms_kernel=5, top_k=10,
                 min_instance_area=3)
    seg, infos = panoptic_from_outputs(out, THING, config)
    check_invariants(seg, infos)
    assert 1 <= sum(i["isthing"] for i in infos) <= 10
    assert all(i["area"] >= 3 for i in infos) and all(i["area"] >= 20 for i in infos if not i["isthing"])
    small = panoptic_from_outputs(out, THING, cfg(**{**config.__dict__, "chunk_elements": 16}))
    assert torch.equal(small[0], seg) and small[1] == infos


def test_config_validation():
    for kw, match in [({"foreground_source": "fg"}, "foreground_source"), ({"nms_kernel": 4}, "nms_kernel"),
                      ({"nms_kernel": 0}, "nms_kernel"), ({"top_k": 0}, "top_k"),
                      ({"foreground_threshold": 1.0}, "foreground_threshold"),
                      ({"box_iou_threshold": 1.5}, "box_iou_threshold"), ({"stuff_area": -1}, "stuff_area"),
                      ({"min_instance_area": -2}, "min_instance_area"), ({"chunk_elements": 0}, "chunk_elements"),
                      ({"center_threshold": float("nan")}, "center_threshold")]:
        with pytest.raises(ValueError, match=match):
            PostProcessConfig(**kw)


def test_stuff_area_scales_with_the_image_area_when_given_a_reference_size():
    from prn_cli.models.prn.postprocess import effective_stuff_area

    assert effective_stuff_area(PostProcessConfig(stuff_area=4096, stuff_area_reference=(480, 640)), 256, 256) == 874
    assert effective_stuff_area(PostProcessConfig(stuff_area=4096), 256, 256) == 4096
    with pytest.raises(ValueError, match="stuff_area_reference"):
        PostProcessConfig(stuff_area_reference=(0, 5))


def test_the_steps_a_network_cannot_run_are_named_with_their_flag_and_part():
    from prn_cli.models.prn.postprocess import missing_network_parts

    full = {"foreground_head": True, "box_head": True, "boundary_channels": 24, "classifier_channels": [8, 8, 8],
            "classifier_background": True}
    everything = PostProcessConfig(use_pred_bbox=True, boundary_radius=2, classifier_confidence=0.7,
                                   classifier_remove_confidence=0.8, classifier_split_confidence=0.8,
                                   void_thing_confidence=0.8)
    assert missing_network_parts(everything, full) == []
    bare = missing_network_parts(everything, {})
    assert [(n.flag, n.field, n.module) for n in bare] == [
        ("--foreground-source foreground", "foreground_head", "network"), ("--use-pred-bbox", "box_head", "network"),
        ("--boundary-radius", "boundary_channels", "extension"),
        ("--classifier-confidence", "classifier_channels", "extension"),
        ("--classifier-remove-confidence", "classifier_channels", "extension"),
        ("--classifier-split-confidence", "classifier_channels", "extension"),
        ("--void-thing-confidence", "classifier_channels", "extension")]
    # a classifier without "no thing" can relabel, cut and find void things but not remove
    plain = missing_network_parts(everything, {**full, "classifier_background": False})
    assert [(n.flag, n.lacking) for n in plain] == [
        ("--classifier-remove-confidence", "this PRN's thing classifier has no 'no thing' class")]
    # settings that only tune a step that is off ask for nothing
    tuning = PostProcessConfig(foreground_source="semantic", boundary_confidence=0.7, boundary_min_area=64,
                               classifier_small_confidence=0.9, classifier_join_share=0.2)
    assert missing_network_parts(tuning, {}) == []
