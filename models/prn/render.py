"""PRN map renderer: one code path for the GT training targets and the base prediction's input maps.

A panoptic labelling (a semantic class map, an instance label map and a crowd mask) is rendered into the dense
maps of Panoptic-DeepLab plus PRN's extras (foreground, per-pixel box offsets, instance boundary). Rendering the
base model's prediction with the very same function as the ground truth gives PRN inputs that speak the language
of its targets, so refining is "move these maps towards the GT maps".

Conventions (shared with the network and the post-processing):

- Class indices are contiguous ``0..C-1``; void is ``255`` (:data:`IGNORE`).
- Pixel ``(y, x)`` has its centre at its integer index.
- An instance's centre is its centroid, the mean ``(y, x)`` of its pixels (float).
- ``offset`` = ``(dy, dx)`` = centroid - pixel, in pixels.
- ``box`` = ``(l, t, r, b)`` = ``(x - x_min, y - y_min, x_max - x, y_max - y)`` with the inclusive pixel-index
  extents of the pixel's instance, so the box is recovered as ``(x - l, y - t, x + r, y + b)``.
- ``center`` = max over instances of ``exp(-((y - cy)^2 + (x - cx)^2) / (2 sigma^2))``.

Everything is vectorised torch on the inputs' device: per-instance statistics are segment reductions
(``scatter_add_`` / ``scatter_reduce_``) over the instance pixels, and the only Python loop is over chunks of
instances in the heatmap, whose size bounds the memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..categories import CategoryMap

__all__ = ["IGNORE", "BASE_MAP_CHANNELS", "RenderConfig", "render_maps", "render_panoptic", "input_maps",
           "gaussian_heatmap"]

#: Void / ignore label of the semantic maps.
IGNORE = 255

#: Channels of :func:`input_maps`: foreground 1 + center 1 + offset 2 + box 4 + boundary 1.
BASE_MAP_CHANNELS = 9

#: Default bound on the floats of one heatmap chunk (chunk * H * W): 64 MiB of float32 per chunk.
HEATMAP_CHUNK_ELEMENTS = 1 << 24


@dataclass
class RenderConfig:
    """How targets and base maps are rendered.

    - ``sigma``: standard deviation (px) of each instance's Gaussian in the centre heatmap (Panoptic-DeepLab: 8).
    - ``small_instance_area``: instances with fewer pixels than this (64 x 64 in Panoptic-DeepLab) are "small"...
    - ``small_instance_weight``: ...and their pixels weigh this much in the semantic loss (Panoptic-DeepLab: 3).
    - ``offset_scale``: :func:`input_maps` divides offsets and box distances by it, so that the network's
      input channels are O(1) rather than O(image size).
    """

    sigma: float = 8.0
    small_instance_area: int = 4096
    small_instance_weight: float = 3.0
    offset_scale: float = 64.0

    def __post_init__(self):
        if not self.sigma > 0:
            raise ValueError(f"RenderConfig.sigma must be > 0, got {self.sigma}")
        if not self.offset_scale > 0:
            raise ValueError(f"RenderConfig.offset_scale must be > 0, got {self.offset_scale}")
        if self.small_instance_area < 0:
            raise ValueError(f"RenderConfig.small_instance_area must be >= 0, got {self.small_instance_area}")


def gaussian_heatmap(centers: torch.Tensor, height: int, width: int, sigma: float, *,
                     max_elements: int | None = None) -> torch.Tensor:
    """Max over centres of unnormalised Gaussians (peak 1).

    ``centers`` (K, 2) float ``(cy, cx)`` in pixels; returns (H, W) float32 on ``centers``' device, all zeros
    when K = 0. The centres are processed in chunks of ``max(1, max_elements // (H * W))`` so that the
    temporary (chunk, H, W) tensor stays bounded whatever K is; the result does not depend on the chunking.
    ``max_elements`` defaults to :data:`HEATMAP_CHUNK_ELEMENTS` (read at call time).
    """
    if max_elements is None:
        max_elements = HEATMAP_CHUNK_ELEMENTS
    device = centers.device
    out = torch.zeros((height, width), dtype=torch.float32, device=device)
    k = centers.shape[0]
    if k == 0 or height == 0 or width == 0:
        return out
    centers = centers.to(torch.float32)
    ys = torch.arange(height, dtype=torch.float32, device=device)
    xs = torch.arange(width, dtype=torch.float32, device=device)
    inv_two_var = 1.0 / (2.0 * float(sigma) ** 2)
    chunk = max(1, int(max_elements) // (height * width))
    for start in range(0, k, chunk):
        c = centers[start:start + chunk]
        # The 2D Gaussian is separable: two 1D tables and an outer product cost far fewer exp() calls.
        gy = torch.exp(-(ys[None, :] - c[:, 0:1]) ** 2 * inv_two_var)          # (k, H)
        gx = torch.exp(-(xs[None, :] - c[:, 1:2]) ** 2 * inv_two_var)          # (k, W)
        torch.maximum(out, (gy[:, :, None] * gx[:, None, :]).amax(dim=0), out=out)
    return out


def _exact_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """float32 ``total / count`` of int64 tensors (count >= 1) as quotient + remainder / count.

    The integer sums (up to ~4e9 for a 1024x2048 image) are far beyond float32's 24-bit mantissa; splitting the
    division keeps the mean accurate to float32 precision without float64 (not available on every device).
    """
    q = torch.div(total, count, rounding_mode="floor")
    return q.float() + (total - q * count).float() / count.float()


def _check_inputs(semantic, instances, crowd, thing_classes):
    if semantic.dim() != 2:
        raise ValueError(f"semantic must be (H, W), got shape {tuple(semantic.shape)}")
    if instances.shape != semantic.shape or crowd.shape != semantic.shape:
        raise ValueError(f"semantic {tuple(semantic.shape)}, instances {tuple(instances.shape)} and crowd "
                         f"{tuple(crowd.shape)} must have the same (H, W) shape")
    for name, t in (("semantic", semantic), ("instances", instances)):
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor, got {t.dtype}")
    if thing_classes.dim() != 1:
        raise ValueError(f"thing_classes must be (C,), got shape {tuple(thing_classes.shape)}")


def render_maps(semantic: torch.Tensor, instances: torch.Tensor, crowd: torch.Tensor, thing_classes: torch.Tensor,
                config: RenderConfig | None = None) -> dict[str, torch.Tensor]:
    """Render the dense targets / base maps of one panoptic labelling.

    Inputs (all on one device; ``thing_classes`` is moved there):

    - ``semantic`` (H, W) integer: class index ``0..C-1``, ``255`` void. Any other value raises ValueError.
    - ``instances`` (H, W) integer: ``0`` = no instance, any other value = an instance label (values need not be
      contiguous). An instance is the set of pixels sharing (label, class), so labels may repeat across classes.
      Labels only make instances on labelled, non-crowd pixels of thing classes; elsewhere they only matter
      for the boundary.
    - ``crowd`` (H, W) bool: crowd pixels (keep their class and count as foreground, but are no instance and get
      no centre loss).
    - ``thing_classes`` (C,) bool: True where the class is a thing.

    Returns a dict on the inputs' device:

    - ``"semantic"`` (H, W) long: a copy of ``semantic``.
    - ``"foreground"`` (H, W) float32 {0, 1}: the pixel's class is a thing (crowd included; void is 0).
    - ``"center"`` (1, H, W) float32: Gaussian heatmap (``config.sigma``) of the instance centroids, max over
      instances; all zeros without instances.
    - ``"offset"`` (2, H, W) float32 ``(dy, dx)`` = centroid - pixel on instance pixels, 0 elsewhere.
    - ``"box"`` (4, H, W) float32 ``(l, t, r, b)`` >= 0 (distances to the inclusive extents of the pixel's
      instance) on instance pixels, 0 elsewhere.
    - ``"boundary"`` (1, H, W) float32 {0, 1}: the pixel has a 4-neighbour in a different segment, a segment
      being a (semantic, instance) pair (all void pixels form one segment; the image border is no boundary).
    - ``"semantic_weight"`` (H, W) float32: 0 on void, ``config.small_instance_weight`` on pixels of instances
      with area < ``config.small_instance_area``, 1 elsewhere.
    - ``"center_weight"`` (H, W) float32: 1 on labelled non-crowd pixels, 0 elsewhere.
    - ``"offset_weight"`` (H, W) float32: 1 on instance pixels, 0 elsewhere (also the box loss weight).
    - ``"foreground_weight"`` (H, W) float32: 1 on labelled pixels, 0 on void.

    "Instance pixels" are labelled, non-crowd pixels of a thing class with ``instances != 0``.
    """
    config = config or RenderConfig()
    _check_inputs(semantic, instances, crowd, thing_classes)
    device = semantic.device
    h, w = semantic.shape
    semantic = semantic.long()
    instances = instances.to(device=device, dtype=torch.long)
    crowd = crowd.to(device=device, dtype=torch.bool)
    thing_classes = thing_classes.to(device=device, dtype=torch.bool)
    num_classes = thing_classes.numel()

    labelled = semantic != IGNORE
    bad = labelled & ((semantic < 0) | (semantic >= num_classes))
    if bool(bad.any()):
        values = torch.unique(semantic[bad])[:5].tolist()
        raise ValueError(f"semantic holds class indices {values} outside 0..{num_classes - 1} (void is {IGNORE})")

    if num_classes:
        # Index with a clamped copy: void pixels read some class's flag, which ``labelled`` then masks out.
        is_thing = labelled & thing_classes[semantic.clamp(0, num_classes - 1)]
    else:
        is_thing = torch.zeros_like(labelled)
    inst_mask = is_thing & ~crowd & (instances != 0)

    # --- per-instance statistics as segment reductions over the instance pixels
    flat_idx = inst_mask.flatten().nonzero().squeeze(1)                         # (P,) pixel indices
    ys = torch.div(flat_idx, w, rounding_mode="floor")
    xs = flat_idx - ys * w
    # Instance = (label, class): compact the labels first so the combined key cannot overflow.
    _, label_rank = torch.unique(instances.flatten()[flat_idx], return_inverse=True)
    key = label_rank * max(num_classes, 1) + semantic.flatten()[flat_idx]
    instance_keys, inv = torch.unique(key, return_inverse=True)                 # (P,) instance 0..K-1
    k = instance_keys.numel()

    zeros_k = torch.zeros(k, dtype=torch.long, device=device)
    count = zeros_k.scatter_add(0, inv, torch.ones_like(inv))
    sum_y = zeros_k.scatter_add(0, inv, ys)
    sum_x = zeros_k.scatter_add(0, inv, xs)
    cy, cx = _exact_mean(sum_y, count), _exact_mean(sum_x, count)
    y_min = zeros_k.scatter_reduce(0, inv, ys, "amin", include_self=False)
    y_max = zeros_k.scatter_reduce(0, inv, ys, "amax", include_self=False)
    x_min = zeros_k.scatter_reduce(0, inv, xs, "amin", include_self=False)
    x_max = zeros_k.scatter_reduce(0, inv, xs, "amax", include_self=False)

    offset = torch.zeros((2, h * w), dtype=torch.float32, device=device)
    offset[0, flat_idx] = cy[inv] - ys.float()
    offset[1, flat_idx] = cx[inv] - xs.float()
    box = torch.zeros((4, h * w), dtype=torch.float32, device=device)
    box[0, flat_idx] = (xs - x_min[inv]).float()
    box[1, flat_idx] = (ys - y_min[inv]).float()
    box[2, flat_idx] = (x_max[inv] - xs).float()
    box[3, flat_idx] = (y_max[inv] - ys).float()

    center = gaussian_heatmap(torch.stack([cy, cx], dim=1), h, w, config.sigma)

    # --- boundary: compare each pixel's segment with its right and lower neighbours, mark both sides
    seg_inst = torch.where(labelled, instances, torch.zeros_like(instances))    # void is one segment
    boundary = torch.zeros((h, w), dtype=torch.bool, device=device)
    if w > 1:
        diff = (semantic[:, 1:] != semantic[:, :-1]) | (seg_inst[:, 1:] != seg_inst[:, :-1])
        boundary[:, 1:] |= diff
        boundary[:, :-1] |= diff
    if h > 1:
        diff = (semantic[1:, :] != semantic[:-1, :]) | (seg_inst[1:, :] != seg_inst[:-1, :])
        boundary[1:, :] |= diff
        boundary[:-1, :] |= diff

    # --- weights
    semantic_weight = labelled.float()
    small = (count < config.small_instance_area)[inv]
    semantic_weight.view(-1)[flat_idx[small]] = float(config.small_instance_weight)

    return {
        "semantic": semantic.clone(),
        "foreground": is_thing.float(),
        "center": center.unsqueeze(0),
        "offset": offset.view(2, h, w),
        "box": box.view(4, h, w),
        "boundary": boundary.float().unsqueeze(0),
        "semantic_weight": semantic_weight,
        "center_weight": (labelled & ~crowd).float(),
        "offset_weight": inst_mask.float(),
        "foreground_weight": labelled.float(),
    }


def render_panoptic(ids: torch.Tensor, segments_info: Sequence[dict], category_map: CategoryMap,
                    config: RenderConfig | None = None) -> dict[str, torch.Tensor]:
    """:func:`render_maps` of a COCO-style panoptic labelling.

    ``ids`` (H, W) integer panoptic segment ids; ``segments_info``: dicts with ``id``, ``category_id`` and
    optional ``iscrowd`` (e.g. a COCO panoptic annotation, or ``prn segment``'s output for the base prediction).

    - a non-crowd thing segment becomes one instance;
    - a crowd thing segment keeps its class but is crowd (no centre, offset or box; centre weight 0);
    - a stuff segment has its class and no instance;
    - an id absent from ``segments_info`` (e.g. 0) is void (255).

    A ``category_id`` that ``category_map`` does not list raises ValueError naming it. Returns the dict of
    :func:`render_maps` on ``ids``' device.
    """
    if ids.dim() != 2:
        raise ValueError(f"ids must be (H, W), got shape {tuple(ids.shape)}")
    ids = ids.long()
    device = ids.device
    thing_ids = set(category_map.thing_ids)
    segs = {}
    for seg in segments_info:
        sid, cat = int(seg["id"]), int(seg["category_id"])
        try:
            cls = category_map.class_index(cat)
        except ValueError:
            raise ValueError(f"segment {sid} has category_id {cat}, which the category map does not list "
                             f"(known ids: {list(category_map.class_ids)[:10]}...)") from None
        segs[sid] = (cls, cat in thing_ids, bool(seg.get("iscrowd", 0)))

    uniq, inverse = torch.unique(ids, return_inverse=True)
    # Lookup tables over the distinct ids (a handful of Python steps per segment, never per pixel).
    sem_lut, inst_lut, crowd_lut = [], [], []
    for pos, sid in enumerate(uniq.tolist()):
        cls, thing, iscrowd = segs.get(sid, (IGNORE, False, False))
        sem_lut.append(cls)
        # Every thing segment, crowd included, gets its own label so that boundaries separate touching
        # segments of one class; crowd ones are then excluded from the instances by the crowd mask.
        inst_lut.append(pos + 1 if thing else 0)
        crowd_lut.append(thing and iscrowd)   # the contract's crowd: thing segments with iscrowd=1
    semantic = torch.tensor(sem_lut, dtype=torch.long, device=device)[inverse]
    instances = torch.tensor(inst_lut, dtype=torch.long, device=device)[inverse]
    crowd = torch.tensor(crowd_lut, dtype=torch.bool, device=device)[inverse]
    thing_classes = torch.tensor(category_map.is_thing_class(), dtype=torch.bool, device=device)
    return render_maps(semantic, instances, crowd, thing_classes, config)


def input_maps(rendered: dict[str, torch.Tensor], config: RenderConfig | None = None) -> torch.Tensor:
    """PRN's base-prediction input maps (besides the base semantic) from a :func:`render_maps` dict.

    Returns ``(..., 9, H, W)`` float32 = cat[foreground (1), center (1), offset / offset_scale (2),
    box / offset_scale (4), boundary (1)] along the channel dim (see :data:`BASE_MAP_CHANNELS`); an already
    batched dict (leading batch dims) works too.
    """
    config = config or RenderConfig()
    scale = float(config.offset_scale)
    return torch.cat([
        rendered["foreground"].unsqueeze(-3).float(),
        rendered["center"].float(),
        rendered["offset"].float() / scale,
        rendered["box"].float() / scale,
        rendered["boundary"].float(),
    ], dim=-3)
