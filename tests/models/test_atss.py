"""ATSS detector: anchors, box coding, assignment, head (level-shared BN, hierarchical scores), loss, inference."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.ops import box_iou

from prn_cli.models.ms_panoptic_fpn.atss import (ATSSHead, ATSSLoss, BoxCoder, atss_assign, atss_inference,
                                                 centerness_target, hierarchical_probabilities, make_anchors)
from prn_cli.models.ms_panoptic_fpn.config import HeadConfig, InferenceConfig, LossConfig


STRIDES = (8, 16, 32, 64, 128)
THING_SUPER = [0, 0, 1]  # things 0 and 1 share super-category 0; thing 2 is alone in super-category 1


def _tiny_head_cfg(**kw):
    return HeadConfig(num_convs=2, cls_channels=16, box_channels=16, **kw)


def _pyramid(batch=2, channels=8, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, math.ceil(size / s), math.ceil(size / s), generator=g) for s in STRIDES]


# ------------------------------------------------------------------------------------------ anchors, coder

def test_make_anchors_convention():
    (a0, a1) = make_anchors([(2, 3), (1, 1)], [8, 16], scale=8.0)
    assert a0.shape == (6, 4) and a1.shape == (1, 4)
    # cell (y=0, x=1) of stride 8: center (12, 4), side 64; rows are row-major (y, x)
    assert torch.equal(a0[1], torch.tensor([12 - 32.0, 4 - 32, 12 + 32, 4 + 32]))
    assert torch.equal(a0[3], torch.tensor([4 - 32.0, 12 - 32, 4 + 32, 12 + 32]))  # (y=1, x=0)
    assert torch.equal(a1[0], torch.tensor([8 - 64.0, 8 - 64, 8 + 64, 8 + 64]))


def test_box_coder_inverse_and_clamp():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 100
    anchors = torch.cat([xy, xy + torch.rand(50, 2, generator=g) * 60 + 4], 1)
    xy = torch.rand(50, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(50, 2, generator=g) * 60 + 4], 1)
    coder = BoxCoder()
    assert torch.allclose(coder.decode(coder.encode(boxes, anchors), anchors), boxes, atol=1e-4)
    deltas = torch.randn(50, 4, generator=g)
    assert torch.allclose(coder.encode(coder.decode(deltas, anchors), anchors), deltas, atol=1e-4)
    huge = coder.decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
    assert torch.allclose(huge, torch.tensor([[8 - 500.0, 8 - 500, 8 + 500, 8 + 500]]))  # w = 16 * 1000/16


def test_centerness_target():
    # point (3, 5) in box [0, 0, 12, 10]: l=3, r=9, t=5, b=5 -> sqrt(3/9 * 1) = 1/sqrt(3)
    c = centerness_target(torch.tensor([[3.0, 5.0]]), torch.tensor([[0.0, 0.0, 12.0, 10.0]]))
    assert c.item() == pytest.approx(1 / math.sqrt(3), rel=1e-6)


# ---------------------------------------------------------------------------------------------- assignment

def _row(intervals):
    """Boxes spanning y in [0, 10]: every IoU is the 1-D IoU in x, every center distance is |dx|."""
    return torch.tensor([[x1, 0.0, x2, 10.0] for x1, x2 in intervals])


def test_atss_assign_hand_case():
    levels = [_row([(0, 10), (10, 20), (20, 30), (30, 40)]),  # a0..a3, centers x = 5, 15, 25, 35
              _row([(0, 20), (20, 40)]),                      # b0, b1 (anchor index 4, 5), centers 10, 30
              _row([(0, 40)])]                                # c0 (index 6), center 20
    gts = _row([(1, 10), (0, 8), (16, 22), (21, 40)])
    # topk = 2 per level -> 5 candidates per GT; threshold = mean + unbiased std of the 5 IoUs.
    # GT0 [1,10], center 5.5: candidates a0 (d .5), a1 (9.5), b0 (4.5), b1 (24.5), c0 (14.5)
    #   IoUs 9/10=.9, 0, 9/20=.45, 0, 9/40=.225: mean .315, std sqrt(.567/4)=.3765 -> thr .6915
    #   -> a0 (.9, center 5 inside [1,10]) positive.
    # GT1 [0,8], center 4: candidates a0, a1, b0, b1, c0 with IoUs .8, 0, .4, 0, .2: mean .28,
    #   std sqrt(.448/4)=.3347 -> thr .6147 -> a0 (.8) positive too; a0 goes to GT0 (IoU .9 > .8).
    # GT2 [16,22], center 19: candidates a1 (d 4), a2 (6), b0 (9), b1 (11), c0 (1)
    #   IoUs 4/12=.3333, 2/14=.1429, 4/22=.1818, 2/24=.0833, 6/40=.15: mean .1783, std .0937 -> thr .2720
    #   -> a1 passes the IoU test but its center x=15 lies outside [16,22]: no positive at all.
    # GT3 [21,40], center 30.5: candidates a3 (4.5), a2 (5.5), b1 (.5), b0 (20.5), c0 (10.5)
    #   IoUs 10/19=.5263, 9/20=.45, 19/20=.95, 0, 19/40=.475: mean .4803, std .3370 -> thr .8173 -> b1.
    matched, ious = atss_assign(levels, gts, topk=2)
    assert matched.tolist() == [0, -1, -1, -1, -1, 3, -1]
    assert torch.allclose(ious, torch.tensor([0.9, 0, 0, 0, 0, 0.95, 0]))

    # GT1 alone keeps a0 (nobody competes for it); GT2 shifted to [14,20] (center 17) now contains a1's center:
    #   IoUs a1 6/10=.6, a2 0, b0 6/20=.3, b1 0, c0 6/40=.15: mean .21, std .2510 -> thr .4610 -> a1 positive.
    matched, _ = atss_assign(levels, _row([(0, 8), (14, 20)]), topk=2)
    assert matched.tolist() == [0, 1, -1, -1, -1, -1, -1]


def test_atss_assign_no_gt():
    matched, ious = atss_assign(make_anchors([(4, 4), (2, 2)], [8, 16]), torch.zeros(0, 4))
    assert matched.shape == (20,) and (matched == -1).all() and (ious == 0).all()


def _naive_assign(levels, gts, topk):
    """Loop-by-loop ATSS, written independently of the vectorised version, for a randomized cross-check."""
    anchors = torch.cat(levels)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    best = [(-1.0, -1)] * len(anchors)
    for g, box in enumerate(gts):
        gc = (box[:2] + box[2:]) / 2
        cand, start = [], 0
        for lvl in levels:
            d = [(float(torch.linalg.norm(centers[start + j] - gc)), start + j) for j in range(len(lvl))]
            cand += [j for _, j in sorted(d)[:topk]]
            start += len(lvl)
        ious = [float(box_iou(anchors[j:j + 1], box[None])[0, 0]) for j in cand]
        thr = torch.tensor(ious).mean() + torch.tensor(ious).std()
        for j, iou in zip(cand, ious):
            cx, cy = centers[j].tolist()
            inside = min(cx - box[0], cy - box[1], box[2] - cx, box[3] - cy) > 0.01
            if iou >= thr and inside and iou > best[j][0]:
                best[j] = (iou, g)
    return [g for _, g in best]


def test_atss_assign_matches_naive_loops():
    g = torch.Generator().manual_seed(3)
    levels = make_anchors([(12, 10), (6, 5), (3, 3)], [8, 16, 32], scale=4.0)
    # random-valued boxes: distance ties between anchors have probability 0
    xy = torch.rand(6, 2, generator=g) * 70
    gts = torch.cat([xy, xy + torch.rand(6, 2, generator=g) * 40 + 6], 1)
    matched, _ = atss_assign(levels, gts, topk=3)
    assert matched.tolist() == _naive_assign(levels, gts, 3)
    assert (matched >= 0).sum() >= 6


# ---------------------------------------------------------------------------------------------------- head

@pytest.mark.parametrize("mode", ["hierarchical", "flat"])
@pytest.mark.parametrize("norm", ["bn_shared", "gn"])
def test_head_output_shapes(mode, norm):
    cfg = _tiny_head_cfg(classification=mode, norm=norm)
    head = ATSSHead(8, 5, cfg, num_things=3, num_supers=2)
    feats = _pyramid()
    out = head(feats)
    keys = {"objectness", "super_logits", "category_logits"} if mode == "hierarchical" else {"class_logits"}
    assert set(out) == keys | {"box_regression", "centerness", "cls_features"}
    channels = {"objectness": 1, "super_logits": 2, "category_logits": 3, "class_logits": 3, "box_regression": 4,
                "centerness": 1, "cls_features": 16}
    for key, levels in out.items():
        assert len(levels) == 5
        for x, f in zip(levels, feats):
            assert x.shape == (2, channels[key], *f.shape[-2:]), key
    prior_bias = -math.log(99)
    bias = head.objectness.bias if mode == "hierarchical" else head.class_logits.bias
    assert torch.allclose(bias, torch.full_like(bias, prior_bias))


def test_bn_shared_statistics_pool_all_levels():
    torch.manual_seed(0)
    cfg = _tiny_head_cfg()
    head = ATSSHead(8, 5, cfg, num_things=3, num_supers=2).train()
    bns = [m for m in head.cls_tower.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == cfg.num_convs  # one BatchNorm (one set of running stats) per tower layer
    conv0 = head.cls_tower.convs[0]
    nn.init.normal_(conv0.weight, std=0.5)  # larger activations than the 0.01 init: a meaningful comparison
    feats = _pyramid()
    head(feats)  # one training-mode forward updates the running statistics once
    with torch.no_grad():
        per_level = [conv0(x) for x in feats]
        joint = torch.cat([y.flatten(2) for y in per_level], dim=2)  # (B, C, sum of H_l W_l)
    mean = joint.mean(dim=(0, 2))
    var = joint.transpose(0, 1).reshape(joint.shape[1], -1).var(dim=1)  # unbiased, as BatchNorm's running_var
    momentum = bns[0].momentum
    assert torch.allclose(bns[0].running_mean, momentum * mean, atol=1e-6)
    assert torch.allclose(bns[0].running_var, (1 - momentum) + momentum * var, atol=1e-5)
    # and it is really the pooled statistic, not the P3 one
    assert not torch.allclose(bns[0].running_mean, momentum * per_level[0].mean(dim=(0, 2, 3)), atol=1e-4)


def test_hierarchical_probabilities_sum_to_objectness():
    head = ATSSHead(8, 5, _tiny_head_cfg(), num_things=3, num_supers=2).eval()
    for m in head.modules():  # move away from the near-uniform init
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.3)
    with torch.no_grad():
        out = head(_pyramid(batch=1))
    for obj, sup, cat in zip(out["objectness"], out["super_logits"], out["category_logits"]):
        flat = [x[0].permute(1, 2, 0).reshape(-1, x.shape[1]) for x in (obj, sup, cat)]
        p = hierarchical_probabilities(*flat, THING_SUPER)
        assert torch.allclose(p.sum(1), flat[0][:, 0].sigmoid(), atol=1e-6)
        # and the factorisation itself, written out for thing 1 (super 0, sibling thing 0)
        p1 = flat[0][:, 0].sigmoid() * flat[1].softmax(1)[:, 0] * flat[2][:, :2].softmax(1)[:, 1]
        assert torch.allclose(p[:, 1], p1, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- loss

TARGETS = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 44.0]]), "labels": torch.tensor([1])},
           {"boxes": torch.tensor([[10.0, 20.0, 60.0, 50.0], [0.0, 0.0, 20.0, 30.0]]), "labels": torch.tensor([2, 0])}]


@pytest.mark.parametrize("mode", ["hierarchical", "flat"])
def test_loss_finite_and_reaches_every_head_parameter(mode):
    torch.manual_seed(0)
    cfg = _tiny_head_cfg(classification=mode)
    head = ATSSHead(8, 5, cfg, num_things=3, num_supers=2).train()
    feats = _pyramid()
    out = head(feats)
    anchors = make_anchors([f.shape[-2:] for f in feats], STRIDES, scale=cfg.anchor_scale)
    losses = ATSSLoss(LossConfig(), cfg, THING_SUPER)(out, anchors, TARGETS)
    positives = losses.pop("positives")
    expected = {"loss_classification", "loss_box", "loss_centerness"}
    assert set(losses) == (expected | {"loss_objectness"} if mode == "hierarchical" else expected)
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    assert len(positives) == 2
    for pos, t in zip(positives, TARGETS):
        p = len(pos["gt_index"])
        assert p > 0 and pos["boxes"].shape == (p, 4) and pos["scores"].shape == (p,)
        assert not pos["boxes"].requires_grad and int(pos["gt_index"].max()) < len(t["boxes"])
        assert ((pos["scores"] > 0) & (pos["scores"] <= 1)).all()
    sum(losses.values()).backward()
    for name, prm in head.named_parameters():
        assert prm.grad is not None and torch.isfinite(prm.grad).all(), name
        if name != "scales":  # a level's scale gets a gradient only where that level has positives
            assert prm.grad.abs().sum() > 0, name
    assert head.scales.grad.abs().sum() > 0


def test_loss_without_any_gt_is_zero_but_connected():
    cfg = _tiny_head_cfg()
    head = ATSSHead(8, 5, cfg, num_things=3, num_supers=2)
    feats = _pyramid()
    anchors = make_anchors([f.shape[-2:] for f in feats], STRIDES)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    losses = ATSSLoss(LossConfig(), cfg, THING_SUPER)(head(feats), anchors, empty)
    assert [len(p["boxes"]) for p in losses.pop("positives")] == [0, 0]
    assert losses["loss_box"].item() == 0 and losses["loss_classification"].item() == 0
    assert losses["loss_objectness"].item() > 0  # every anchor is a negative
    sum(losses.values()).backward()


# ----------------------------------------------------------------------------------------------- inference

def test_inference_contract_on_random_head():
    torch.manual_seed(0)
    head = ATSSHead(8, 5, _tiny_head_cfg(), num_things=3, num_supers=2).eval()
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.2)
    feats = _pyramid()
    with torch.no_grad():
        out = head(feats)
    anchors = make_anchors([f.shape[-2:] for f in feats], STRIDES)
    cfg = InferenceConfig(score_threshold=0.0, max_detections=7)
    sizes = [(64, 64), (50, 37)]
    dets = atss_inference(out, anchors, sizes, cfg, THING_SUPER)
    assert len(dets) == 2
    for d, (h, w) in zip(dets, sizes):
        k = len(d["boxes"])
        assert 0 < k <= 7 and d["scores"].shape == (k,) and d["labels"].dtype == torch.long
        b = d["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert torch.equal(d["scores"], d["scores"].sort(descending=True).values)
        assert ((d["labels"] >= 0) & (d["labels"] < 3)).all()


@pytest.mark.parametrize("mode", ["hierarchical", "flat"])
def test_inference_recovers_one_hand_set_box(mode):
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    anchors = make_anchors(sizes, STRIDES)
    coder = BoxCoder()
    lvl, y, x, label = 1, 2, 1, 1
    box = torch.tensor([5.0, 12.0, 30.0, 50.0])
    out = {"box_regression": [torch.zeros(1, 4, h, w) for h, w in sizes],
           "centerness": [torch.full((1, 1, h, w), -10.0) for h, w in sizes],
           "cls_features": [torch.zeros(1, 1, h, w) for h, w in sizes]}
    if mode == "hierarchical":
        out["objectness"] = [torch.full((1, 1, h, w), -10.0) for h, w in sizes]
        out["super_logits"] = [torch.zeros(1, 2, h, w) for h, w in sizes]
        out["category_logits"] = [torch.zeros(1, 3, h, w) for h, w in sizes]
        out["objectness"][lvl][0, 0, y, x] = 10.0
        out["super_logits"][lvl][0, 0, y, x] = 10.0   # super-category 0 ...
        out["category_logits"][lvl][0, 1, y, x] = 10.0  # ... and thing 1 within it
    else:
        out["class_logits"] = [torch.full((1, 3, h, w), -10.0) for h, w in sizes]
        out["class_logits"][lvl][0, label, y, x] = 10.0
    out["centerness"][lvl][0, 0, y, x] = 10.0
    out["box_regression"][lvl][0, :, y, x] = coder.encode(box[None], anchors[lvl][y * sizes[lvl][1] + x][None])[0]
    det = atss_inference(out, anchors, [(64, 64)], InferenceConfig(), THING_SUPER)[0]
    assert len(det["boxes"]) == 1  # everything else is far below the 0.05 threshold
    assert torch.allclose(det["boxes"][0], box, atol=1e-4)
    assert det["labels"].tolist() == [label]
    assert det["scores"][0] > 0.99
