"""SAG-Mask head of MS-PanopticFPN: level rule, head shapes and gradients, SAM, targets, loss, pasting."""

from __future__ import annotations

import torch

from prn_cli.models.ms_panoptic_fpn.config import LossConfig
from prn_cli.models.ms_panoptic_fpn.sag_mask import (SAGMaskHead, assign_levels, mask_loss, mask_targets,
                                                     paste_masks)


def _pyramid(b: int, c: int, h: int, w: int, requires_grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, c, h // s, w // s, generator=g).requires_grad_(requires_grad) for s in (8, 16, 32)]


def test_level_rule_hand_cases():
    boxes = torch.tensor([[0, 0, 100, 100],     # whole image -> P5
                          [0, 0, 100, 60],      # 0.6 of the image -> ceil(5 - 0.74) = 5
                          [0, 0, 100, 50],      # exactly half -> 4
                          [0, 0, 100, 30],      # 0.3 -> ceil(5 - 1.74) = 4
                          [0, 0, 50, 50],       # a quarter -> 3
                          [10, 10, 12, 12],     # tiny -> clamped to 3
                          [5, 5, 5, 9]],        # degenerate (zero area) -> 3
                         dtype=torch.float32)
    assert assign_levels(boxes, (100, 100)).tolist() == [5, 5, 4, 4, 3, 3, 3]
    assert assign_levels(boxes[:1], (100, 100), k_min=2, k_max=6).tolist() == [6]
    assert assign_levels(torch.zeros(0, 4), (10, 10)).shape == (0,)


def _boxes():
    # image 0: whole image (P5) and a small box (P3); image 1: ~0.31 of the image (P4)
    return [torch.tensor([[0.0, 0.0, 256.0, 256.0], [10.0, 20.0, 70.0, 80.0]]),
            torch.tensor([[40.0, 30.0, 200.0, 158.0]])]


def test_head_shapes_and_gradients_reach_p3_p4_p5():
    head = SAGMaskHead(8, 3, conv_channels=16)
    feats = _pyramid(2, 8, 256, 256, requires_grad=True)
    boxes = _boxes()
    sizes = [(256, 256), (256, 256)]
    assert [assign_levels(b, s).tolist() for b, s in zip(boxes, sizes)] == [[5, 3], [4]]
    out = head(feats, boxes, sizes)
    assert out.shape == (3, 3, 28, 28)
    out.square().sum().backward()
    for name, f in zip(("P3", "P4", "P5"), feats):
        assert f.grad is not None and f.grad.abs().sum() > 0, name


def test_head_reads_each_box_from_its_own_image():
    head = SAGMaskHead(4, 2, conv_channels=8, num_convs=1)
    feats = _pyramid(2, 4, 256, 256)
    box = torch.tensor([[40.0, 30.0, 200.0, 158.0]])
    both = head(feats, [box, box], [(256, 256)] * 2)
    alone = head([f[1:] for f in feats], [box], [(256, 256)])
    assert torch.allclose(both[1], alone[0], atol=1e-5)
    assert not torch.allclose(both[0], both[1])


def test_head_with_no_boxes_keeps_the_graph():
    head = SAGMaskHead(8, 3, conv_channels=16)
    feats = _pyramid(2, 8, 64, 64, requires_grad=True)
    out = head(feats, [torch.zeros(0, 4), torch.zeros(0, 4)], [(64, 64)] * 2)
    assert out.shape == (0, 3, 28, 28)
    loss = mask_loss(out, torch.zeros(0, dtype=torch.long), torch.zeros(0, 28, 28), LossConfig())["loss_mask"]
    assert loss.item() == 0
    loss.backward()
    assert feats[0].grad is not None and feats[0].grad.abs().sum() == 0


def test_spatial_attention_multiplies():
    head = SAGMaskHead(4, 2, conv_channels=8)
    x = torch.randn(3, 8, 14, 14)
    with torch.no_grad():
        head.sam.conv.weight.zero_()
    assert torch.allclose(head.sam(x), 0.5 * x)
    with torch.no_grad():
        head.sam.conv.weight.normal_()
    y = head.sam(x)
    ratio = y / x                                  # the same spatial map for every channel
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4)
    assert ((ratio > 0) & (ratio < 1)).all()


def test_mask_targets_crop_and_resize():
    gt = torch.zeros(2, 100, 120, dtype=torch.bool)
    gt[0, 20:60, 10:50] = True
    gt[1, 0:50, 0:120] = True
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0],     # exactly GT 0's box
                          [10.0, 20.0, 90.0, 60.0],     # twice as wide: left half of GT 0
                          [0.0, 25.0, 120.0, 75.0]])    # GT 1 covers the top half of this box
    t = mask_targets(gt, boxes, torch.tensor([0, 0, 1]))
    assert t.shape == (3, 28, 28) and t.dtype == torch.float32
    assert (t[0] == 1).all()
    assert (t[1][:, :14] == 1).all() and (t[1][:, 14:] == 0).all()
    assert (t[2][:14] == 1).all() and (t[2][14:] == 0).all()
    assert mask_targets(gt, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)).shape == (0, 28, 28)


def test_mask_loss_uses_the_label_channel_and_weight():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 28, 28, requires_grad=True)
    labels = torch.tensor([0, 2, 2, 1])
    targets = (torch.rand(4, 28, 28) > 0.5).float()
    loss = mask_loss(logits, labels, targets, LossConfig(mask=1.0))["loss_mask"]
    assert loss > 0
    from torchvision.ops import sigmoid_focal_loss as reference_focal
    chosen = logits[torch.arange(4), labels]
    expected = reference_focal(chosen, targets, alpha=LossConfig().mask_focal_alpha, gamma=2.0, reduction="mean")
    assert torch.allclose(loss, expected) and LossConfig().mask_focal_alpha == 0.5
    loss.backward()
    for k, lab in enumerate(labels.tolist()):
        assert logits.grad[k, lab].abs().sum() > 0
        others = [c for c in range(3) if c != lab]
        assert logits.grad[k, others].abs().sum() == 0
    doubled = mask_loss(logits, labels, targets, LossConfig(mask=2.0))["loss_mask"]
    assert torch.allclose(doubled, 2 * loss)
    # confident and right -> far smaller than confident and wrong
    good = mask_loss((targets * 2 - 1)[:, None].repeat(1, 3, 1, 1) * 8, labels, targets, LossConfig())["loss_mask"]
    bad = mask_loss((1 - targets * 2)[:, None].repeat(1, 3, 1, 1) * 8, labels, targets, LossConfig())["loss_mask"]
    assert good < 1e-4 < bad


def test_paste_all_ones_gives_the_box_rectangle():
    out = paste_masks(torch.ones(1, 28, 28), torch.tensor([[10.0, 20.0, 50.0, 60.0]]), (100, 100), threshold=0.5)
    assert out.shape == (1, 100, 100) and out.dtype == torch.bool
    expected = torch.zeros(100, 100, dtype=torch.bool)
    expected[20:60, 10:50] = True
    assert torch.equal(out[0], expected)
    probs = paste_masks(torch.ones(1, 28, 28), torch.tensor([[10.0, 20.0, 50.0, 60.0]]), (100, 100))
    assert probs.dtype == torch.float32
    assert torch.allclose(probs[0], expected.float())           # exactly 1 inside, exactly 0 outside


def test_paste_geometry_batch_and_clipping():
    left = torch.zeros(28, 28)
    left[:, :14] = 1.0
    boxes = torch.tensor([[10.0, 20.0, 66.0, 48.0],       # left half of this box = columns 10..37
                          [80.0, 90.0, 130.0, 140.0],     # runs past the image: clipped
                          [5.0, 5.0, 5.0, 9.0]])          # degenerate: empty
    out = paste_masks(torch.stack([left, torch.ones(28, 28), torch.ones(28, 28)]), boxes, (100, 120), threshold=0.5)
    assert out.shape == (3, 100, 120)
    cols = out[0].any(0).nonzero().squeeze(1)
    rows = out[0].any(1).nonzero().squeeze(1)
    assert (cols.min().item(), cols.max().item()) == (10, 37)
    assert (rows.min().item(), rows.max().item()) == (20, 47)
    assert out[1].sum() == 10 * 40 and out[1][90:, 80:].all()
    assert not out[2].any()
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (7, 9)).shape == (0, 7, 9)


def test_paste_inverts_mask_targets():
    gt = torch.zeros(1, 90, 110, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(90), torch.arange(110), indexing="ij")
    gt[0] = (yy - 45) ** 2 + (xx - 50) ** 2 <= 30 ** 2
    box = torch.tensor([[20.0, 15.0, 81.0, 76.0]])
    pasted = paste_masks(mask_targets(gt, box, torch.tensor([0])), box, (90, 110), threshold=0.5)[0]
    iou = (pasted & gt[0]).sum() / (pasted | gt[0]).sum()
    assert iou > 0.95
