"""Instance-mask branch of MS-PanopticFPN: CenterMask's SAG-Mask head, its training targets and loss, and pasting
the 28x28 masks back into the image (docs/design.md, "MS-PanopticFPN").

Conventions
-----------
- Boxes are float (x1, y1, x2, y2) in input-image pixels, continuous coordinates: pixel (i, j) covers
  [j, j+1) x [i, i+1), its centre is (j + 0.5, i + 0.5). A box (10, 20, 50, 60) covers columns 10..49 and rows
  20..59 exactly. RoIAlign runs with ``aligned=True``, which uses the same convention.
- Thing index ``t`` = position in ``CategoryMap.thing_ids``; the head predicts one mask logit map per thing class.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ..losses import sigmoid_focal_loss
from .config import LossConfig

MASK_SIZE = 28
POOL_SIZE = 14


def assign_levels(boxes: torch.Tensor, image_size: tuple[int, int], k_min: int = 3, k_max: int = 5) -> torch.Tensor:
    """CenterMask's "ratio" level rule: level = ceil(k_max - log2(image_area / box_area)), clamped to
    [k_min, k_max]. ``boxes`` (K, 4) float xyxy; returns (K,) long FPN levels (3 = P3 ... 5 = P5).

    A box covering more than half the image goes to P5, (1/4, 1/2] to P4, the rest to P3 (with 3..5). Unlike the
    FPN rule it is relative to the image, so it behaves the same on small and large inputs.
    """
    boxes = boxes.reshape(-1, 4).float()
    image_area = float(image_size[0]) * float(image_size[1])
    area = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).clamp(min=1e-6)
    level = torch.ceil(k_max - torch.log2(image_area / area))
    return level.clamp(min=k_min, max=k_max).long()


class SpatialAttention(nn.Module):
    """CenterMask's spatial attention module: sigmoid(conv3x3([mean_c(x), max_c(x)])) * x.

    Input and output (N, C, H, W); the attention map (N, 1, H, W) is broadcast over channels.
    """

    def __init__(self, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class SAGMaskHead(nn.Module):
    """SAG-Mask: RoIAlign 14x14 from P3-P5 -> ``num_convs`` x (3x3 conv -> ReLU) -> SAM -> 2x2 deconv stride 2 ->
    ReLU -> 1x1 conv, giving (N, num_things, 28, 28) mask logits.

    ``forward(features, boxes, image_sizes)``:

    - ``features``: [P3, P4, P5], each (B, in_channels, Hp/s, Wp/s), s = 8, 16, 32 (extra levels are ignored).
    - ``boxes``: one (K_i, 4) float xyxy tensor per image, in input pixels.
    - ``image_sizes``: the unpadded (h, w) per image; the level rule uses this area.

    Returns (sum K_i, num_things, 28, 28) logits, the boxes of image 0 first, in the given order. With no box at
    all the result has 0 rows but is still connected to the graph.
    """

    def __init__(self, in_channels: int, num_things: int, conv_channels: int = 256, num_convs: int = 4,
                 strides: Sequence[int] = (8, 16, 32), sampling_ratio: int = 0):
        super().__init__()
        self.strides = tuple(int(s) for s in strides)
        self.levels = tuple(int(round(math.log2(s))) for s in self.strides)   # 8 -> P3, 16 -> P4, 32 -> P5
        self.sampling_ratio = sampling_ratio
        convs: list[nn.Module] = []
        c = in_channels
        for _ in range(num_convs):
            convs += [nn.Conv2d(c, conv_channels, 3, padding=1), nn.ReLU(inplace=True)]
            c = conv_channels
        self.convs = nn.Sequential(*convs)
        self.sam = SpatialAttention()
        self.deconv = nn.ConvTranspose2d(c, conv_channels, kernel_size=2, stride=2)
        self.predictor = nn.Conv2d(conv_channels, num_things, kernel_size=1)
        for m in list(self.convs) + [self.deconv]:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")   # MSRA, as detectron2
                nn.init.zeros_(m.bias)
        # Tiny predictor weights (CenterMask / Mask R-CNN): all masks start at probability ~0.5.
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def pool(self, features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor],
             image_sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
        """(sum K_i, C, 14, 14) RoI features, each box read from the level the CenterMask rule picks."""
        feats = list(features)[: len(self.strides)]
        ref = feats[0]
        rois = torch.cat([torch.cat([torch.full((len(b), 1), i, dtype=ref.dtype, device=ref.device),
                                     b.reshape(-1, 4).to(device=ref.device, dtype=ref.dtype)], dim=1)
                          for i, b in enumerate(boxes)]) if len(boxes) else ref.new_zeros((0, 5))
        levels = torch.cat([assign_levels(b.reshape(-1, 4), image_sizes[i], self.levels[0], self.levels[-1])
                            for i, b in enumerate(boxes)]).to(ref.device) if len(boxes) else \
            torch.zeros(0, dtype=torch.long, device=ref.device)
        out = ref.new_zeros((rois.shape[0], ref.shape[1], POOL_SIZE, POOL_SIZE))
        for level, stride, feat in zip(self.levels, self.strides, feats):
            idx = torch.nonzero(levels == level).squeeze(1)
            if idx.numel() == 0:
                continue
            out[idx] = roi_align(feat, rois[idx], (POOL_SIZE, POOL_SIZE), spatial_scale=1.0 / stride,
                                 sampling_ratio=self.sampling_ratio, aligned=True).to(out.dtype)
        if rois.shape[0] == 0:
            # Keep an (empty) path to the features so that a loss on no boxes can still call backward().
            out = out + ref.sum() * 0.0
        return out

    def forward(self, features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor],
                image_sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
        x = self.pool(features, boxes, image_sizes)
        x = self.convs(x)
        x = self.sam(x)
        x = F.relu(self.deconv(x))
        return self.predictor(x)


# ----------------------------------------------------------------------------------------------------------------
# training


def mask_targets(gt_masks: torch.Tensor, boxes: torch.Tensor, gt_index: torch.Tensor,
                 size: int = MASK_SIZE) -> torch.Tensor:
    """(K, 28, 28) float 0/1 targets: GT mask ``gt_index[k]`` cropped to ``boxes[k]`` and resampled.

    ``gt_masks`` (G, H, W) bool/uint8 at input resolution, ``boxes`` (K, 4) float xyxy, ``gt_index`` (K,) long.
    RoIAlign (aligned) reads the crop straight from the (G, 1, H, W) stack, using ``gt_index`` as the batch
    index, so no per-box copy of a full mask is made; the bilinear average is binarised at 0.5.
    """
    k = boxes.shape[0]
    device = boxes.device
    if k == 0:
        return torch.zeros((0, size, size), dtype=torch.float32, device=device)
    masks = gt_masks.to(device=device, dtype=torch.float32)[:, None]
    rois = torch.cat([gt_index.to(device=device, dtype=torch.float32)[:, None],
                      boxes.to(dtype=torch.float32)], dim=1)
    crops = roi_align(masks, rois, (size, size), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    return (crops[:, 0] >= 0.5).float()


def mask_loss(mask_logits: torch.Tensor, labels: torch.Tensor | None, targets: torch.Tensor,
              cfg: LossConfig) -> dict[str, torch.Tensor]:
    """Sigmoid focal loss on each box's own class channel, mean over all pixels of all boxes, x ``cfg.mask``.

    Its alpha is ``cfg.mask_focal_alpha`` (0.5, balanced), not the detector's 0.25: inside a box the foreground is
    usually the majority, and 0.25 kept an undertrained head's probabilities below the 0.5 paste threshold.

    ``mask_logits`` (K, T, 28, 28), ``labels`` (K,) thing index, ``targets`` (K, 28, 28) 0/1. With K == 0 the loss
    is ``mask_logits.sum() * 0`` so that backward() still works.
    """
    k = mask_logits.shape[0]
    if k == 0 or labels is None or labels.numel() == 0:
        return {"loss_mask": mask_logits.sum() * 0.0}
    chosen = mask_logits[torch.arange(k, device=mask_logits.device), labels.to(mask_logits.device).long()]
    loss = sigmoid_focal_loss(chosen.float(), targets.to(chosen.device, torch.float32), alpha=cfg.mask_focal_alpha,
                              gamma=cfg.focal_gamma, reduction="mean")
    return {"loss_mask": loss * cfg.mask}


# ----------------------------------------------------------------------------------------------------------------
# inference


def _interp_matrix(lo: torch.Tensor, hi: torch.Tensor, length: int, size: int) -> torch.Tensor:
    """(K, length, size) bilinear weights from a ``size``-cell mask spanning [lo, hi) to the ``length`` pixel
    centres 0.5, 1.5, ... of one image axis; rows of pixels whose centre lies outside [lo, hi) are zero.

    Mask cell c covers [lo + c*step, lo + (c+1)*step) and its value sits at its centre (align_corners=False);
    between the border cell centres and the box edges the border value is held (no fade towards zero).
    """
    centres = torch.arange(length, device=lo.device, dtype=torch.float32) + 0.5
    extent = (hi - lo).clamp(min=1e-6)
    t = (centres[None] - lo[:, None]) / extent[:, None] * size - 0.5        # (K, length), in cell-centre units
    t = t.clamp(0, size - 1)
    i0 = t.floor().long()
    frac = t - i0.float()
    i1 = (i0 + 1).clamp(max=size - 1)
    inside = ((centres[None] >= lo[:, None]) & (centres[None] < hi[:, None])).float()
    w = torch.zeros((*t.shape, size), dtype=torch.float32, device=lo.device)
    w.scatter_add_(2, i0[..., None], ((1 - frac) * inside)[..., None])
    w.scatter_add_(2, i1[..., None], (frac * inside)[..., None])
    return w


def paste_masks(mask_probs: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int],
                threshold: float | None = None, chunk_elements: int = 16 * 1024 * 1024) -> torch.Tensor:
    """Paste (K, 28, 28) mask probabilities into a (K, h, w) image canvas, each into its box (float xyxy pixels).

    Bilinear resampling with pixel-centre alignment (the same geometry as ``grid_sample(align_corners=False)``
    over the box); pixels whose centre is outside the box are exactly 0. Because the box region is axis-aligned
    the resampling is separable, out_k = Wy_k @ M_k @ Wx_k^T, so memory is the output plus (K, h + w, 28).
    Returns float32 probabilities, or bool ``>= threshold`` when ``threshold`` is given; then the masks are
    pasted in groups of about ``chunk_elements`` pixels, so the float work is bounded whatever K is.
    """
    h, w = int(image_size[0]), int(image_size[1])
    if mask_probs.dim() == 4:                      # (K, 1, 28, 28) is accepted too
        mask_probs = mask_probs[:, 0]
    k, mh, mw = mask_probs.shape
    device = mask_probs.device
    if k == 0:
        out = torch.zeros((0, h, w), dtype=torch.float32, device=device)
        return out.bool() if threshold is not None else out
    b = boxes.to(device=device, dtype=torch.float32).reshape(-1, 4)
    if threshold is not None:
        step = max(1, chunk_elements // max(1, h * w))
        out = torch.empty((k, h, w), dtype=torch.bool, device=device)
        for s in range(0, k, step):
            out[s:s + step] = paste_masks(mask_probs[s:s + step], b[s:s + step], (h, w)) >= threshold
        return out
    wy = _interp_matrix(b[:, 1], b[:, 3], h, mh)          # (K, h, 28)
    wx = _interp_matrix(b[:, 0], b[:, 2], w, mw)          # (K, w, 28)
    return torch.bmm(torch.bmm(wy, mask_probs.float()), wx.transpose(1, 2))
