"""Panoptic fusion of MS-PanopticFPN: the PanopticFPN heuristic as in detectron2's
``combine_semantic_and_instance_outputs`` (docs/design.md, "MS-PanopticFPN"), with two documented differences:

- the semantic map predicts every class (stuff and thing); thing classes in it are never used to fill pixels,
  only the stuff classes are (detectron2's semantic head has a single merged "things" class that it skips);
- the minimum stuff area is scaled with the image area (see :func:`stuff_area_limit`).

Segment ids are 1, 2, ..., N in the order segments are created (things by descending score, then stuff classes
by class index), so the same inputs always give the same ids; N is far below COCO's 2^24 limit.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..categories import CategoryMap
from .config import InferenceConfig

MAX_SEGMENT_ID = 256 ** 3 - 1   # ids are stored as RGB in the PNG


def stuff_area_limit(height: int, width: int, cfg: InferenceConfig) -> int:
    """``cfg.stuff_area`` scaled by (height * width) / ``cfg.stuff_area_reference_pixels``, rounded, at least 1.

    4096 px is detectron2's limit for COCO-sized (~640 x 480) images; on a 160 x 120 image the same fraction of
    the image is 256 px, and a fixed 4096 would discard every stuff region of a small image.
    """
    ref = max(1, int(cfg.stuff_area_reference_pixels))
    return max(1, int(round(cfg.stuff_area * (height * width) / ref)))


def panoptic_fusion(masks: torch.Tensor, scores: torch.Tensor, thing_labels: torch.Tensor, semantic: torch.Tensor,
                    category_map: CategoryMap, cfg: InferenceConfig,
                    id_fn: Callable[[int, int], int] | None = None,
                    semantic_probs: torch.Tensor | None = None) -> tuple[np.ndarray, list[dict]]:
    """Combine instance masks and a semantic map into one panoptic segmentation.

    Inputs (one image, all at the output resolution H x W):

    - ``masks``: (K, H, W) float probabilities (binarised at ``cfg.mask_threshold``, ``>=``) or bool;
    - ``scores``: (K,) float; ``thing_labels``: (K,) long thing index (``category_map.thing_ids[label]``);
    - ``semantic``: (H, W) long class index (``category_map.class_ids[c]``), e.g. the argmax of the logits;
      values outside [0, num_classes) are treated as void;
    - ``id_fn``: optional ``id_fn(category_id, n) -> segment id`` for the n-th created segment (n = 0, 1, ...);
      default ``n + 1``. Returned ids must be distinct and in [1, 2^24);
    - ``semantic_probs``: optional (C, H, W) class probabilities; when given a stuff segment's score is its class's
      mean probability over the segment, else 1.0.

    Returns ``ids`` (H, W) int64 numpy (0 = void) and ``segments_info``: one dict per id present in ``ids``, each
    ``{"id", "category_id", "iscrowd": 0, "isthing", "score"}`` (plain Python types, JSON-serialisable). Every
    non-zero id in ``ids`` is listed exactly once and every listed id covers at least one pixel.
    """
    h, w = (int(v) for v in semantic.shape[-2:])
    # The per-segment work is a few whole-image boolean operations per instance: numpy does them without
    # torch's per-op dispatch cost, and the result is a numpy map anyway.
    sem = semantic.detach().cpu().numpy().astype(np.int64, copy=False)
    ids = np.zeros((h, w), dtype=np.int64)
    claimed = np.zeros((h, w), dtype=bool)
    segments: list[dict] = []
    used_ids: set[int] = set()

    def new_id(category_id: int) -> int:
        sid = int(id_fn(category_id, len(segments))) if id_fn is not None else len(segments) + 1
        if not 0 < sid <= MAX_SEGMENT_ID or sid in used_ids:
            raise ValueError(f"segment id {sid} is void, too large or repeated")
        used_ids.add(sid)
        return sid

    # Things: highest score first; a mask mostly hidden behind better ones is a duplicate, not a new object.
    score_list = scores.detach().float().reshape(-1).cpu().tolist()
    label_list = thing_labels.detach().reshape(-1).cpu().tolist()
    order = sorted(range(len(score_list)), key=lambda i: -score_list[i])   # stable: ties keep input order
    kept = [i for i in order if score_list[i] >= cfg.instance_score_threshold]   # stop at the first one below
    if kept:
        sel = masks[torch.as_tensor(kept, dtype=torch.long, device=masks.device)]
        binary = (sel if sel.dtype == torch.bool else sel >= cfg.mask_threshold).cpu().numpy()
    for j, i in enumerate(kept):
        m = binary[j]
        area = int(np.count_nonzero(m))
        if area == 0:
            continue
        overlap = int(np.count_nonzero(m & claimed))
        if overlap / area > cfg.overlap_threshold:
            continue
        keep = m & ~claimed
        if not keep.any():                              # only possible with overlap_threshold >= 1
            continue
        category_id = int(category_map.thing_ids[int(label_list[i])])
        sid = new_id(category_id)
        ids[keep] = sid
        claimed |= keep
        segments.append({"id": sid, "category_id": category_id, "iscrowd": 0, "isthing": True,
                         "score": float(score_list[i])})

    # Stuff: only stuff classes fill the pixels the things left; thing labels in the semantic map stay void.
    limit = stuff_area_limit(h, w, cfg)
    is_thing = category_map.is_thing_class()
    free = sem[~claimed]
    in_range = (free >= 0) & (free < len(is_thing))
    areas = np.bincount(free[in_range], minlength=len(is_thing))
    probs = semantic_probs.detach().float().cpu() if semantic_probs is not None else None
    for c in np.flatnonzero(areas).tolist():           # class-index order
        if is_thing[c] or areas[c] < limit:
            continue
        region = (sem == c) & ~claimed
        category_id = int(category_map.class_ids[c])
        sid = new_id(category_id)
        ids[region] = sid
        claimed |= region
        score = float(probs[c].numpy()[region].mean()) if probs is not None else 1.0
        segments.append({"id": sid, "category_id": category_id, "iscrowd": 0, "isthing": False, "score": score})

    return ids, segments
