"""PRN's data: (image, base prediction, ground truth) triplets for training, and base/image pairing for refining.

A training sample's base prediction is either a real one (a ``prn segment`` or any model's output on the
training images, paired with the GT by ``image_id``) or the GT corrupted the way base models fail
(``perturb.corrupt``), drawn per sample with probability ``base_mix`` for the real one. Corruption strength
is drawn per sample from ``strength_range``, so PRN sees bases from nearly right to poor; this is what makes
it model-agnostic (docs/design.md, "PRN", "Training data").

The GT and the base go through the same scale jitter, flip and crop (one packed id map, so they stay pixel
aligned), then through one renderer (``models.prn.render``): the GT into training targets, the base into the
network's input maps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .data import (TrainTransform, annotation_image_path, check_has_annotations, load_rgb, normalize, plain_segments,
                   resolve_images_dir)
from .errors import InvalidInputError, fail
from .io import orientation_hint
from .models.prn.config import CLASSIFIER_BACKGROUND_EXAMPLES
from .panoptic import PanopticSet, load_set, read_id_png

#: GT and base ids (< 2^24 each) travel through the transform packed into one int64 map.
_PACK = 1 << 24


@dataclass
class RefineDataOptions:
    crop: int = 256
    scale_range: tuple[float, float] = (0.75, 1.25)
    flip_prob: float = 0.5
    #: probability of using the real base prediction of an image (when one is given), else corrupted GT
    base_mix: float = 0.5
    #: corruption strength drawn uniformly per sample
    strength_range: tuple[float, float] = (0.3, 0.8)
    #: probability of blanking the base's instance maps (centre, offsets, boxes, boundaries; the base's semantics
    #: and foreground stay), so that the instance heads must find things in the image instead of copying the base
    base_instance_dropout: float = 0.0
    #: semantic and foreground loss weight of the pixels where the base's class (or foreground) differs from
    #: the GT's; above 1 it makes the pixels where copying the base is wrong count more than the many where
    #: copying is right, which otherwise make "copy the base" a cheap minimum of the loss
    disagreement_weight: float = 1.0
    #: crops of things per sample for the thing classifier (0 = none; PRNConfig.classifier_channels): the GT's
    #: things and the base's things that match one (IoU > 0.5), labelled with the GT's class, drawn at random
    thing_crops: int = 0
    #: their side in pixels (PRNConfig.classifier_crop_size)
    thing_crop_size: int = 32
    #: also crops of "no thing" (PRNConfig.classifier_background), at most a quarter of them: the base's things
    #: that lie on the GT's stuff, and GT things' shapes moved onto stuff
    thing_crop_background: bool = False
    #: which base things those are (PRNConfig.classifier_background_examples)
    thing_crop_background_examples: str = "off_things"
    render: Any = None            # models.prn.render.RenderConfig; None = its defaults

    def __post_init__(self) -> None:
        if not 0.0 <= self.base_mix <= 1.0:
            raise ValueError(f"base_mix must be in [0, 1], got {self.base_mix}")
        lo, hi = self.strength_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"strength_range must satisfy 0 <= low <= high <= 1, got {self.strength_range}")
        if not 0.0 <= self.base_instance_dropout <= 1.0:
            raise ValueError(f"base_instance_dropout must be in [0, 1], got {self.base_instance_dropout}")
        if not (self.disagreement_weight >= 1.0 and np.isfinite(self.disagreement_weight)):
            raise ValueError(f"disagreement_weight must be a finite number >= 1, got {self.disagreement_weight}")
        if self.thing_crops < 0 or self.thing_crop_size < 8:
            raise ValueError(f"thing_crops must be >= 0 and thing_crop_size >= 8, got {self.thing_crops}, "
                             f"{self.thing_crop_size}")
        if self.thing_crop_background_examples not in CLASSIFIER_BACKGROUND_EXAMPLES:
            raise ValueError(f"thing_crop_background_examples must be one of {CLASSIFIER_BACKGROUND_EXAMPLES}, "
                             f"got {self.thing_crop_background_examples!r}")
        if self.crop < 32:
            raise ValueError(f"crop must be at least 32 pixels, got {self.crop}")


def render_base(ids: torch.Tensor, segments_info: Sequence[dict], category_map, render_config,
                where: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """``(base_semantic (H, W) long, base_maps (9, H, W) float)``: a base prediction as PRN's input."""
    from .models.prn.render import input_maps, render_panoptic

    try:
        rendered = render_panoptic(ids, segments_info, category_map, render_config)
    except ValueError as exc:
        raise InvalidInputError(f"{where}: {exc}; map the base's categories with --category-map") from None
    return rendered["semantic"], input_maps(rendered, render_config)


def blank_instance_maps(base_maps: torch.Tensor) -> torch.Tensor:
    """``base_maps`` (9, H, W) with the instance channels zeroed: centre heatmap, offsets, boxes, boundary. The
    foreground (channel 0) stays, so PRN still knows where the base saw things, not which instance is which."""
    out = base_maps.clone()
    out[1:] = 0
    return out


_TARGET_KEYS = ("semantic", "semantic_weight", "center", "center_weight", "offset", "offset_weight", "box",
                "foreground", "foreground_weight")


class RefinementTrainingSet(Dataset):
    """(inputs, targets) for PRN training; see the module docstring.

    ``gt``: a panoptic set (path or :class:`PanopticSet`) with its images in ``images_dir`` (default
    ``<root>/images/<split>``); ``base``: an optional prediction set on the same images. ``inputs`` is
    ``{"image", "base_semantic", "base_maps"}``, ``targets`` the GT renderer maps (see models/prn/render.py).
    """

    def __init__(self, gt: str | os.PathLike | PanopticSet, images_dir: str | os.PathLike | None = None, *,
                 base: str | os.PathLike | PanopticSet | None = None, category_map=None,
                 options: RefineDataOptions = RefineDataOptions()):
        from .models.categories import CategoryMap
        from .models.prn.render import RenderConfig

        gt = gt if isinstance(gt, PanopticSet) else load_set(gt)
        check_has_annotations(gt)
        images_dir = resolve_images_dir(gt, images_dir)
        self.categories = list(gt.categories)
        self.category_map = category_map if category_map is not None else CategoryMap.from_categories(gt.categories)
        self.options = options
        self.render_config = options.render if options.render is not None else RenderConfig()
        self.transform = TrainTransform(crop_size=(options.crop, options.crop), scale_range=options.scale_range,
                                        flip_prob=options.flip_prob)
        base_set = None
        if base is not None:
            base_set = base if isinstance(base, PanopticSet) else load_set(base, need_categories=False)
        base_by_image = base_set.annotations_by_image() if base_set is not None else {}
        infos = gt.images_by_id
        # plain tuples only: the dataset is pickled into every DataLoader worker
        self.items: list[tuple] = []
        for ann in gt.annotations:
            image_path = annotation_image_path(gt, ann, images_dir, infos)
            base_ann = base_by_image.get(ann["image_id"])
            base_item = None
            if base_ann is not None:
                base_item = (str(base_set.png_path(base_ann)), plain_segments(base_ann["segments_info"]))
            self.items.append((ann["image_id"], str(image_path), str(gt.png_path(ann)),
                               plain_segments(ann["segments_info"]), base_item))
        self.with_base = sum(1 for it in self.items if it[4] is not None)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.sample(index, seed=index)

    def sample(self, index: int, seed: int):
        from .models.prn.render import render_panoptic
        from .perturb import CorruptionConfig, corrupt

        image_id, image_path, png_path, segments, base_item = self.items[index]
        rgb = load_rgb(image_path)
        gt_ids = read_id_png(png_path)
        if rgb.shape[:2] != gt_ids.shape:
            raise fail(png_path, f"panoptic PNG is {gt_ids.shape[1]}x{gt_ids.shape[0]} but its image {image_path} "
                       f"is {rgb.shape[1]}x{rgb.shape[0]}{orientation_hint(rgb.shape[:2], gt_ids.shape)}",
                       "write the PNG at the image's size")
        rng = np.random.default_rng(np.random.SeedSequence([int(seed) & (2 ** 63 - 1), 7]))
        if base_item is not None and rng.random() < self.options.base_mix:
            base_png, base_segments = base_item
            base_ids = read_id_png(base_png)
            if base_ids.shape != gt_ids.shape:
                raise fail(base_png, f"base PNG is {base_ids.shape[1]}x{base_ids.shape[0]} but the GT is "
                           f"{gt_ids.shape[1]}x{gt_ids.shape[0]}", "predict the base at the images' size")
        else:
            lo, hi = self.options.strength_range
            config = CorruptionConfig(strength=float(rng.uniform(lo, hi)))
            try:
                base_ids, base_segments = corrupt(gt_ids, segments, self.categories, rng, config)
            except ValueError as exc:
                raise InvalidInputError(f"{png_path}: {exc}; fix or regenerate the ground truth") from None
        packed = torch.from_numpy(gt_ids.astype(np.int64) * _PACK + base_ids.astype(np.int64))
        generator = torch.Generator().manual_seed(int(seed) & (2 ** 63 - 1))
        image, packed = self.transform(normalize(rgb), packed, generator)
        gt_t, base_t = packed // _PACK, packed % _PACK
        try:
            targets = render_panoptic(gt_t, segments, self.category_map, self.render_config)
        except ValueError as exc:
            raise InvalidInputError(f"{png_path}: {exc}") from None
        base_semantic, base_maps = render_base(base_t, base_segments, self.category_map, self.render_config,
                                               where=str(base_item[0] if base_item else png_path))
        if self.options.base_instance_dropout and rng.random() < self.options.base_instance_dropout:
            base_maps = blank_instance_maps(base_maps)
        if self.options.disagreement_weight != 1.0:
            weigh_disagreement(targets, base_semantic, base_maps, self.options.disagreement_weight)
        inputs = {"image": image, "base_semantic": base_semantic, "base_maps": base_maps}
        out = {k: targets[k] for k in _TARGET_KEYS}
        if self.options.thing_crops:
            out["thing_crops"], out["thing_crop_labels"] = thing_classifier_crops(
                image, gt_t, segments, base_t, base_segments, self.category_map, self.options.thing_crops,
                self.options.thing_crop_size, rng, background=self.options.thing_crop_background,
                background_examples=self.options.thing_crop_background_examples)
        return inputs, out


def thing_classifier_crops(image: torch.Tensor, gt_ids: torch.Tensor, gt_segments: Sequence[dict],
                           base_ids: torch.Tensor, base_segments: Sequence[dict], category_map, count: int,
                           crop_size: int, rng: np.random.Generator, *, background: bool = False,
                           background_examples: str = "off_things") -> tuple[torch.Tensor, torch.Tensor]:
    """``(crops (count, 4, S, S), labels (count,))`` for the thing classifier: up to ``count`` things drawn from
    the GT's things (not crowd) and the base's things that match one of them (IoU > 0.5, any class), each labelled
    with the GT thing's class index (``category_map.thing_index``); the rest is padding, label -1. The base's
    masks are what the classifier reads at inference; the GT's are the clean examples of each shape.

    With ``background``, up to a quarter of the crops are "no thing" (label: the number of thing classes): the
    base's things with less than a fifth of their non-void pixels on the GT's things (crowd regions included),
    which is what a false detection looks like, and up to two GT things' masks moved onto the GT's stuff, so that
    the shapes of both labels are the same and only what lies inside tells them apart. ``background_examples=
    "unmatched"`` takes every base thing that matches no GT thing instead (what PQ counts as a false positive: a
    split's smaller half and a fragment too), except those with half their pixels or more on crowd regions."""
    from .models.prn.classifier import thing_crops

    things = set(category_map.thing_ids)
    gt_things = {int(s["id"]): category_map.thing_index(s["category_id"]) for s in gt_segments
                 if int(s["category_id"]) in things and not s.get("iscrowd")}
    gt_flat, base_flat = gt_ids.flatten(), base_ids.flatten()
    areas = {int(k): int(v) for k, v in zip(*torch.unique(gt_flat, return_counts=True))}
    picks: list[tuple[torch.Tensor, int, int]] = []  # (id map, segment id, label)
    picks += [(gt_ids, sid, label) for sid, label in gt_things.items() if areas.get(sid, 0) >= 4]
    negatives: list[tuple[torch.Tensor, int, int]] = []
    no_thing = len(category_map.thing_ids)
    if background:   # a pass over the whole map per sample, which the classifier without the class does not need
        on_thing = torch.isin(gt_flat, torch.tensor([int(s["id"]) for s in gt_segments
                                                     if int(s["category_id"]) in things], dtype=gt_flat.dtype))
        if background_examples == "unmatched":
            on_crowd = torch.isin(gt_flat, torch.tensor([int(s["id"]) for s in gt_segments if s.get("iscrowd")],
                                                        dtype=gt_flat.dtype))
    for s in base_segments:
        sid = int(s["id"])
        if int(s["category_id"]) not in things:
            continue
        inside = base_flat == sid
        area = int(inside.sum())
        if area < 4:
            continue
        under, shared = torch.unique(gt_flat[inside], return_counts=True)
        for gid, n in zip(under.tolist(), shared.tolist()):
            if gid in gt_things and n / (area + areas[gid] - n) > 0.5:
                picks.append((base_ids, sid, gt_things[gid]))
                break
        else:
            if background and area >= 16:
                if background_examples == "unmatched":
                    false_positive = int((inside & on_crowd).sum()) < 0.5 * area
                else:
                    labelled = int((inside & (gt_flat != 0)).sum())
                    false_positive = labelled and int((inside & on_thing).sum()) < 0.2 * labelled
                if false_positive:
                    negatives.append((base_ids, sid, no_thing))
    if background:
        negatives += _things_moved_onto_stuff(gt_ids, on_thing.reshape(gt_ids.shape), list(gt_things), no_thing,
                                              rng, tries=2)
    crops = torch.zeros((count, 4, crop_size, crop_size))
    labels = torch.full((count,), -1, dtype=torch.long)
    chosen = [negatives[i] for i in rng.permutation(len(negatives))[:count // 4].tolist()]
    chosen += [picks[i] for i in rng.permutation(len(picks))[:count - len(chosen)].tolist()]
    for k, (ids, sid, label) in enumerate(chosen):
        crops[k] = thing_crops(image, ids, [sid], crop_size)[0]
        labels[k] = label
    return crops, labels


def _things_moved_onto_stuff(gt_ids: torch.Tensor, on_thing: torch.Tensor, thing_ids: Sequence[int], label: int,
                             rng: np.random.Generator, *, tries: int) -> list[tuple[torch.Tensor, int, int]]:
    """Up to ``tries`` "no thing" examples ``(id map, 1, label)``: a GT thing's mask shifted to a random place
    where at least 90% of it lies on labelled pixels that are not things (10 attempts each)."""
    h, w = gt_ids.shape
    labelled_stuff = (~on_thing) & (gt_ids != 0)
    out = []
    for _ in range(tries if thing_ids else 0):
        sid = thing_ids[int(rng.integers(len(thing_ids)))]
        ys, xs = torch.nonzero(gt_ids == sid, as_tuple=True)
        if ys.numel() < 16:
            continue
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
        for _ in range(10):
            dy = int(rng.integers(-y0, h - y1)) if h - y1 > -y0 else 0
            dx = int(rng.integers(-x0, w - x1)) if w - x1 > -x0 else 0
            ny, nx = ys + dy, xs + dx
            if float(labelled_stuff[ny, nx].float().mean()) >= 0.9:
                moved = torch.zeros_like(gt_ids)
                moved[ny, nx] = 1
                out.append((moved, 1, label))
                break
    return out


def weigh_disagreement(targets: dict, base_semantic: torch.Tensor, base_maps: torch.Tensor, weight: float) -> None:
    """Multiply ``targets``' ``semantic_weight`` by ``weight`` where the base's class differs from the GT's
    (void in the base counts as different), and ``foreground_weight`` where the base's foreground does; in
    place. Pixels with weight 0 (void in the GT, padding) stay 0."""
    sem = targets["semantic"]
    differs = base_semantic.to(sem.dtype) != sem
    targets["semantic_weight"] = targets["semantic_weight"] * torch.where(differs, weight, 1.0)
    fg_differs = (base_maps[0] > 0.5) != (targets["foreground"] > 0.5)
    targets["foreground_weight"] = targets["foreground_weight"] * torch.where(fg_differs, weight, 1.0)


# Padding values: void for labels, zero (and so zero loss weight) for everything else.
_PAD = {"base_semantic": 255, "semantic": 255}
#: targets that are not maps of the image (stacked as they are, not padded)
_NOT_SPATIAL = ("thing_crops", "thing_crop_labels")


def _pad_stack(tensors: Sequence[torch.Tensor], hp: int, wp: int, value) -> torch.Tensor:
    first = tensors[0]
    out = first.new_full((len(tensors), *first.shape[:-2], hp, wp), value)
    for i, t in enumerate(tensors):
        out[i, ..., : t.shape[-2], : t.shape[-1]] = t
    return out


def collate_refine(batch: Sequence[tuple[dict, dict | None]], size_divisibility: int = 32):
    """``(inputs, targets)`` batched and padded at the bottom/right to a multiple of ``size_divisibility``;
    ``targets`` is None when the items carry none. Padding is void in label maps and zero elsewhere, so it
    has zero weight in every loss."""
    if not batch:
        raise ValueError("collate_refine needs at least one item")
    d = max(1, int(size_divisibility))
    hp = -(-max(int(x["image"].shape[-2]) for x, _ in batch) // d) * d
    wp = -(-max(int(x["image"].shape[-1]) for x, _ in batch) // d) * d
    inputs = {k: _pad_stack([x[k] for x, _ in batch], hp, wp, _PAD.get(k, 0)) for k in batch[0][0]}
    if batch[0][1] is None:
        return inputs, None
    targets = {k: torch.stack([t[k] for _, t in batch]) if k in _NOT_SPATIAL
               else _pad_stack([t[k] for _, t in batch], hp, wp, _PAD.get(k, 0)) for k in batch[0][1]}
    return inputs, targets


# --------------------------------------------------------------------------------------------------------------
# pairing a base set with its images (prn refine)


@dataclass
class BaseItem:
    annotation: dict
    image: dict                  # the COCO image record written to the refined set
    image_path: Path
    extra: dict = field(default_factory=dict)


def pair_with_images(base: PanopticSet, image_files: Sequence[Path]) -> list[BaseItem]:
    """Pair each base annotation with its image file.

    Through the base JSON's ``images`` record (its ``file_name``) when there is one, else by file stem
    (``000000142238.png`` <-> ``000000142238.jpg``). An annotation with no image is an error naming it.
    """
    by_name = {f.name: f for f in image_files}
    by_stem: dict[str, list[Path]] = {}
    for f in image_files:
        by_stem.setdefault(f.stem, []).append(f)
    records = base.images_by_id
    out: list[BaseItem] = []
    for ann in base.annotations:
        rec = records.get(ann["image_id"])
        path = None
        if rec is not None and rec.get("file_name"):
            path = by_name.get(Path(str(rec["file_name"])).name)
        if path is None:
            stem = Path(str(ann["file_name"])).stem
            found = by_stem.get(stem, [])
            if len(found) > 1:
                raise fail(base.json_path, f"base annotation {ann['file_name']} matches several images "
                           f"({', '.join(p.name for p in found[:3])})", "keep one image per stem in the folder")
            path = found[0] if found else None
        if path is None:
            looked = f"{rec['file_name']} or " if rec is not None and rec.get("file_name") else ""
            raise fail(base.json_path, f"base annotation {ann['file_name']} (image_id {ann['image_id']}) has no "
                       f"image (looked for {looked}{Path(str(ann['file_name'])).stem}.*)",
                       "pass the folder of the images the base was predicted on (--images)")
        image = {"id": ann["image_id"], "file_name": path.name}
        if rec is not None:
            image.update({k: v for k, v in rec.items() if k not in ("id", "file_name")})
        out.append(BaseItem(ann, image, path))
    return out
