"""Semantic branch of MS-PanopticFPN: shapes, gradient flow, loss behaviour (overfit, ignore pixels), inference."""

from __future__ import annotations

import torch

from prn_cli.models.ms_panoptic_fpn.config import LossConfig
from prn_cli.models.ms_panoptic_fpn.semantic import SemanticBranch, semantic_inference, semantic_loss

STRIDES = (8, 16, 32, 64, 128)


def _features(b: int, c: int, h: int, w: int, requires_grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, c, -(-h // s), -(-w // s), generator=g).requires_grad_(requires_grad) for s in STRIDES]


def test_output_shape():
    branch = SemanticBranch(8, len(STRIDES), 6)
    logits = branch(_features(2, 8, 128, 96), (32, 24))
    assert logits.shape == (2, 6, 32, 24)
    assert logits.dtype == torch.float32


def test_gradients_reach_every_level():
    branch = SemanticBranch(4, len(STRIDES), 3)
    feats = _features(1, 4, 256, 256, requires_grad=True)
    branch(feats, (64, 64)).square().sum().backward()
    for level, f in enumerate(feats):
        assert f.grad is not None and f.grad.abs().sum() > 0, f"no gradient at level {level}"


def test_loss_keys_weights_and_finite():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 8, 8, requires_grad=True)
    target = torch.randint(0, 5, (2, 32, 32))
    base = semantic_loss(logits, target, LossConfig())
    assert set(base) == {"loss_semantic_dice", "loss_semantic_focal"}
    assert all(torch.isfinite(v) and v > 0 for v in base.values())
    doubled = semantic_loss(logits, target, LossConfig(semantic_dice=2.0, semantic_focal=3.0))
    assert torch.allclose(doubled["loss_semantic_dice"], 2 * base["loss_semantic_dice"])
    assert torch.allclose(doubled["loss_semantic_focal"], 3 * base["loss_semantic_focal"])


def test_ignore_pixels_do_not_affect_the_loss():
    torch.manual_seed(0)
    target = torch.randint(0, 4, (2, 16, 16))
    target[:, :, :5] = 255
    logits = torch.randn(2, 4, 16, 16)            # at target size: no interpolation mixes pixels
    changed = logits.clone()
    changed[:, :, :, :5] = torch.randn(2, 4, 16, 5) * 10
    a = semantic_loss(logits, target, LossConfig())
    b = semantic_loss(changed, target, LossConfig())
    for key in a:
        assert torch.allclose(a[key], b[key]), key
    x = logits.clone().requires_grad_(True)
    sum(semantic_loss(x, target, LossConfig()).values()).backward()
    assert x.grad[:, :, :, :5].abs().max() == 0
    assert x.grad[:, :, :, 5:].abs().max() > 0


def test_all_ignore_gives_zero_loss_with_graph():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    losses = semantic_loss(logits, torch.full((1, 16, 16), 255), LossConfig())
    total = sum(losses.values())
    assert total.item() == 0
    total.backward()
    assert logits.grad is not None


def test_tiny_overfit_drives_the_loss_down():
    torch.manual_seed(0)
    b, c, h, w, k = 2, 8, 64, 64, 4
    feats = _features(b, c, h, w)
    with torch.no_grad():                        # a learnable target: the argmax of a random teacher branch
        teacher = SemanticBranch(c, len(STRIDES), k)
        teacher.predictor.weight.normal_(std=1.0)
        target = semantic_inference(teacher(feats, (h // 4, w // 4)), (h, w), argmax=True)
    target[:, :4] = 255
    branch = SemanticBranch(c, len(STRIDES), k)
    opt = torch.optim.Adam(branch.parameters(), lr=0.05)
    cfg = LossConfig()
    first = last = None
    for _ in range(200):
        loss = sum(semantic_loss(branch(feats, (h // 4, w // 4)), target, cfg).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    assert last < first / 5, (first, last)


def test_inference_upsamples_the_padded_map_then_crops():
    logits = torch.zeros(1, 2, 8, 8)
    logits[0, 1, :, 4:] = 5.0                    # class 1 on the right half of the padded 32 x 32 input
    probs = semantic_inference(logits, (20, 30))
    assert probs.shape == (1, 2, 20, 30)
    assert torch.allclose(probs.sum(1), torch.ones(1, 20, 30))
    labels = semantic_inference(logits, (20, 30), argmax=True)
    assert labels.shape == (1, 20, 30) and labels.dtype == torch.long
    assert (labels[0, :, :14] == 0).all() and (labels[0, :, 18:] == 1).all()   # boundary stays near x = 16
