"""Thing classes from the image: PRN's thing classifier and the crops it reads.

PRN's semantic head starts from the base's classes (the residual base prior) and, trained on bases that are
mostly right, keeps them: on prn's synthetic benchmark its vote inside each base thing agrees with the base's class
every time, including the one base thing in five whose class is wrong. A thing whose class is wrong is a false
positive and a missed thing at once, so those classes are worth more to PQth than any boundary. The classifier
reads each final thing on its own: a square crop of the image around the thing and the thing's mask, resampled
to ``crop_size`` x ``crop_size`` (:func:`thing_crops`), and says which thing class it is. The predictor relabels a
thing where the classifier is sure of another class (``PostProcessConfig.classifier_confidence``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision.ops import roi_align

__all__ = ["ThingClassifier", "thing_boxes", "thing_crops"]

#: a crop is the thing's bounding box made square, times this, plus ``CROP_PAD`` pixels: it shows the thing whole
#: and a little of its surroundings, so the shape's outline is inside the crop
CROP_SCALE = 1.2
CROP_PAD = 4.0


class ThingClassifier(nn.Module):
    """Thing-class logits from thing crops.

    Input ``crops`` (N, 4, S, S): the ImageNet-normalised RGB and the thing's mask as +-1 (:func:`thing_crops`).
    Output (N, K) logits over the K thing classes, in the order of the category map's thing classes, or (N, K + 1)
    with ``background``: the last is "no thing" (a base's false detection, a region of stuff). Three stages of
    two 3x3 convolutions (batch norm, ReLU) of ``channels`` widths, 2x2 max-pooling between them, global average
    pooling and a linear read-out.
    """

    def __init__(self, num_classes: int, channels: Sequence[int] = (32, 64, 128), crop_size: int = 32,
                 background: bool = False):
        super().__init__()
        if num_classes < 1 or not channels or min(channels) < 1 or crop_size < 8:
            raise ValueError(f"ThingClassifier needs num_classes >= 1, channels >= 1 and crop_size >= 8, "
                             f"got {num_classes}, {channels}, {crop_size}")
        layers: list[nn.Module] = []
        width = 4
        for i, out in enumerate(channels):
            if i:
                layers.append(nn.MaxPool2d(2))
            for _ in range(2):
                layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                width = out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.read_out = nn.Linear(width, num_classes + int(bool(background)))
        self.crop_size = int(crop_size)
        self.num_classes = int(num_classes)
        self.background = bool(background)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.read_out(self.body(crops))

    @torch.no_grad()
    def probabilities(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, K) class probabilities ((N, K + 1) with the "no thing" class last) averaged over the four 90-degree
        rotations of each crop: the shapes are drawn at any angle, so the rotations are equally valid views and their
        mean is steadier than one of them."""
        return sum(torch.softmax(self(torch.rot90(crops, k, (2, 3))), dim=1) for k in range(4)) / 4


def thing_boxes(ids: torch.Tensor, segment_ids: Sequence[int], *, with_areas: bool = False):
    """(N, 4) crop boxes (x0, y0, x1, y1) in pixels of the segments ``segment_ids`` of the (H, W) id map ``ids``,
    each present: the segment's bounding box made square about its centre, scaled by ``CROP_SCALE`` and grown by
    ``CROP_PAD``. One pass over the map for all segments (a photo can hold ten million pixels and many things);
    ``with_areas``: ``(boxes, areas)``, the segments' pixel counts (N,) from the same pass."""
    wanted = torch.as_tensor([int(v) for v in segment_ids], dtype=torch.int64).reshape(-1)
    order, sort = torch.sort(wanted)
    flat = ids.reshape(-1).to(torch.int64)
    position = torch.searchsorted(order, flat).clamp(max=max(order.numel() - 1, 0))
    hit = order[position] == flat if order.numel() else torch.zeros_like(flat, dtype=torch.bool)
    pixels = torch.nonzero(hit).squeeze(1)
    which = position[pixels]
    width = ids.shape[-1]
    rows, cols = pixels // width, pixels % width
    n = order.numel()
    y0 = torch.full((n,), ids.shape[-2], dtype=torch.int64).scatter_reduce(0, which, rows, "amin")
    y1 = torch.full((n,), -1, dtype=torch.int64).scatter_reduce(0, which, rows, "amax") + 1
    x0 = torch.full((n,), width, dtype=torch.int64).scatter_reduce(0, which, cols, "amin")
    x1 = torch.full((n,), -1, dtype=torch.int64).scatter_reduce(0, which, cols, "amax") + 1
    missing = y1 <= 0
    if bool(missing.any()):
        raise ValueError(f"segment {int(order[missing][0])} has no pixels")
    side = torch.maximum(y1 - y0, x1 - x0).double() * CROP_SCALE + CROP_PAD
    cy, cx = (y0 + y1).double() / 2, (x0 + x1).double() / 2
    boxes = torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dim=1)
    out = torch.empty_like(boxes)
    out[sort] = boxes           # back to the order of segment_ids
    if not with_areas:
        return out.float()
    areas = torch.empty(n, dtype=torch.int64)
    areas[sort] = torch.bincount(which, minlength=n)
    return out.float(), areas


def thing_crops(image: torch.Tensor, ids: torch.Tensor, segment_ids: Sequence[int],
                crop_size: int = 32, boxes: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 4, S, S) classifier inputs of the segments ``segment_ids`` of ``ids`` (H, W) in ``image`` (3, h, w),
    normalised.

    The image may be at another size than the id map (a predictor runs at its processing size, the map is at the
    photo's); the boxes are scaled to it. Bilinear sampling (``roi_align``, 2x2 points per output pixel); outside
    the image the crop is 0, the normalised mean colour. Each mask is sampled from a window around its own box,
    so the cost follows the things' sizes, not the photo's. ``boxes``: :func:`thing_boxes` of the same segments,
    when the caller has them."""
    n = len(segment_ids)
    if n == 0:
        return image.new_zeros((0, 4, crop_size, crop_size), dtype=torch.float32)
    ids = torch.as_tensor(ids)
    boxes = thing_boxes(ids, segment_ids) if boxes is None else boxes
    h, w = ids.shape[-2:]
    sy, sx = image.shape[-2] / h, image.shape[-1] / w
    first = torch.zeros((n, 1))
    rgb = roi_align(image[None].float(), torch.cat([first, boxes * torch.tensor([sx, sy, sx, sy])], 1),
                    (crop_size, crop_size), 1.0, 2, aligned=True)
    masks = []
    for k, sid in enumerate(segment_ids):
        x0, y0, x1, y1 = boxes[k].tolist()
        wy0, wx0 = max(int(y0) - 1, 0), max(int(x0) - 1, 0)
        window = (ids[wy0:min(int(y1) + 2, h), wx0:min(int(x1) + 2, w)] == int(sid)).float()
        shifted = boxes[k:k + 1] - torch.tensor([wx0, wy0, wx0, wy0], dtype=torch.float32)
        masks.append(roi_align(window[None, None], torch.cat([torch.zeros((1, 1)), shifted], 1),
                               (crop_size, crop_size), 1.0, 2, aligned=True))
    return torch.cat([rgb, 2 * torch.cat(masks) - 1], dim=1)
