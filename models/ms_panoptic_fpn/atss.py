"""ATSS detector (Zhang et al. 2020) with decoupled objectness and hierarchical classification
(docs/design.md, "MS-PanopticFPN").

Conventions (used by every function here)
-----------------------------------------
- Boxes are float ``(x1, y1, x2, y2)`` in input-image pixels, continuous coordinates: pixel ``(i, j)`` covers
  ``[j, j+1) x [i, i+1)``; a box's width is ``x2 - x1`` (no legacy "+1").
- Anchors: one square per feature-map location and level, side ``scale * stride`` (ATSS "8S": ``scale=8``),
  centered at ``((x + 0.5) * stride, (y + 0.5) * stride)`` for feature cell ``(y, x)`` -- the center of the
  input-pixel block the cell covers. Anchors of a level are listed row-major (y, then x), the order of
  ``tensor.permute(0, 2, 3, 1).reshape(B, H*W, C)`` applied to the head's (B, C, H, W) outputs.
- Box coding: ATSS's default 'BOX' coder, see :class:`BoxCoder` (deltas relative to the anchor, weights
  (10, 10, 5, 5), log-size deltas clamped at ``log(1000/16)`` when decoding).
- Classes: thing index ``0..T-1`` (see ``CategoryMap``); ``thing_super[t]`` is the super-category of thing ``t``.

Hierarchical probability of thing ``t`` with super-category ``s(t)`` at an anchor::

    P(t) = sigmoid(objectness) * softmax(super_logits)[s(t)] * softmax_{t' : s(t') = s(t)}(category_logits)[t]

so the probabilities of all things sum to ``sigmoid(objectness)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou

from ..backbone import group_norm_groups
from ..losses import giou_loss, hierarchical_cross_entropy, sigmoid_focal_loss
from .config import HeadConfig, InferenceConfig, LossConfig

__all__ = ["make_anchors", "BoxCoder", "atss_assign", "centerness_target", "LevelSharedBatchNorm", "PerLevel",
           "Tower", "ATSSHead", "ATSSLoss", "atss_inference", "hierarchical_log_probabilities",
           "hierarchical_probabilities", "flatten_levels"]


# ------------------------------------------------------------------------------------------------- anchors

def make_anchors(feature_sizes: Sequence[Sequence[int]], strides: Sequence[int], device=None,
                 scale: float = 8.0, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """One square anchor per location: a list over levels of (H_l * W_l, 4) float xyxy boxes.

    ``feature_sizes``: (H_l, W_l) per level; ``strides``: s_l per level. The anchor of cell (y, x) is centered at
    ((x + 0.5) s, (y + 0.5) s) with side ``scale * s``; rows are in row-major (y, x) order.
    """
    out = []
    for (h, w), s in zip(feature_sizes, strides):
        h, w = int(h), int(w)
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * s
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        half = scale * s / 2.0
        out.append(torch.stack([cx - half, cy - half, cx + half, cy + half], dim=-1).reshape(-1, 4))
    return out


class BoxCoder:
    """ATSS 'BOX' coding of a box relative to an anchor (continuous widths, no "+1").

    ``encode(boxes, anchors)`` -> deltas (N, 4) ``(wx*(gx-ax)/aw, wy*(gy-ay)/ah, ww*log(gw/aw), wh*log(gh/ah))``
    with centers (gx, gy), (ax, ay) and sizes g*, a*. ``decode(deltas, anchors)`` inverts it; the size deltas are
    clamped at ``clamp`` (after dividing by their weights) so an untrained head cannot overflow ``exp``.
    For boxes within that range, ``decode(encode(b, a), a) == b`` up to float rounding.
    """

    def __init__(self, weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0), clamp: float = math.log(1000.0 / 16)):
        self.weights = tuple(float(w) for w in weights)
        self.clamp = float(clamp)

    @staticmethod
    def _center_size(b: torch.Tensor):
        w = b[..., 2] - b[..., 0]
        h = b[..., 3] - b[..., 1]
        return b[..., 0] + 0.5 * w, b[..., 1] + 0.5 * h, w, h

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        wx, wy, ww, wh = self.weights
        ax, ay, aw, ah = self._center_size(anchors)
        gx, gy, gw, gh = self._center_size(boxes)
        return torch.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah,
                            ww * torch.log(gw / aw), wh * torch.log(gh / ah)], dim=-1)

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        wx, wy, ww, wh = self.weights
        ax, ay, aw, ah = self._center_size(anchors.to(deltas.dtype))
        cx = deltas[..., 0] / wx * aw + ax
        cy = deltas[..., 1] / wy * ah + ay
        w = torch.exp((deltas[..., 2] / ww).clamp(max=self.clamp)) * aw
        h = torch.exp((deltas[..., 3] / wh).clamp(max=self.clamp)) * ah
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


# ---------------------------------------------------------------------------------------------- assignment

def _centers(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def _side_distances(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) distances l, t, r, b from ``points`` (..., 2) to the sides of ``boxes`` (..., 4) (broadcast)."""
    return torch.stack([points[..., 0] - boxes[..., 0], points[..., 1] - boxes[..., 1],
                        boxes[..., 2] - points[..., 0], boxes[..., 3] - points[..., 1]], dim=-1)


def atss_assign(anchors_per_level: Sequence[torch.Tensor], gt_boxes: torch.Tensor, topk: int = 9):
    """Adaptive training sample selection for one image.

    ``anchors_per_level``: list of (A_l, 4) xyxy; ``gt_boxes`` (G, 4) xyxy. Over the concatenated anchors (A):

    1. per GT and per level, the ``topk`` anchors whose centers are closest (L2) to the GT center are candidates;
    2. the GT's threshold is mean + std (unbiased) of the candidates' IoUs with it;
    3. a candidate is positive if its IoU >= threshold and its center is strictly inside the GT
       (min of l, t, r, b > 0.01);
    4. an anchor positive for several GTs goes to the one with the highest IoU (ties: lowest GT index).

    Returns ``matched_gt`` (A,) long (GT index, -1 for negatives) and ``ious`` (A,) float, the IoU of each anchor
    with its matched GT (0 for negatives).
    """
    anchors = torch.cat(list(anchors_per_level), dim=0)
    num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
    matched = torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)
    matched_iou = anchors.new_zeros(num_anchors)
    if num_gt == 0 or num_anchors == 0:
        return matched, matched_iou
    gt_boxes = gt_boxes.to(anchors)
    ious = box_iou(anchors, gt_boxes)                                  # (A, G)
    anchor_centers = _centers(anchors)
    # exact distances (the matmul shortcut of cdist can reorder near-equal candidates)
    dist = torch.cdist(anchor_centers, _centers(gt_boxes), compute_mode="donot_use_mm_for_euclid_dist")  # (A, G)

    candidates, start = [], 0
    for level in anchors_per_level:
        n = level.shape[0]
        k = min(topk, n)
        if k > 0:
            candidates.append(dist[start:start + n].topk(k, dim=0, largest=False).indices + start)
        start += n
    cand = torch.cat(candidates, dim=0)                                # (K, G) anchor indices
    cand_iou = ious.gather(0, cand)                                    # (K, G)
    # A single candidate (a one-anchor pyramid) has no spread: the unbiased std would be NaN.
    std = cand_iou.std(dim=0) if cand.shape[0] > 1 else torch.zeros_like(cand_iou[0])
    threshold = cand_iou.mean(dim=0) + std                             # (G,)
    inside = _side_distances(anchor_centers[cand], gt_boxes.unsqueeze(0)).amin(dim=-1) > 0.01
    positive = (cand_iou >= threshold.unsqueeze(0)) & inside           # (K, G)

    claims = torch.full_like(ious, float("-inf"))
    gt_index = torch.arange(num_gt, device=anchors.device).expand_as(cand)
    claims[cand[positive], gt_index[positive]] = cand_iou[positive]
    best_iou, best_gt = claims.max(dim=1)
    pos = best_iou > float("-inf")
    matched[pos] = best_gt[pos]
    matched_iou[pos] = best_iou[pos]
    return matched, matched_iou


def centerness_target(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)) of ``points`` (N, 2) inside paired ``boxes`` (N, 4); in (0, 1]."""
    ltrb = _side_distances(points, boxes)
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    return torch.sqrt((lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values))


# ---------------------------------------------------------------------------------------------------- head

class LevelSharedBatchNorm(nn.Module):
    """BatchNorm over all FPN levels at once: one set of batch and running statistics for the shared head.

    ``forward(levels)``: list of (B, C, H_l, W_l) -> list of the same shapes. The levels' flattened spatial
    positions are concatenated into one (B, C, 1, sum H_l W_l) tensor, normalised, and split back. The inner
    ``bn`` is a plain ``nn.BatchNorm2d``, so ``nn.SyncBatchNorm.convert_sync_batchnorm`` turns it into a
    cross-process *and* cross-level BatchNorm without changing this wrapper.
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=eps, momentum=momentum)

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        sizes = [x.shape[-2] * x.shape[-1] for x in levels]
        joint = torch.cat([x.flatten(2) for x in levels], dim=2).unsqueeze(2)
        out = self.bn(joint).squeeze(2).split(sizes, dim=2)
        return [o.reshape(x.shape) for o, x in zip(out, levels)]


class PerLevel(nn.Module):
    """Applies one module to each level separately (GroupNorm needs no cross-level statistics)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.module(x) for x in levels]


def _level_norm(norm: str, channels: int) -> nn.Module:
    if norm == "bn_shared":
        return LevelSharedBatchNorm(channels)
    if norm == "gn":
        return PerLevel(nn.GroupNorm(group_norm_groups(channels), channels))
    raise ValueError(f"unknown head norm {norm!r} (expected 'bn_shared' or 'gn')")


class Tower(nn.Module):
    """``num_convs`` x (3x3 conv -> level norm -> ReLU), shared by all levels; list of levels in and out."""

    def __init__(self, in_channels: int, channels: int, num_convs: int, norm: str):
        super().__init__()
        # A conv bias right before BatchNorm is cancelled by the mean subtraction, so only GN keeps one.
        bias = norm != "bn_shared"
        self.convs = nn.ModuleList(nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=bias)
                                   for i in range(num_convs))
        self.norms = nn.ModuleList(_level_norm(norm, channels) for _ in range(num_convs))

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        for conv, norm in zip(self.convs, self.norms):
            levels = [F.relu(x) for x in norm([conv(x) for x in levels])]
        return levels


class ATSSHead(nn.Module):
    """Dense head shared across FPN levels: a classification tower and a box tower.

    ``forward(features)``: list over levels of (B, in_channels, H_l, W_l) -> dict of lists over levels:

    - ``objectness`` (B, 1, H, W) logits (hierarchical mode; from the cls tower),
    - ``super_logits`` (B, S, H, W) and ``category_logits`` (B, T, H, W) (hierarchical mode), or
      ``class_logits`` (B, T, H, W) sigmoid logits (flat mode, ``cfg.classification == "flat"``),
    - ``box_regression`` (B, 4, H, W) :class:`BoxCoder` deltas, times a learnable scale per level,
    - ``centerness`` (B, 1, H, W) logits (from the box tower),
    - ``cls_features`` (B, cfg.cls_channels, H, W): the cls tower's output, read by the semantic branch.
    """

    def __init__(self, in_channels: int, num_levels: int, cfg: HeadConfig, num_things: int, num_supers: int):
        super().__init__()
        if cfg.classification not in ("hierarchical", "flat"):
            raise ValueError(f"unknown classification mode {cfg.classification!r}")
        self.num_levels = num_levels
        self.hierarchical = cfg.classification == "hierarchical"
        self.cls_tower = Tower(in_channels, cfg.cls_channels, cfg.num_convs, cfg.norm)
        self.box_tower = Tower(in_channels, cfg.box_channels, cfg.num_convs, cfg.norm)

        def pred(c_in, c_out):
            return nn.Conv2d(c_in, c_out, 3, padding=1)

        if self.hierarchical:
            self.objectness = pred(cfg.cls_channels, 1)
            self.super_logits = pred(cfg.cls_channels, num_supers)
            self.category_logits = pred(cfg.cls_channels, num_things)
        else:
            self.class_logits = pred(cfg.cls_channels, num_things)
        self.box_regression = pred(cfg.box_channels, 4)
        self.centerness = pred(cfg.box_channels, 1)
        self.scales = nn.Parameter(torch.ones(num_levels))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # Focal-loss prior: every anchor starts as "background with probability 1 - prior", so the many easy
        # negatives do not swamp the first iterations. The conditional class softmaxes start uniform.
        prior_bias = -math.log((1 - cfg.prior_prob) / cfg.prior_prob)
        nn.init.constant_(self.objectness.bias if self.hierarchical else self.class_logits.bias, prior_bias)

    def forward(self, features: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        if len(features) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} feature levels, got {len(features)}")
        cls_feats = self.cls_tower(list(features))
        box_feats = self.box_tower(list(features))
        out: dict[str, list[torch.Tensor]] = {}
        if self.hierarchical:
            out["objectness"] = [self.objectness(x) for x in cls_feats]
            out["super_logits"] = [self.super_logits(x) for x in cls_feats]
            out["category_logits"] = [self.category_logits(x) for x in cls_feats]
        else:
            out["class_logits"] = [self.class_logits(x) for x in cls_feats]
        out["box_regression"] = [self.box_regression(x) * self.scales[i] for i, x in enumerate(box_feats)]
        out["centerness"] = [self.centerness(x) for x in box_feats]
        out["cls_features"] = cls_feats
        return out


def flatten_levels(levels: list[torch.Tensor]) -> torch.Tensor:
    """List of (B, C, H_l, W_l) -> (B, sum_l H_l W_l, C), in the anchors' order (level, then row-major y, x)."""
    return torch.cat([x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1]) for x in levels], dim=1)


# ------------------------------------------------------------------------------------ hierarchical scores

def hierarchical_log_probabilities(objectness: torch.Tensor, super_logits: torch.Tensor,
                                   category_logits: torch.Tensor, thing_super: torch.Tensor) -> torch.Tensor:
    """log P(thing) (N, T) from ``objectness`` (N,) or (N, 1), ``super_logits`` (N, S), ``category_logits`` (N, T).

    ``thing_super`` (T,) long. See the module docstring for the factorisation.
    """
    thing_super = torch.as_tensor(thing_super, dtype=torch.long, device=category_logits.device)
    n, t = category_logits.shape
    groups = thing_super.unsqueeze(0).expand(n, t)
    # Softmax within each super-category: subtract the group max (for stability; it cancels exactly), then
    # normalise by the group's sum of exponentials.
    gmax = category_logits.new_full((n, super_logits.shape[1]), float("-inf"))
    gmax = gmax.scatter_reduce(1, groups, category_logits.detach(), reduce="amax")
    shifted = category_logits - gmax.gather(1, groups)
    gsum = shifted.new_zeros(gmax.shape).scatter_add(1, groups, shifted.exp())
    within = shifted - gsum.log().gather(1, groups)
    sup = super_logits.log_softmax(dim=1).gather(1, groups)
    return F.logsigmoid(objectness.reshape(n, 1)) + sup + within


def hierarchical_probabilities(objectness, super_logits, category_logits, thing_super) -> torch.Tensor:
    """P(thing) (N, T); rows sum to sigmoid(objectness). Arguments as :func:`hierarchical_log_probabilities`."""
    return hierarchical_log_probabilities(objectness, super_logits, category_logits, thing_super).exp()


# ---------------------------------------------------------------------------------------------------- loss

def _mean_over_processes(x: torch.Tensor) -> torch.Tensor:
    """Average a count across DDP processes (ATSS normalises by the global number of positives)."""
    if dist.is_available() and dist.is_initialized():
        x = x.detach().clone()
        dist.all_reduce(x)
        x = x / dist.get_world_size()
    return x


class ATSSLoss:
    """ATSS training losses for a batch; ``__call__(head_out, anchors_per_level, targets) -> dict``.

    - ``head_out``: :class:`ATSSHead` output; ``anchors_per_level``: :func:`make_anchors` for the same levels.
    - ``targets``: one dict per image with ``boxes`` (G, 4) float xyxy and ``labels`` (G,) long thing index.

    Returned scalars, each already multiplied by its ``LossConfig`` weight; ``num_pos`` is the number of ATSS
    positives in the batch (averaged over DDP processes, at least 1):

    - ``loss_objectness`` (hierarchical): sigmoid focal of the objectness over all anchors vs "is positive",
      summed / num_pos, x ``cfg.objectness``;
    - ``loss_classification``: hierarchical mode: :func:`hierarchical_cross_entropy` on the positives (mean over
      positives), x ``cfg.classification``; flat mode: sigmoid focal over all anchors and classes / num_pos,
      x ``cfg.objectness`` (the focal-over-all-anchors weight, see ``LossConfig``);
    - ``loss_box``: GIoU loss of the decoded boxes of positives vs their GT, weighted by the centerness target,
      / sum of centerness targets, x ``cfg.box``;
    - ``loss_centerness``: BCE-with-logits vs the centerness target on positives / num_pos, x ``cfg.centerness``.

    Not a loss: ``positives`` is a list (one per image) of dicts for the mask branch, all detached:
    ``boxes`` (P, 4) decoded predicted boxes of the positive anchors (not clipped to the image), ``gt_index`` (P,)
    long index into that image's ``targets[i]["boxes"]``, ``scores`` (P,) the detection score of the matched GT's
    class, ``sqrt(P(class) * sigmoid(centerness))`` (the inference score). Pop it before summing the losses.
    """

    def __init__(self, cfg: LossConfig, head_cfg: HeadConfig, thing_super: Sequence[int],
                 box_coder: BoxCoder | None = None):
        self.cfg = cfg
        self.topk = head_cfg.atss_topk
        self.hierarchical = head_cfg.classification == "hierarchical"
        self.thing_super = [int(s) for s in thing_super]
        self.box_coder = box_coder or BoxCoder()

    def __call__(self, head_out: dict, anchors_per_level: Sequence[torch.Tensor], targets: list[dict]) -> dict:
        cfg = self.cfg
        # Losses in float32 even under autocast: focal sums over ~10^5 anchors and exp() in decoding need it.
        anchors = torch.cat(list(anchors_per_level), dim=0).float()
        deltas = flatten_levels(head_out["box_regression"]).float()            # (B, A, 4)
        ctr_logits = flatten_levels(head_out["centerness"]).float()[..., 0]    # (B, A)
        if self.hierarchical:
            obj = flatten_levels(head_out["objectness"]).float()[..., 0]       # (B, A)
            sup = flatten_levels(head_out["super_logits"]).float()             # (B, A, S)
            cat = flatten_levels(head_out["category_logits"]).float()          # (B, A, T)
        else:
            cls = flatten_levels(head_out["class_logits"]).float()             # (B, A, T)
        thing_super = torch.tensor(self.thing_super, dtype=torch.long, device=anchors.device)

        matched = torch.stack([atss_assign(anchors_per_level, t["boxes"].to(anchors), self.topk)[0]
                               for t in targets])                      # (B, A)
        pos = matched >= 0
        num_pos = _mean_over_processes(pos.sum().to(anchors.dtype)).clamp(min=1.0)
        b_idx, a_idx = pos.nonzero(as_tuple=True)
        g_idx = matched[b_idx, a_idx]
        labels = torch.cat([t["labels"].to(anchors.device)[m[m >= 0]] for t, m in zip(targets, matched)]).long()
        gt_boxes = torch.cat([t["boxes"].to(anchors)[m[m >= 0]] for t, m in zip(targets, matched)])
        pos_anchors = anchors[a_idx]

        losses = {}
        if self.hierarchical:
            losses["loss_objectness"] = cfg.objectness * sigmoid_focal_loss(
                obj, pos.to(obj.dtype), cfg.focal_alpha, cfg.focal_gamma, "sum") / num_pos
            losses["loss_classification"] = cfg.classification * hierarchical_cross_entropy(
                sup[b_idx, a_idx], cat[b_idx, a_idx], labels, thing_super)
        else:
            onehot = torch.zeros_like(cls)
            onehot[b_idx, a_idx, labels] = 1.0
            losses["loss_classification"] = cfg.objectness * sigmoid_focal_loss(
                cls, onehot, cfg.focal_alpha, cfg.focal_gamma, "sum") / num_pos

        pred_boxes = self.box_coder.decode(deltas[b_idx, a_idx], pos_anchors)
        ctr_target = centerness_target(_centers(pos_anchors), gt_boxes)
        ctr_sum = _mean_over_processes(ctr_target.sum()).clamp(min=1e-6)
        if len(b_idx):
            losses["loss_box"] = cfg.box * giou_loss(pred_boxes, gt_boxes, ctr_target, "sum") / ctr_sum
        else:  # keep the box branch in the graph (DDP expects every parameter to get a gradient)
            losses["loss_box"] = deltas.sum() * 0.0
        pos_ctr = ctr_logits[b_idx, a_idx]
        losses["loss_centerness"] = cfg.centerness * F.binary_cross_entropy_with_logits(
            pos_ctr, ctr_target, reduction="sum") / num_pos + ctr_logits.sum() * 0.0

        with torch.no_grad():
            if self.hierarchical:
                p_cls = hierarchical_probabilities(obj[b_idx, a_idx], sup[b_idx, a_idx], cat[b_idx, a_idx],
                                                   thing_super)
            else:
                p_cls = cls[b_idx, a_idx].sigmoid()
            p_cls = p_cls.gather(1, labels.unsqueeze(1)).squeeze(1)
            scores = torch.sqrt(p_cls * pos_ctr.sigmoid())
            losses["positives"] = [
                {"boxes": pred_boxes.detach()[b_idx == i], "gt_index": g_idx[b_idx == i], "scores": scores[b_idx == i]}
                for i in range(len(targets))]
        return losses


# ----------------------------------------------------------------------------------------------- inference

@torch.no_grad()
def atss_inference(head_out: dict, anchors_per_level: Sequence[torch.Tensor], image_sizes: Sequence[Sequence[int]],
                   cfg: InferenceConfig, thing_super: Sequence[int], box_coder: BoxCoder | None = None) -> list[dict]:
    """Detections per image: list of dicts ``boxes`` (K, 4) float xyxy clipped to the image, ``scores`` (K,)
    descending, ``labels`` (K,) long thing index; K <= ``cfg.max_detections``.

    Per level: class probabilities (hierarchical product, or sigmoid in flat mode -- chosen by whether
    ``head_out`` has ``objectness``), candidates with probability > ``cfg.score_threshold``, the
    ``cfg.pre_nms_top_n`` best by probability x sigmoid(centerness); the reported score is
    ``sqrt(probability x sigmoid(centerness))`` as in ATSS. Boxes are decoded, clipped to ``image_sizes[i]``
    = (h, w), empty ones dropped; then class-aware NMS at ``cfg.nms_iou`` over all levels.
    """
    coder = box_coder or BoxCoder()
    hierarchical = "objectness" in head_out
    num_images = head_out["box_regression"][0].shape[0]
    results = []
    for i in range(num_images):
        boxes_l, scores_l, labels_l = [], [], []
        for lvl, anchors in enumerate(anchors_per_level):
            def flat(key):
                x = head_out[key][lvl][i].float()
                return x.permute(1, 2, 0).reshape(-1, x.shape[0])

            if hierarchical:
                probs = hierarchical_probabilities(flat("objectness"), flat("super_logits"),
                                                   flat("category_logits"), thing_super)
            else:
                probs = flat("class_logits").sigmoid()
            ranking = probs * flat("centerness").sigmoid()
            candidates = probs > cfg.score_threshold
            ranking = ranking[candidates]
            loc, label = candidates.nonzero(as_tuple=True)
            if ranking.numel() > cfg.pre_nms_top_n:
                ranking, top = ranking.topk(cfg.pre_nms_top_n)
                loc, label = loc[top], label[top]
            boxes_l.append(coder.decode(flat("box_regression")[loc], anchors[loc].float()))
            scores_l.append(ranking.sqrt())
            labels_l.append(label)
        boxes, scores, labels = torch.cat(boxes_l), torch.cat(scores_l), torch.cat(labels_l)
        h, w = image_sizes[i]
        boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                             boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], dim=1)
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, labels = boxes[nonempty], scores[nonempty], labels[nonempty]
        keep = batched_nms(boxes, scores, labels, cfg.nms_iou)[: cfg.max_detections]
        results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return results
