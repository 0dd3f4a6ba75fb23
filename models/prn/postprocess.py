"""Post-processing of PRN: turn one image's network maps into a panoptic segmentation (docs/design.md, "PRN").

The steps are Panoptic-DeepLab's (detectron2 / bowenc0221 ``post_processing.py``), with PRN's two switches:

1. **Semantic** label per pixel = argmax of the class logits.
2. **Centres** = pixels of the centre heatmap that are strictly above ``center_threshold`` and equal to the
   max-pooled heatmap (kernel ``nms_kernel``, stride 1, same padding; equal-valued neighbours on a plateau are
   both kept, as in Panoptic-DeepLab), then the ``top_k`` highest scores. Centres are ordered by score,
   descending; equal scores keep raster order (row-major), so results are deterministic.
3. **Foreground** (the pixels that belong to some thing instance), switch ``foreground_source``:
   ``"foreground"`` = sigmoid(foreground logit) > ``foreground_threshold`` (PRN's foreground branch, Table 1
   "Foreground"); ``"semantic"`` = the semantic argmax is a thing class ("ForegroundSem"). With no thing class at
   all, nothing is foreground.
4. **Grouping**: each foreground pixel p votes at v(p) = p + offset(p) (offset = (dy, dx) in pixels) and joins
   the centre with the smallest squared distance |v(p) - c|^2 (ties: the higher-scoring centre).
   **PredBbox rule** (switch ``use_pred_bbox``, Table 1 "PredBbox"): every pixel q has a predicted box
   B(q) = (x - l, y - t, x + r, y + b) from the box map (l, t, r, b), inclusive pixel-index extents, so its
   area is (x2 - x1 + 1)(y2 - y1 + 1); a centre c's box is B(c) read at the centre pixel. A pixel p may only
   join the centres that *agree* with it: IoU(B(p), B(c)) >= ``box_iou_threshold``; among those it joins the
   nearest by its offset vote; if no centre agrees it falls back to the plain nearest centre. This separates
   touching same-class instances whose offsets are ambiguous, because each pixel's box still names its own
   instance. (box_iou_threshold = 0 makes every centre agree, i.e. the plain rule.)
5. **Instance class** = majority vote over the instance's pixels of each pixel's *thing* label, the argmax over
   the thing-class logits only. Where the semantic argmax is a thing class (always, with ``"semantic"``) this is
   the semantic argmax itself; with the foreground branch a foreground pixel may have a stuff argmax, and then
   it still votes for its most likely thing class, so an instance always gets a thing class. Vote ties go to
   the lower class index. Instances with fewer than max(1, ``min_instance_area``) pixels are dropped and their
   pixels become void.
6. **Stuff**: for each stuff class, the *non-foreground* pixels whose argmax is that class; a class region with
   fewer than ``stuff_area`` pixels becomes void (regions are per class, not connected components, as in
   Panoptic-DeepLab). Non-foreground pixels whose argmax is a thing class (e.g. the foreground branch says
   background where the semantic head says thing) are void, and so are foreground pixels when there is no
   centre to join (a thing that cannot be grouped is not given to stuff).

Segment indices: things first, 1..N in centre order (score descending), then stuff 1+N..S in class-index order.
Indices are consecutive, unique, and every listed segment has at least one pixel; segments never overlap by
construction (each pixel gets one label).

Scores: a thing's score is its centre's heatmap value; a stuff segment's is 1.0. With ``score_with_class_prob``
a thing's score is multiplied by the mean softmax probability of its class over its pixels (detectron2's
instance confidence) and a stuff segment's score is that mean probability.

Everything is vectorised torch on the device of the outputs; the only Python loop is over chunks of
foreground pixels, which bounds the (pixels x centres) distance / IoU matrices to ``chunk_elements`` entries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FOREGROUND_SOURCES = ("foreground", "semantic")
RESTORE_CHOICES = ("none", "things", "all")


@dataclass
class PostProcessConfig:
    """Thresholds and switches of :func:`panoptic_from_outputs` (defaults: Panoptic-DeepLab's, small images)."""

    foreground_source: str = "foreground"   # "foreground" (branch) | "semantic" (argmax is a thing class)
    use_pred_bbox: bool = False             # PredBbox grouping rule (needs the "box" output)
    center_threshold: float = 0.1           # centre kept if heatmap > this (strict)
    nms_kernel: int = 7                     # max-pool NMS window, odd (Panoptic-DeepLab: 7 Cityscapes, 41 COCO)
    top_k: int = 200                        # at most this many centres, highest heatmap first
    foreground_threshold: float = 0.5       # foreground if sigmoid(logit) > this (strict)
    stuff_area: int = 64                    # a stuff class region with fewer pixels becomes void
    #: (h, w) at which stuff_area is given; it then scales with the image's area (as MS-PanopticFPN's fusion
    #: does: 4096 at 640x480 is 874 px at 256x256). None: stuff_area is in pixels whatever the image size.
    stuff_area_reference: tuple | None = None
    box_iou_threshold: float = 0.5          # PredBbox: a centre agrees with a pixel if IoU of boxes >= this
    min_instance_area: int = 0              # instances with fewer pixels (and always empty ones) are dropped
    score_with_class_prob: bool = False     # thing score x mean class probability; stuff score = mean prob
    #: do no harm: put back base segments that PRN dropped, "things" (onto pixels it gave to stuff or void) or "all"
    #: (stuff too, onto pixels it left void); base_fusion.restore_base_segments, applied by the predictor
    restore_base_segments: str = "none"
    #: with restore_base_segments: a base thing that PRN swallowed into a neighbouring thing of another category
    #: takes its pixels back (a split PRN repaired is one category, so it is never undone)
    reclaim_other_classes: bool = False
    #: do no harm: base things that PRN joined into one thing are separated again unless they are of one category
    #: and touch along at least this x sqrt(the smaller one's area) pixels (a split base shares a long cut, two
    #: neighbours touch at a few pixels); base_fusion.separate_joined_base_things. 0 = off
    min_join_contact: float = 0.0
    #: do no harm: a refined thing that matches a base thing takes the base thing's category
    #: (base_fusion.keep_base_thing_classes)
    keep_base_thing_class: bool = False
    #: do no harm: where PRN's confidence (base_fusion.confidence_map) is below this, a pixel goes to the refined
    #: segment matching the base's segment there, keeping the base's full-resolution boundaries; 0 = off
    base_snap_confidence: float = 0.0
    #: re-cut every thing's boundary within this many pixels by the boundary refiner's thing foreground
    #: (boundary.refine_thing_boundaries, applied by the predictor last; needs the "thing_foreground" output). 0 = off
    boundary_radius: int = 0
    #: with boundary_radius: a pixel joins a thing where the refiner's probability is above this and leaves one
    #: where it is below 1 - this (0.5: wherever it says so)
    boundary_confidence: float = 0.5
    #: with boundary_radius: a thing with fewer pixels keeps its base mask (0 = every thing is re-cut)
    boundary_min_area: int = 0
    #: with boundary_radius: a thing's re-cut is kept only when the refiner expects it to set right at least this
    #: fraction of the thing's area more pixels than it sets wrong (boundary.refine_thing_boundaries; 0 = always)
    boundary_min_gain: float = 0.0
    #: with boundary_radius: a thing's re-cut is kept only when the pixels it moves lie along at least this fraction
    #: of the thing's boundary (a right mask next to an object the base missed gets moves on one side only;
    #: boundary.refine_thing_boundaries; 0 = always)
    boundary_min_coverage: float = 0.0
    #: relabel a thing where PRN's thing classifier (classifier.ThingClassifier, checkpoints that have one) gives
    #: another thing class a probability above this; applied by the predictor after the re-cut. 0 = off
    classifier_confidence: float = 0.0
    #: with classifier_confidence: a thing of fewer pixels than this at the processing size is relabelled only where
    #: the classifier is surer, above the larger of the two confidences (its 32-pixel crop of a small thing shows
    #: little of the shape, and it errs more there). 0 = one threshold for every thing
    classifier_small_area: int = 0
    classifier_small_confidence: float = 0.0
    #: remove a thing (its pixels become void) where the thing classifier, trained with a "no thing" class
    #: (PRNConfig.classifier_background), gives "no thing" a probability above this: a base's false detection on
    #: stuff; applied by the predictor with the relabelling. 0 = off
    classifier_remove_confidence: float = 0.0
    #: with classifier_remove_confidence: a removed thing that shares at least this fraction of its boundary with a
    #: kept thing of its category joins that thing instead of turning void (a split's smaller half; removal.py).
    #: 0 = every removed thing turns void
    classifier_join_share: float = 0.0
    #: cut a thing that holds two objects (a base's merge) in two: of two cuts (merge_split.py; parts that touch, a
    #: thing away from the image's edge), the one whose less certain part the thing classifier reads as a thing the
    #: more surely is kept where that probability is above this and above the whole thing's; applied by the
    #: predictor after the relabelling. 0 = off
    classifier_split_confidence: float = 0.0
    #: find things left void (void_things.py): each connected region that the refined map leaves void and PRN's
    #: semantic head gives to a thing class becomes a thing where the thing classifier gives a class a probability
    #: above this; applied by the predictor last. 0 = off
    void_thing_confidence: float = 0.0
    #: with void_thing_confidence: smaller regions (pixels at the processing size) stay void
    void_thing_min_area: int = 50
    chunk_elements: int = 4 * 1024 * 1024   # bound on (pixels x centres) entries per grouping chunk

    @property
    def fuses_with_base(self) -> bool:
        """Whether any do-no-harm step needs the base's segmentation."""
        return (self.restore_base_segments != "none" or self.base_snap_confidence > 0 or self.min_join_contact > 0
                or self.keep_base_thing_class)

    def __post_init__(self) -> None:
        if self.foreground_source not in FOREGROUND_SOURCES:
            raise ValueError(f"foreground_source must be one of {FOREGROUND_SOURCES}, got {self.foreground_source!r}")
        if not isinstance(self.nms_kernel, int) or self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise ValueError(f"nms_kernel must be a positive odd integer (same-padding max pool), got {self.nms_kernel!r}")
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {self.top_k!r}")
        if not math.isfinite(self.center_threshold):
            raise ValueError(f"center_threshold must be finite, got {self.center_threshold!r}")
        if not 0.0 <= self.foreground_threshold < 1.0:
            raise ValueError(f"foreground_threshold must be in [0, 1) (a sigmoid probability), "
                             f"got {self.foreground_threshold!r}")
        if not 0.0 <= self.box_iou_threshold <= 1.0:
            raise ValueError(f"box_iou_threshold must be in [0, 1], got {self.box_iou_threshold!r}")
        if not isinstance(self.stuff_area, int) or self.stuff_area < 0:
            raise ValueError(f"stuff_area must be an integer >= 0 (pixels), got {self.stuff_area!r}")
        if self.stuff_area_reference is not None:
            ref = tuple(self.stuff_area_reference)
            if len(ref) != 2 or not all(isinstance(v, int) and v > 0 for v in ref):
                raise ValueError(f"stuff_area_reference must be (height, width) in pixels, got {ref!r}")
            self.stuff_area_reference = ref
        if not isinstance(self.min_instance_area, int) or self.min_instance_area < 0:
            raise ValueError(f"min_instance_area must be an integer >= 0 (pixels), got {self.min_instance_area!r}")
        if self.restore_base_segments not in RESTORE_CHOICES:
            raise ValueError(f"restore_base_segments must be one of {RESTORE_CHOICES}, got {self.restore_base_segments!r}")
        if not (math.isfinite(self.min_join_contact) and self.min_join_contact >= 0):
            raise ValueError(f"min_join_contact must be a number >= 0, got {self.min_join_contact!r}")
        if not 0.0 <= self.base_snap_confidence <= 1.0:
            raise ValueError(f"base_snap_confidence must be in [0, 1], got {self.base_snap_confidence!r}")
        if not isinstance(self.boundary_radius, int) or self.boundary_radius < 0:
            raise ValueError(f"boundary_radius must be an integer >= 0 (pixels), got {self.boundary_radius!r}")
        if not 0.5 <= self.boundary_confidence < 1.0:
            raise ValueError(f"boundary_confidence must be in [0.5, 1), got {self.boundary_confidence!r}")
        if not isinstance(self.boundary_min_area, int) or self.boundary_min_area < 0:
            raise ValueError(f"boundary_min_area must be an integer >= 0 (pixels), got {self.boundary_min_area!r}")
        if not 0.0 <= self.boundary_min_gain <= 1.0:
            raise ValueError(f"boundary_min_gain must be in [0, 1] (a fraction of the thing's area), "
                             f"got {self.boundary_min_gain!r}")
        if not 0.0 <= self.boundary_min_coverage <= 1.0:
            raise ValueError(f"boundary_min_coverage must be in [0, 1] (a fraction of the thing's boundary), "
                             f"got {self.boundary_min_coverage!r}")
        if not 0.0 <= self.classifier_confidence < 1.0:
            raise ValueError(f"classifier_confidence must be in [0, 1) (0 = off), got {self.classifier_confidence!r}")
        if not isinstance(self.classifier_small_area, int) or self.classifier_small_area < 0:
            raise ValueError(f"classifier_small_area must be an integer >= 0 (pixels), got {self.classifier_small_area!r}")
        if not 0.0 <= self.classifier_small_confidence < 1.0:
            raise ValueError(f"classifier_small_confidence must be in [0, 1), got {self.classifier_small_confidence!r}")
        if not 0.0 <= self.classifier_remove_confidence < 1.0:
            raise ValueError(f"classifier_remove_confidence must be in [0, 1) (0 = off), "
                             f"got {self.classifier_remove_confidence!r}")
        if not 0.0 <= self.classifier_join_share <= 1.0:
            raise ValueError(f"classifier_join_share must be in [0, 1] (a fraction of the thing's boundary; 0 = off), "
                             f"got {self.classifier_join_share!r}")
        if not 0.0 <= self.classifier_split_confidence < 1.0:
            raise ValueError(f"classifier_split_confidence must be in [0, 1) (0 = off), "
                             f"got {self.classifier_split_confidence!r}")
        if not 0.0 <= self.void_thing_confidence < 1.0:
            raise ValueError(f"void_thing_confidence must be in [0, 1) (0 = off), got {self.void_thing_confidence!r}")
        if not isinstance(self.void_thing_min_area, int) or self.void_thing_min_area < 1:
            raise ValueError(f"void_thing_min_area must be an integer >= 1 (pixels), got {self.void_thing_min_area!r}")
        if not isinstance(self.chunk_elements, int) or self.chunk_elements < 1:
            raise ValueError(f"chunk_elements must be an integer >= 1, got {self.chunk_elements!r}")


@dataclass(frozen=True)
class NetworkNeed:
    """A post-processing step asked for that the network cannot run (:func:`missing_network_parts`)."""

    flag: str       # the command-line option that asks for it
    lacking: str    # "this PRN has no ...": what the network lacks
    field: str      # the PRNConfig field that gives the network that part
    module: str     # "network" (a branch of the trunk) or "extension" (boundary refiner, thing classifier)
    fix: str        # what to do at refine time ("leave out FLAG", "use ...")


def missing_network_parts(post: PostProcessConfig, network) -> list[NetworkNeed]:
    """The steps ``post`` asks for that a PRN of config ``network`` (a ``PRNConfig`` as a dict: ``to_dict()`` or a
    checkpoint's ``config["model"]``) lacks the part for, in the order the predictor would run them. Settings that
    only tune a step that is off (``boundary_confidence`` without ``boundary_radius``, ...) ask for nothing."""
    def has(field: str) -> bool:
        return bool(network.get(field))

    needs = []
    if post.foreground_source == "foreground" and not has("foreground_head"):
        needs.append(NetworkNeed("--foreground-source foreground", "this PRN has no foreground branch",
                                 "foreground_head", "network", "use --foreground-source semantic"))
    if post.use_pred_bbox and not has("box_head"):
        needs.append(NetworkNeed("--use-pred-bbox", "this PRN has no box branch", "box_head", "network",
                                 "leave out --use-pred-bbox"))
    if post.boundary_radius > 0 and not has("boundary_channels"):
        needs.append(NetworkNeed("--boundary-radius", "this PRN has no boundary refiner", "boundary_channels",
                                 "extension", "leave out --boundary-radius"))
    for flag, value in (("--classifier-confidence", post.classifier_confidence),
                        ("--classifier-remove-confidence", post.classifier_remove_confidence),
                        ("--classifier-split-confidence", post.classifier_split_confidence),
                        ("--void-thing-confidence", post.void_thing_confidence)):
        if value > 0 and not has("classifier_channels"):
            needs.append(NetworkNeed(flag, "this PRN has no thing classifier", "classifier_channels", "extension",
                                     f"leave out {flag}"))
    if post.classifier_remove_confidence > 0 and has("classifier_channels") and not has("classifier_background"):
        needs.append(NetworkNeed("--classifier-remove-confidence",
                                 "this PRN's thing classifier has no 'no thing' class", "classifier_background",
                                 "extension", "leave out --classifier-remove-confidence"))
    return needs


def effective_stuff_area(cfg: PostProcessConfig, h: int, w: int) -> int:
    """``cfg.stuff_area`` in pixels for an ``h`` x ``w`` image (scaled by area when it has a reference size)."""
    if cfg.stuff_area_reference is None:
        return int(cfg.stuff_area)
    rh, rw = cfg.stuff_area_reference
    return int(round(cfg.stuff_area * (h * w) / (rh * rw)))


def find_centers(center: torch.Tensor, threshold: float = 0.1, nms_kernel: int = 7,
                 top_k: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance centres from a heatmap (Panoptic-DeepLab's ``find_instance_center``).

    ``center``: (1, H, W) or (H, W) float heatmap. Returns ``coords`` (K, 2) long (y, x) pixel indices and
    ``scores`` (K,) float32 heatmap values, sorted by score descending (ties in raster order), K <= top_k.
    A centre is a pixel strictly above ``threshold`` that equals the max over its nms_kernel x nms_kernel window.
    """
    heat = center.detach().float()
    if heat.dim() == 3 and heat.shape[0] == 1:
        heat = heat[0]
    if heat.dim() != 2:
        raise ValueError(f"center heatmap must be (1, H, W) or (H, W), got {tuple(center.shape)}")
    w = heat.shape[1]
    pooled = window_max(heat, nms_kernel)
    peak = (heat == pooled) & (heat > threshold)
    idx = peak.flatten().nonzero().squeeze(1)                       # raster order
    scores = heat.flatten()[idx]
    order = torch.sort(scores, descending=True, stable=True).indices[:top_k]
    idx = idx[order]
    coords = torch.stack((torch.div(idx, w, rounding_mode="floor"), idx % w), dim=1)
    return coords, scores[order]


def window_max(heat: torch.Tensor, kernel: int) -> torch.Tensor:
    """The max over each pixel's ``kernel`` x ``kernel`` window of an (H, W) map, as ``max_pool2d`` with stride 1
    and same padding (-inf padding: border pixels compete only with real neighbours).

    A square-window max is a row max of column maxes, and each 1-D max is ``kernel`` - 1 elementwise maxima of
    shifted views: exact, and ~10x faster on CPU than max_pool2d for the small kernels PRN uses. Kernels above
    15 (Panoptic-DeepLab's 41 on COCO) go through two 1-D max pools instead.
    """
    r = kernel // 2
    if r == 0:
        return heat.clone()
    if kernel > 15:
        pooled = F.max_pool2d(heat[None, None], (1, kernel), stride=1, padding=(0, r))
        return F.max_pool2d(pooled, (kernel, 1), stride=1, padding=(r, 0))[0, 0]
    h, w = heat.shape
    padded = F.pad(heat, (r, r), value=float("-inf"))
    rows = padded[:, :w].clone()
    for d in range(1, kernel):
        torch.maximum(rows, padded[:, d:d + w], out=rows)
    padded = F.pad(rows, (0, 0, r, r), value=float("-inf"))
    out = padded[:h].clone()
    for d in range(1, kernel):
        torch.maximum(out, padded[d:d + h], out=out)
    return out


def channel_argmax(logits: torch.Tensor) -> torch.Tensor:
    """Argmax over dim 0 of (C, N) logits, first index on ties (as ``argmax``), int64 (N,) on the logits' device.

    Both ``argmax(0)`` and ``max(0)`` reduce over the outer dimension slowly on CPU. There a running maximum
    over the channels in numpy (strictly greater moves the index, so ties keep the first) takes about half of
    ``max(0)``'s time; ``max(0)`` itself is ~4x faster than ``argmax(0)`` and serves other devices, NaNs and
    more than 255 channels."""
    c = logits.shape[0]
    if logits.device.type != "cpu" or not 1 < c < 256 or logits.dtype not in (torch.float32, torch.float64):
        return logits.max(0).indices
    values = logits.detach().numpy()
    best = values[0].copy()
    index = np.zeros(values.shape[1:], dtype=np.uint8)
    greater = np.empty(values.shape[1:], dtype=bool)
    for k in range(1, c):
        np.greater(values[k], best, out=greater)
        np.maximum(best, values[k], out=best)
        index[greater] = k
    if np.isnan(best).any():         # torch's argmax picks a NaN; the comparisons above never do
        return logits.max(0).indices
    return torch.from_numpy(index.astype(np.int64))


def pixel_boxes(box: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Boxes (N, 4) float (x1, y1, x2, y2), inclusive pixel indices, of pixels (ys, xs) from a (4, H, W) map of
    (l, t, r, b) distances; negative distances are clamped to 0 (a box always contains its own pixel)."""
    w = box.shape[-1]
    ltrb = box.reshape(4, -1)[:, ys * w + xs].float().clamp(min=0)
    yf, xf = ys.float(), xs.float()
    return torch.stack((xf - ltrb[0], yf - ltrb[1], xf + ltrb[2], yf + ltrb[3]), dim=1)


def box_iou_inclusive(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU (P, K) of boxes a (P, 4) and b (K, 4), (x1, y1, x2, y2) inclusive pixel-index extents, so
    a box's width is x2 - x1 + 1 (a one-pixel box has area 1)."""
    # in place on (P, K) buffers: the same operations in the same order as the plain expressions, fewer temporaries
    inter = torch.minimum(a[:, None, 2], b[None, :, 2])
    inter.sub_(torch.maximum(a[:, None, 0], b[None, :, 0])).add_(1).clamp_(min=0)
    iy = torch.minimum(a[:, None, 3], b[None, :, 3])
    iy.sub_(torch.maximum(a[:, None, 1], b[None, :, 1])).add_(1).clamp_(min=0)
    inter.mul_(iy)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    union = torch.add(area_a[:, None], area_b[None, :], out=iy)
    union.sub_(inter)
    return inter.div_(union)


def box_iou_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU (N,) of each box of a (N, 4) with the box of b (N, 4) in the same row: :func:`box_iou_inclusive`'s
    operations in its order, so the values are bit-identical to its diagonal."""
    inter = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).add_(1).clamp_(min=0)
    inter.mul_((torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).add_(1).clamp_(min=0))
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return inter.div_((area_a + area_b).sub_(inter))


def group_pixels(votes: torch.Tensor, centers: torch.Tensor, boxes: torch.Tensor | None = None,
                 center_boxes: torch.Tensor | None = None, iou_threshold: float = 0.5,
                 chunk_elements: int = 4 * 1024 * 1024) -> torch.Tensor:
    """Assign each pixel to a centre: (P,) long indices into ``centers``.

    ``votes`` (P, 2) float voted positions (y, x); ``centers`` (K >= 1, 2) (y, x). Plain rule: the nearest centre
    (squared Euclidean distance; ties go to the lower index, i.e. the higher-scoring centre). With ``boxes``
    (P, 4) and ``center_boxes`` (K, 4) (PredBbox): the nearest among centres with IoU >= iou_threshold, or the
    plain nearest when none agrees. Pixels are processed in chunks of max(1, chunk_elements // K).
    """
    p, k = votes.shape[0], centers.shape[0]
    out = torch.empty(p, dtype=torch.long, device=votes.device)
    step = max(1, chunk_elements // max(k, 1))
    cy, cx = centers.float().unbind(1)
    vy, vx = votes.float().unbind(1)
    for s in range(0, p, step):
        d = vy[s:s + step, None] - cy[None]                                     # (chunk, K) squared distances,
        d.mul_(d)                                                               # in place
        dx = vx[s:s + step, None] - cx[None]
        d.add_(dx.mul_(dx))
        nearest = d.argmin(1)
        if boxes is not None and center_boxes is not None:
            # A pixel whose nearest centre agrees with it joins that centre (it is then also the nearest agreeing
            # one, ties included), so the (pixels x centres) IoUs are needed only for the others: with a trained
            # network, the few pixels near boundaries.
            chunk_boxes = boxes[s:s + step]
            rest = (box_iou_rows(chunk_boxes, center_boxes[nearest]) < iou_threshold).nonzero().squeeze(1)
            if rest.numel():
                agree = box_iou_inclusive(chunk_boxes[rest], center_boxes) >= iou_threshold
                nearest_agree = d[rest].masked_fill_(~agree, float("inf")).argmin(1)
                nearest[rest] = torch.where(agree.any(1), nearest_agree, nearest[rest])
        out[s:s + step] = nearest
    return out


def _map(outputs: dict, key: str, channels: int, h: int, w: int) -> torch.Tensor:
    if key not in outputs or outputs[key] is None:
        raise ValueError(f"outputs has no {key!r} map")
    t = outputs[key]
    if channels == 1 and t.dim() == 2:
        t = t[None]
    if tuple(t.shape) != (channels, h, w):
        raise ValueError(f"outputs[{key!r}] must be ({channels}, {h}, {w}), got {tuple(outputs[key].shape)}")
    return t


def panoptic_from_outputs(outputs: dict, thing_classes: torch.Tensor,
                          config: PostProcessConfig | None = None) -> tuple[torch.Tensor, list[dict]]:
    """One image's PRN outputs -> panoptic segmentation (rules in the module docstring).

    ``outputs`` (no batch dimension, all at the same H x W): ``"semantic"`` (C, H, W) logits, ``"center"`` (1, H, W)
    heatmap, ``"offset"`` (2, H, W) (dy, dx) in pixels, ``"foreground"`` (1, H, W) logits (needed when
    ``config.foreground_source == "foreground"``), ``"box"`` (4, H, W) (l, t, r, b) in pixels (needed when
    ``config.use_pred_bbox``). ``thing_classes``: (C,) bool, True where class index c is a thing.

    Returns ``segments`` (H, W) long on the outputs' device, 0 = void, 1..S = segment index, and ``infos``: one
    dict per segment in index order, ``{"index": k, "class_index": c, "isthing": bool, "area": int,
    "score": float}`` (plain Python types); ``area`` is the segment's pixel count in ``segments``.
    """
    cfg = config if config is not None else PostProcessConfig()
    logits = outputs.get("semantic")
    if logits is None or logits.dim() != 3:
        raise ValueError("outputs['semantic'] must be (C, H, W) logits")
    c, h, w = (int(v) for v in logits.shape)
    device = logits.device
    thing = torch.as_tensor(thing_classes, device=device).to(torch.bool).reshape(-1)
    if thing.numel() != c:
        raise ValueError(f"thing_classes has {thing.numel()} entries but the semantic map has {c} classes")
    center = _map(outputs, "center", 1, h, w)
    offset = _map(outputs, "offset", 2, h, w)
    fg_logits = _map(outputs, "foreground", 1, h, w) if cfg.foreground_source == "foreground" else None
    box = _map(outputs, "box", 4, h, w) if cfg.use_pred_bbox else None

    flat_logits = logits.detach().reshape(c, h * w)
    semantic = channel_argmax(flat_logits)                                     # (HW,)
    if not bool(thing.any()):
        fg = torch.zeros(h * w, dtype=torch.bool, device=device)
    elif fg_logits is not None:
        fg = torch.sigmoid(fg_logits.detach().float().reshape(-1)) > cfg.foreground_threshold
    else:
        fg = thing.take(semantic)

    segments = torch.zeros(h * w, dtype=torch.long, device=device)
    coords, heat = find_centers(center, cfg.center_threshold, cfg.nms_kernel, cfg.top_k)
    k = coords.shape[0]
    fg_idx = fg.nonzero().squeeze(1)
    # Per-thing results, filled below when there is something to group.
    thing_cls = torch.zeros(0, dtype=torch.long, device=device)
    thing_area = torch.zeros(0, dtype=torch.long, device=device)
    thing_score = torch.zeros(0, dtype=torch.float32, device=device)
    log_norm = None
    if cfg.score_with_class_prob:
        # log of the softmax denominator per pixel: probabilities are then read only where needed, instead of a
        # full (C, H, W) softmax.
        log_norm = torch.logsumexp(flat_logits.float(), dim=0)

    if k > 0 and fg_idx.numel() > 0:
        ys = torch.div(fg_idx, w, rounding_mode="floor")
        xs = fg_idx % w
        off = offset.detach().float().reshape(2, -1)[:, fg_idx]
        votes = torch.stack((ys.float() + off[0], xs.float() + off[1]), dim=1)
        boxes = center_boxes = None
        if box is not None:
            boxes = pixel_boxes(box.detach(), ys, xs)
            center_boxes = pixel_boxes(box.detach(), coords[:, 0], coords[:, 1])
        assign = group_pixels(votes, coords, boxes, center_boxes, cfg.box_iou_threshold, cfg.chunk_elements)

        # Each pixel's thing label: argmax over the thing-class logits (= the semantic argmax where that is a thing,
        # so with the semantic foreground, where every foreground argmax is a thing, it is the argmax itself).
        if fg_logits is None:
            pix_cls = semantic[fg_idx]
        else:
            thing_idx = thing.nonzero().squeeze(1)
            pix_cls = thing_idx[channel_argmax(flat_logits.index_select(0, thing_idx).index_select(1, fg_idx))]
        votes_per_class = torch.bincount(assign * c + pix_cls, minlength=k * c).reshape(k, c)
        area = votes_per_class.sum(1)
        cls = votes_per_class.argmax(1)                                        # ties: lower class index
        keep = area >= max(1, cfg.min_instance_area)
        new_index = torch.cumsum(keep.long(), 0) * keep                        # 1..N for kept, 0 = dropped
        segments[fg_idx] = new_index[assign]
        thing_cls, thing_area, thing_score = cls[keep], area[keep], heat[keep]
        if log_norm is not None:
            prob = torch.exp(flat_logits[cls[assign], fg_idx].float() - log_norm[fg_idx])
            mean_prob = torch.bincount(assign, weights=prob, minlength=k) / area.clamp(min=1)
            thing_score = thing_score * mean_prob[keep].float()
    n_things = int(thing_cls.numel())

    # Stuff: one bincount over the class ids of the candidate pixels (class c marks the other pixels), and one
    # lookup; candidates are never foreground, so they hold no thing yet.
    stuff_mask = ~fg & ~thing.take(semantic)      # take: a small table read with a long index, 2x plain indexing
    stuff_sem = torch.where(stuff_mask, semantic, c)
    counts = torch.bincount(stuff_sem, minlength=c + 1)[:c]
    kept_stuff = ~thing & (counts >= max(1, effective_stuff_area(cfg, h, w)))
    lut = torch.zeros(c + 1, dtype=torch.long, device=device)
    stuff_cls = kept_stuff.nonzero().squeeze(1)
    lut[stuff_cls] = torch.arange(n_things + 1, n_things + 1 + stuff_cls.numel(), device=device)
    segments += lut.take(stuff_sem)
    stuff_area = counts[stuff_cls]
    if log_norm is not None:
        stuff_pix = stuff_mask.nonzero().squeeze(1)
        stuff_of_pix = semantic[stuff_pix]
        prob = torch.exp(flat_logits[stuff_of_pix, stuff_pix].float() - log_norm[stuff_pix])
        stuff_score = (torch.bincount(stuff_of_pix, weights=prob, minlength=c)[stuff_cls]
                       / stuff_area.clamp(min=1)).float()
    else:
        stuff_score = torch.ones(stuff_cls.numel(), dtype=torch.float32, device=device)

    classes = torch.cat((thing_cls, stuff_cls)).tolist()
    areas = torch.cat((thing_area, stuff_area)).tolist()
    scores = torch.cat((thing_score.float(), stuff_score)).tolist()
    infos = [{"index": i + 1, "class_index": int(classes[i]), "isthing": i < n_things, "area": int(areas[i]),
              "score": float(scores[i])} for i in range(len(classes))]
    return segments.reshape(h, w), infos
