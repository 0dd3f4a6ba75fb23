"""Losses shared by the networks: sigmoid focal, GIoU, multi-class soft dice, softmax focal, hierarchical CE.

Every function is differentiable and returns a tensor connected to its inputs' graph, also when nothing is
selected (no valid pixels, no positives): then the value is 0, so ``loss.backward()`` always works in a
training loop that sums terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sigmoid_focal_loss", "giou_loss", "dice_loss", "softmax_focal_loss", "hierarchical_cross_entropy"]


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum() * 0.0
    raise ValueError(f"unknown reduction {reduction!r} (expected 'none', 'mean' or 'sum')")


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "none") -> torch.Tensor:
    """RetinaNet focal loss on independent sigmoids (same values as ``torchvision.ops.sigmoid_focal_loss``).

    ``logits`` and ``targets`` (0/1 or soft, float) have the same shape. ``alpha < 0`` disables the class
    balancing weight. ``reduction``: ``"none"`` (elementwise) | ``"sum"`` | ``"mean"``.
    """
    targets = targets.to(logits.dtype)
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction)


def giou_loss(pred_xyxy: torch.Tensor, target_xyxy: torch.Tensor, weights: torch.Tensor | None = None,
              reduction: str = "none", eps: float = 1e-7) -> torch.Tensor:
    """``1 - GIoU`` of paired boxes (..., 4), float xyxy; same values as ``torchvision.ops.generalized_box_iou_loss``.

    ``weights`` (...,) multiplies each pair's loss. With weights, ``"mean"`` is the weighted mean
    ``sum(w * loss) / sum(w)`` (0 when the weights sum to 0); ``"sum"`` is ``sum(w * loss)``.
    """
    x1, y1, x2, y2 = pred_xyxy.unbind(-1)
    gx1, gy1, gx2, gy2 = target_xyxy.unbind(-1)
    iw = (torch.min(x2, gx2) - torch.max(x1, gx1)).clamp(min=0)
    ih = (torch.min(y2, gy2) - torch.max(y1, gy1)).clamp(min=0)
    inter = iw * ih
    union = (x2 - x1) * (y2 - y1) + (gx2 - gx1) * (gy2 - gy1) - inter
    iou = inter / (union + eps)
    enclosing = (torch.max(x2, gx2) - torch.min(x1, gx1)) * (torch.max(y2, gy2) - torch.min(y1, gy1))
    loss = 1 - (iou - (enclosing - union) / (enclosing + eps))
    if weights is None:
        return _reduce(loss, reduction)
    loss = loss * weights
    if reduction == "mean":
        total = weights.sum()
        return loss.sum() / total if total > 0 else loss.sum() * 0.0
    return _reduce(loss, reduction)


def _valid_one_hot(logits: torch.Tensor, target: torch.Tensor, ignore_index: int):
    """Softmax probabilities (B,C,H,W), one-hot target (B,C,H,W) and validity mask (B,1,H,W) of ``target``."""
    valid = target != ignore_index
    one_hot = F.one_hot(torch.where(valid, target, 0).long(), logits.shape[1]).permute(0, 3, 1, 2)
    valid = valid.unsqueeze(1).to(logits.dtype)
    return one_hot.to(logits.dtype) * valid, valid


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255,
              smooth: float = 1.0) -> torch.Tensor:
    """Multi-class soft dice over softmax probabilities, sums taken over the whole batch.

    ``logits`` (B, C, H, W) float, ``target`` (B, H, W) integer class index, ``ignore_index`` pixels are left out
    of every sum. Per class ``c`` with ``p`` = softmax probability and ``g`` = one-hot target::

        dice_c = (2 * sum(p*g) + smooth) / (sum(p) + sum(g) + smooth)        (the "linear" denominator)

    and the loss is ``mean_c(1 - dice_c)``. ``smooth`` keeps a class that is absent from both the prediction and
    the target at loss ~0 instead of 0/0, so no class needs to be dropped and no NaN can appear.
    """
    probs = logits.softmax(dim=1)
    one_hot, valid = _valid_one_hot(logits, target, ignore_index)
    probs = probs * valid
    dims = (0, 2, 3)
    inter = (probs * one_hot).sum(dims)
    denom = probs.sum(dims) + one_hot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    return (1 - dice).mean()


def softmax_focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
                       ignore_index: int = 255) -> torch.Tensor:
    """Multi-class focal loss ``-(1 - p_gt)^gamma * log p_gt``, averaged over the non-ignored pixels.

    ``logits`` (B, C, H, W) float, ``target`` (B, H, W) integer class index. 0 (with graph) if every pixel is
    ignored. ``gamma = 0`` gives plain cross-entropy.
    """
    valid = target != ignore_index
    log_p = logits.log_softmax(dim=1)
    log_p_gt = log_p.gather(1, torch.where(valid, target, 0).long().unsqueeze(1)).squeeze(1)
    loss = -((1 - log_p_gt.exp()) ** gamma) * log_p_gt
    loss = loss * valid.to(loss.dtype)
    n = valid.sum()
    return loss.sum() / n if n > 0 else loss.sum() * 0.0


def hierarchical_cross_entropy(super_logits: torch.Tensor, category_logits: torch.Tensor,
                               target_thing: torch.Tensor, thing_super: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a two-level classifier: super-category, then category within that super-category.

    - ``super_logits`` (N, S): one softmax over super-categories.
    - ``category_logits`` (N, T): one softmax per super-category, over its own categories only.
    - ``target_thing`` (N,) long thing index; ``thing_super`` (T,) long super-category of each thing.

    Returns ``mean_n[ CE(super_logits, thing_super[target]) + CE(within-softmax, target) ]``, where the
    within-softmax sees the target's siblings only (the other categories' logits are masked to -inf).
    A super-category with a single category therefore contributes 0 to the second term, as it should:
    there is nothing to choose. 0 (with graph) when N == 0.
    """
    if target_thing.numel() == 0:
        return super_logits.sum() * 0.0 + category_logits.sum() * 0.0
    thing_super = thing_super.to(device=category_logits.device, dtype=torch.long)
    target_thing = target_thing.long()
    target_super = thing_super[target_thing]
    loss_super = F.cross_entropy(super_logits, target_super, reduction="none")
    siblings = thing_super.unsqueeze(0) == target_super.unsqueeze(1)  # (N, T)
    within = category_logits.masked_fill(~siblings, float("-inf"))
    loss_within = F.cross_entropy(within, target_thing, reduction="none")
    return (loss_super + loss_within).mean()
