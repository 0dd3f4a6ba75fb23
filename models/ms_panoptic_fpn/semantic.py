"""Semantic ("stuff") branch of MS-PanopticFPN: Realtime Panoptic's concatenation of every FPN level's
classification-tower features, predicted at stride 4 (docs/design.md, "MS-PanopticFPN").

Contracts
---------
- :class:`SemanticBranch` ``forward(features, output_size)``: ``features`` is the list of classification-tower
  outputs, one per FPN level, each (B, C, Hp/s, Wp/s) for strides s = 8..128 of the padded input (Hp, Wp);
  ``output_size`` = (Hp // 4, Wp // 4). Returns (B, num_classes, Hp/4, Wp/4) float logits over ALL classes
  (class index = position in ``CategoryMap.class_ids``; things included).
- :func:`semantic_loss`: logits at stride 4 and a (B, Hp, Wp) long target (255 = ignore) at input resolution.
- :func:`semantic_inference`: logits at stride 4 -> probabilities or argmax at the unpadded image size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import dice_loss, softmax_focal_loss
from .config import LossConfig

IGNORE_INDEX = 255


class SemanticBranch(nn.Module):
    """Upsample every level to stride 4, concatenate, one 3x3 conv -> per-pixel class logits.

    There is deliberately no normalisation here: the features come out of the detection classification tower,
    whose normalisation (and running statistics) is shared with detection, as the design prescribes.
    """

    def __init__(self, in_channels: int, num_levels: int, num_classes: int):
        super().__init__()
        self.num_levels = num_levels
        self.predictor = nn.Conv2d(in_channels * num_levels, num_classes, kernel_size=3, padding=1)
        # Small logits at the start: softmax close to uniform, so neither loss term starts saturated.
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, features: Sequence[torch.Tensor], output_size: tuple[int, int]) -> torch.Tensor:
        if len(features) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} feature levels, got {len(features)}")
        size = (int(output_size[0]), int(output_size[1]))
        up = [f if tuple(f.shape[-2:]) == size else
              F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features]
        return self.predictor(torch.cat(up, dim=1))


# ----------------------------------------------------------------------------------------------------------------
# losses


def semantic_loss(logits: torch.Tensor, target: torch.Tensor, cfg: LossConfig) -> dict[str, torch.Tensor]:
    """Dice + softmax focal loss on the semantic logits.

    ``logits``: (B, C, h4, w4) at stride 4; ``target``: (B, H, W) long class indices, 255 = ignore (e.g. padding).
    The logits are bilinearly upsampled to (H, W) first, so the loss is taken at label resolution. Ignore pixels
    contribute to neither term. The terms are the shared ones of ``prn_cli.models.losses``: multi-class soft dice
    (linear denominator, sums over the whole batch, mean over all classes) x ``cfg.semantic_dice`` as
    ``loss_semantic_dice``, and softmax focal (gamma = ``cfg.focal_gamma``, no alpha: a scalar alpha would only
    duplicate the term's weight) x ``cfg.semantic_focal`` as ``loss_semantic_focal``. Both are 0, still attached to
    the graph, when no pixel is valid.
    """
    if target.dim() != 3:
        raise ValueError(f"target must be (B, H, W), got {tuple(target.shape)}")
    if tuple(logits.shape[-2:]) != tuple(target.shape[-2:]):
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    logits = logits.float()          # softmax sums over many pixels: keep them in float32 under autocast
    dice = dice_loss(logits, target, ignore_index=IGNORE_INDEX)
    focal = softmax_focal_loss(logits, target, gamma=cfg.focal_gamma, ignore_index=IGNORE_INDEX)
    return {"loss_semantic_dice": dice * cfg.semantic_dice, "loss_semantic_focal": focal * cfg.semantic_focal}


# ----------------------------------------------------------------------------------------------------------------
# inference


def semantic_inference(logits: torch.Tensor, image_size: tuple[int, int], padded_size: tuple[int, int] | None = None,
                       *, argmax: bool = False) -> torch.Tensor:
    """Stride-4 logits (B, C, h4, w4) -> (B, C, H, W) softmax probabilities, or (B, H, W) long class indices with
    ``argmax=True``, at ``image_size`` = (H, W), the unpadded input size.

    The logits cover the padded input ``padded_size`` (default 4 x their size), so they are upsampled to that
    size and then cropped: resizing straight to (H, W) would stretch the padding into the image.
    """
    if padded_size is None:
        padded_size = (logits.shape[-2] * 4, logits.shape[-1] * 4)
    h, w = int(image_size[0]), int(image_size[1])
    if h > padded_size[0] or w > padded_size[1]:
        raise ValueError(f"image size {(h, w)} exceeds padded size {tuple(padded_size)}")
    up = F.interpolate(logits.float(), size=tuple(int(s) for s in padded_size), mode="bilinear",
                       align_corners=False)[..., :h, :w]
    return up.argmax(dim=1) if argmax else up.softmax(dim=1)
