"""MS-PanopticFPN assembled: backbone -> FPN (P3-P7) -> ATSS head -> semantic branch + SAG-Mask -> fusion.

Input/output contract
---------------------
``forward(images, targets=None, image_sizes=None)``

- ``images``: (B, 3, Hp, Wp) float, ImageNet-normalised, Hp and Wp multiples of ``config.size_divisibility``
  (``prn_cli.data.collate`` pads them so).
- ``image_sizes``: the unpadded (h, w) of each image (default: the padded size).
- training, ``targets``: one dict per image with ``boxes`` (G, 4) float xyxy in input pixels, ``labels`` (G,)
  long thing index (see :class:`CategoryMap`), ``masks`` (G, h, w) bool, ``semantic`` (h, w) long class index
  with 255 = ignore. Returns a dict of weighted scalar losses (keys start with ``loss_``).
- inference: returns one dict per image: ``boxes`` (K, 4), ``scores`` (K,), ``labels`` (K,) thing index,
  ``mask_probs`` (K, 28, 28) probabilities of each box's class, ``semantic_logits`` (C, h, w) at the input
  resolution. :meth:`panoptic` turns one of them into a panoptic id map and ``segments_info``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import FPN, ResNetBackbone
from ..categories import CategoryMap
from .atss import ATSSHead, ATSSLoss, atss_inference, make_anchors
from .config import MSPanopticFPNConfig
from ..prn.postprocess import channel_argmax
from .fusion import panoptic_fusion
from .sag_mask import SAGMaskHead, mask_loss, mask_targets, paste_masks
from .semantic import SemanticBranch, semantic_loss

STRIDES = (8, 16, 32, 64, 128)
IGNORE = 255


class MSPanopticFPN(nn.Module):
    """The base panoptic network. Parts can be injected (e.g. a different backbone) through keyword arguments."""

    def __init__(self, config: MSPanopticFPNConfig, categories: Sequence[dict], *, backbone: nn.Module | None = None,
                 fpn: nn.Module | None = None, head: nn.Module | None = None, semantic: nn.Module | None = None,
                 mask_head: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.category_map = CategoryMap.from_categories(categories)
        cm = self.category_map
        b = config.backbone
        self.backbone = backbone or ResNetBackbone(b.depth, width=b.width, norm=b.norm, frozen_stages=b.frozen_stages)
        self.fpn = fpn or FPN(self.backbone.out_channels, b.fpn_channels)
        self.head = head or ATSSHead(b.fpn_channels, len(STRIDES), config.head, cm.num_things, cm.num_supers)
        self.semantic = semantic or SemanticBranch(config.head.cls_channels, len(STRIDES), cm.num_classes)
        self.mask_head = mask_head or SAGMaskHead(b.fpn_channels, cm.num_things, conv_channels=b.fpn_channels)
        self.atss_loss = ATSSLoss(config.loss, config.head, list(cm.thing_super))

    # ----------------------------------------------------------------------------------------------------------

    def _features(self, images: torch.Tensor):
        pyramid = self.fpn(self.backbone(images))
        head_out = self.head(pyramid)
        anchors = make_anchors([p.shape[-2:] for p in pyramid], STRIDES, images.device,
                               scale=self.config.head.anchor_scale)
        hp, wp = images.shape[-2:]
        sem_logits = self.semantic(head_out["cls_features"], (hp // 4, wp // 4))
        return pyramid, head_out, anchors, sem_logits

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None,
                image_sizes: list[tuple[int, int]] | None = None):
        hp, wp = images.shape[-2:]
        image_sizes = image_sizes or [(hp, wp)] * images.shape[0]
        pyramid, head_out, anchors, sem_logits = self._features(images)
        if self.training:
            if targets is None:
                raise ValueError("training needs targets")
            return self._losses(pyramid, head_out, anchors, sem_logits, targets, image_sizes, (hp, wp))
        return self._inference(pyramid, head_out, anchors, sem_logits, image_sizes)

    def _losses(self, pyramid, head_out, anchors, sem_logits, targets, image_sizes, padded_size):
        losses = self.atss_loss(head_out, anchors, targets)
        positives = losses.pop("positives")
        hp, wp = padded_size
        semantic = sem_logits.new_full((len(targets), hp, wp), IGNORE, dtype=torch.long)
        for i, t in enumerate(targets):
            h, w = t["semantic"].shape
            semantic[i, :h, :w] = t["semantic"]
        losses.update(semantic_loss(sem_logits, semantic, self.config.loss))

        # SAG-Mask trains on GT boxes plus the highest-scoring ATSS positives (their matched GT gives the target).
        boxes, gt_index = [], []
        for t, pos in zip(targets, positives):
            n_gt = len(t["boxes"])
            keep = torch.argsort(pos["scores"], descending=True)[: max(0, self.config.mask_train_proposals - n_gt)]
            boxes.append(torch.cat([t["boxes"], pos["boxes"][keep]]).detach())
            gt_index.append(torch.cat([torch.arange(n_gt, device=t["boxes"].device), pos["gt_index"][keep]]))
        mask_logits = self.mask_head(pyramid[:3], boxes, image_sizes)
        labels = torch.cat([t["labels"][g] for t, g in zip(targets, gt_index)]) if boxes else None
        mask_t = torch.cat([mask_targets(t["masks"], b, g) for t, b, g in zip(targets, boxes, gt_index)])
        losses.update(mask_loss(mask_logits, labels, mask_t, self.config.loss))
        return losses

    @torch.no_grad()
    def _inference(self, pyramid, head_out, anchors, sem_logits, image_sizes):
        detections = atss_inference(head_out, anchors, image_sizes, self.config.inference,
                                    list(self.category_map.thing_super))
        mask_logits = self.mask_head(pyramid[:3], [d["boxes"] for d in detections], image_sizes)
        per_image = torch.split(mask_logits, [len(d["boxes"]) for d in detections])
        outputs = []
        hp, wp = sem_logits.shape[-2] * 4, sem_logits.shape[-1] * 4
        for i, (det, logits) in enumerate(zip(detections, per_image)):
            h, w = image_sizes[i]
            chosen = logits[torch.arange(len(det["labels"]), device=logits.device), det["labels"]]
            sem = F.interpolate(sem_logits[i: i + 1], size=(hp, wp), mode="bilinear", align_corners=False)
            outputs.append({"boxes": det["boxes"], "scores": det["scores"], "labels": det["labels"],
                            "mask_probs": chosen.sigmoid(), "semantic_logits": sem[0, :, :h, :w]})
        return outputs

    @torch.no_grad()
    def panoptic(self, output: dict, out_size: tuple[int, int] | None = None):
        """(ids (H, W) int64 numpy, segments_info) for one inference output, at ``out_size`` (default: as input).

        Masks and semantics are resized to ``out_size`` before fusion, so the segmentation is made at that
        resolution. Masks are pasted already binarised (bool), in bounded groups: memory is one byte per pixel
        and instance, not four. ``prn segment`` fuses at the processing size and enlarges only the id map.
        """
        sem = output["semantic_logits"]
        h, w = sem.shape[-2:]
        boxes = output["boxes"]
        if out_size is not None and tuple(out_size) != (h, w):
            oh, ow = out_size
            sem = F.interpolate(sem[None], size=(oh, ow), mode="bilinear", align_corners=False)[0]
            scale = boxes.new_tensor([ow / w, oh / h, ow / w, oh / h])
            boxes = boxes * scale
            h, w = oh, ow
        # fusion never looks at instances below the score threshold: paste only the others (same order, so ties
        # are broken as before)
        scores, labels, probs = output["scores"], output["labels"], output["mask_probs"]
        keep = (scores.double() >= self.config.inference.instance_score_threshold).nonzero().squeeze(1)
        masks = paste_masks(probs[keep], boxes[keep], (h, w), threshold=self.config.inference.mask_threshold)
        return panoptic_fusion(masks, scores[keep], labels[keep], channel_argmax(sem.flatten(1)).view(h, w),
                               self.category_map, self.config.inference)


def build_model(config: MSPanopticFPNConfig | dict, categories: Sequence[dict]) -> MSPanopticFPN:
    if isinstance(config, dict):
        config = MSPanopticFPNConfig.from_dict(config)
    return MSPanopticFPN(config, categories)
