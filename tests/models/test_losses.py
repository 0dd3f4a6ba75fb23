"""Losses: equality with torchvision where it has them, hand-computed small cases for the others."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from prn_cli.models.losses import (dice_loss, giou_loss, hierarchical_cross_entropy, sigmoid_focal_loss,
                                   softmax_focal_loss)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1, 0.5), (0.7, 0.0)])
def test_sigmoid_focal_equals_torchvision(reduction, alpha, gamma):
    torch.manual_seed(0)
    logits = torch.randn(7, 5) * 3
    targets = (torch.rand(7, 5) > 0.6).float()
    ours = sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
    ref = torchvision.ops.sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
    assert torch.allclose(ours, ref, atol=1e-6)


def _random_boxes(n, generator):
    xy = torch.rand(n, 2, generator=generator) * 50
    wh = torch.rand(n, 2, generator=generator) * 30 + 1
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_giou_equals_torchvision(reduction):
    g = torch.Generator().manual_seed(0)
    a, b = _random_boxes(20, g), _random_boxes(20, g)
    b[:3] = a[:3]  # identical pairs: loss 0
    ours = giou_loss(a, b, reduction=reduction)
    ref = torchvision.ops.generalized_box_iou_loss(a, b, reduction=reduction)
    assert torch.allclose(ours, ref, atol=1e-6)
    w = torch.rand(20, generator=g)
    assert torch.allclose(giou_loss(a, b, w, "sum"), (ref if reduction == "none" else
                          torchvision.ops.generalized_box_iou_loss(a, b)).mul(w).sum(), atol=1e-5)
    weighted_mean = giou_loss(a, b, w, "mean")
    assert torch.allclose(weighted_mean, (torchvision.ops.generalized_box_iou_loss(a, b) * w).sum() / w.sum())


def test_giou_hand_case():
    # [0,0,2,2] vs [1,0,3,2]: inter 2, union 6, enclosing 3x2=6 -> GIoU = 1/3, loss 2/3.
    # [0,0,1,1] vs [2,0,3,1]: inter 0, union 2, enclosing 3 -> GIoU = 0 - 1/3, loss 4/3.
    p = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1]])
    t = torch.tensor([[1.0, 0, 3, 2], [2, 0, 3, 1]])
    assert torch.allclose(giou_loss(p, t), torch.tensor([2 / 3, 4 / 3]), atol=1e-6)


def test_dice_hand_case_and_ignore():
    # Two classes, three pixels; the 4th pixel is ignored (255) and must change nothing.
    # Logits chosen so that softmax = (0.8, 0.2) everywhere: logit difference log(4).
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0] = math.log(4.0)
    target = torch.tensor([[[0, 0, 1, 255]]])
    # class 0: sum(p*g) = 0.8 + 0.8 = 1.6; sum(p) = 2.4; sum(g) = 2 -> dice = (3.2 + 1) / (4.4 + 1) = 4.2/5.4
    # class 1: sum(p*g) = 0.2;             sum(p) = 0.6; sum(g) = 1 -> dice = (0.4 + 1) / (1.6 + 1) = 1.4/2.6
    expected = ((1 - 4.2 / 5.4) + (1 - 1.4 / 2.6)) / 2
    assert dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # without smoothing: class 0: 3.2/4.4, class 1: 0.4/1.6
    assert dice_loss(logits, target, smooth=0.0).item() == pytest.approx(((1 - 3.2 / 4.4) + (1 - 0.25)) / 2, rel=1e-6)
    # changing the ignored pixel's logits changes nothing
    logits2 = logits.clone()
    logits2[0, :, 0, 3] = torch.tensor([-5.0, 9.0])
    assert dice_loss(logits2, target).item() == pytest.approx(expected, rel=1e-6)


def test_dice_absent_classes_and_all_ignored_have_no_nan():
    logits = torch.full((2, 4, 3, 3), -20.0)
    logits[:, 0] = 20.0  # classes 1..3 absent from both prediction and target
    logits.requires_grad_(True)
    target = torch.zeros(2, 3, 3, dtype=torch.long)
    loss = dice_loss(logits, target)
    assert torch.isfinite(loss) and loss.item() < 1e-6  # a perfect prediction
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    all_ignored = dice_loss(logits, torch.full_like(target, 255))
    assert all_ignored.item() == 0.0 and all_ignored.requires_grad


def test_softmax_focal_hand_case_and_ignore():
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 0] = math.log(4.0)  # p = (0.8, 0.2)
    target = torch.tensor([[[0, 1, 255]]])
    # pixel 0: -(0.2^2) log 0.8; pixel 1: -(0.8^2) log 0.2; mean over the 2 valid pixels
    expected = (-(0.2 ** 2) * math.log(0.8) - (0.8 ** 2) * math.log(0.2)) / 2
    assert softmax_focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    assert softmax_focal_loss(logits, target, gamma=0.0).item() == pytest.approx(ce.item(), rel=1e-6)
    x = logits.clone().requires_grad_(True)
    none = softmax_focal_loss(x, torch.full_like(target, 255))
    none.backward()
    assert none.item() == 0.0 and torch.isfinite(x.grad).all()


def test_hierarchical_cross_entropy_hand_case():
    thing_super = torch.tensor([0, 0, 1])  # things 0, 1 in super 0; thing 2 alone in super 1
    super_logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], requires_grad=True)
    category_logits = torch.tensor([[0.0, math.log(3.0), 5.0], [1.0, 2.0, 3.0]], requires_grad=True)
    target = torch.tensor([1, 2])
    # row 0: P(super 0) = 3/4 -> -log(3/4); within super 0: softmax(0, log 3) -> P(thing 1) = 3/4 -> -log(3/4)
    #        (thing 2's logit 5.0 is in another super-category and must not matter)
    # row 1: P(super 1) = 1/2 -> log 2; thing 2 is alone in super 1 -> 0
    expected = (2 * -math.log(0.75) + math.log(2.0)) / 2
    loss = hierarchical_cross_entropy(super_logits, category_logits, target, thing_super)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(super_logits.grad).all() and torch.isfinite(category_logits.grad).all()
    assert category_logits.grad[0, 2] == 0 and category_logits.grad[1].abs().sum() == 0


def test_hierarchical_cross_entropy_empty_keeps_graph():
    s = torch.zeros(0, 2, requires_grad=True)
    c = torch.zeros(0, 3, requires_grad=True)
    loss = hierarchical_cross_entropy(s, c, torch.zeros(0, dtype=torch.long), torch.tensor([0, 0, 1]))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()


def test_gradients_finite_for_extreme_logits():
    logits = (torch.randn(2, 3, 4, 4) * 50).requires_grad_(True)
    target = torch.randint(0, 3, (2, 4, 4))
    target[0, 0] = 255
    (dice_loss(logits, target) + softmax_focal_loss(logits, target)).backward()
    assert torch.isfinite(logits.grad).all()
    z = (torch.randn(10) * 50).requires_grad_(True)
    sigmoid_focal_loss(z, (torch.rand(10) > 0.5).float(), reduction="sum").backward()
    assert torch.isfinite(z.grad).all()
