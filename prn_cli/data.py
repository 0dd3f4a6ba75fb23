"""Datasets and transforms for training and inference (torch; imported only by the commands that need it).

- :class:`PanopticTrainingSet` reads a COCO panoptic set (image + panoptic PNG) and builds the training
  targets of both networks from the (transformed) panoptic id map, so masks, boxes and the semantic map
  can never disagree with each other.
- :class:`TrainTransform` (scale jitter, flip, crop/pad) draws all its randomness from a
  ``torch.Generator`` passed in, so a sample is a pure function of ``(index, seed)``: the training engine
  derives the seed from ``(run seed, step, rank, slot)`` and a resumed run sees exactly the same batches.
- :func:`collate` pads a batch to a size divisible by the network's largest stride.
- :class:`ImageFolder` lists and loads the images of ``prn segment`` / ``prn refine``.

Geometry conventions: images are ``(3, H, W)`` float tensors normalised with the ImageNet mean/std; boxes
are ``xyxy`` in pixel-edge coordinates (a mask covering columns 3..5 has ``x0 = 3, x1 = 6``), as detectron2's
``BitMasks.get_bounding_boxes`` and COCO's ``[x, y, w, h]`` have it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .errors import InvalidInputError, fail
from .io import orientation_hint, read_photo
from .panoptic import PanopticSet, load_set, read_id_png, safe_join

IGNORE = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


# --------------------------------------------------------------------------------------------------------------
# images


#: (H, W, 3) uint8 RGB of an image file: :func:`prn_cli.io.read_photo` (kept under this name for its importers).
load_rgb = read_photo


def normalize(rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, ImageNet mean/std normalised (on the [0, 1] scale)."""
    if isinstance(rgb, np.ndarray):
        rgb = torch.from_numpy(rgb if rgb.flags.writeable and rgb.flags.c_contiguous else np.array(rgb))
    t = rgb.permute(2, 0, 1).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return t.sub_(mean).div_(std)


def denormalize(image: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`normalize`: (3, H, W) float -> (H, W, 3) uint8 (for visual checks)."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    rgb = (image * std + mean).clamp(0, 1).mul(255).round().byte()
    return rgb.permute(1, 2, 0).cpu().numpy()


# --------------------------------------------------------------------------------------------------------------
# geometry


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) float resized bilinearly to ``size`` (h, w); antialiased when shrinking."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrink = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=shrink)[0]


def _nearest_index(n_in: int, n_out: int) -> torch.Tensor:
    # Sample at output pixel centres (the same geometry as bilinear with align_corners=False), so masks stay
    # aligned with the resized image.
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out)).floor().long()
    return src.clamp_(0, n_in - 1)


def resize_ids(ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) integer id map resized by nearest neighbour to ``size`` (h, w); ids are copied, never blended."""
    if tuple(ids.shape) == tuple(size):
        return ids
    return ids[_nearest_index(ids.shape[0], size[0])][:, _nearest_index(ids.shape[1], size[1])]


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [0, high] (inclusive)."""
    return int(torch.randint(0, high + 1, (), generator=generator)) if high > 0 else 0


@dataclass
class TrainTransform:
    """Random scale jitter, horizontal flip, and a random crop to ``crop_size`` (padded when smaller).

    The image is first scaled so that its short side is ``base_size`` (original size when None), times a
    factor drawn uniformly from ``scale_range``. Padding is zeros in the (normalised) image and id 0 (void)
    in the id map, so padded pixels are ignore (255) in the semantic target and in no mask. Every random
    draw comes from the generator passed to ``__call__``, in a fixed order.
    """

    crop_size: tuple[int, int] | None = (512, 512)   # (h, w); None = no crop
    base_size: int | None = None
    scale_range: tuple[float, float] = (0.75, 1.25)
    flip_prob: float = 0.5

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if self.crop_size is not None and min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be positive, got {self.crop_size}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")

    def __call__(self, image: torch.Tensor, ids: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = ids.shape
        lo, hi = self.scale_range
        scale = (self.base_size / min(h, w) if self.base_size else 1.0) * (lo + (hi - lo) * _rand(generator))
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        image, ids = resize_image(image, size), resize_ids(ids, size)
        if _rand(generator) < self.flip_prob:
            image, ids = image.flip(-1), ids.flip(-1)
        if self.crop_size is None:
            return image.contiguous(), ids.contiguous()
        ch, cw = self.crop_size
        y0 = _randint(size[0] - ch, generator)
        x0 = _randint(size[1] - cw, generator)
        image = image[:, y0:y0 + ch, x0:x0 + cw]
        ids = ids[y0:y0 + ch, x0:x0 + cw]
        if tuple(ids.shape) != (ch, cw):
            padded = image.new_zeros((image.shape[0], ch, cw))
            padded[:, :ids.shape[0], :ids.shape[1]] = image
            padded_ids = ids.new_zeros((ch, cw))
            padded_ids[:ids.shape[0], :ids.shape[1]] = ids
            image, ids = padded, padded_ids
        return image.contiguous(), ids.contiguous()


@dataclass
class EvalTransform:
    """Deterministic resize: the short side to ``min_size`` (when given), then the long side at most
    ``max_size`` (when given), as detectron2's ResizeShortestEdge. No randomness; ``generator`` is ignored.
    """

    min_size: int | None = None
    max_size: int | None = None

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        scale = self.min_size / min(h, w) if self.min_size else 1.0
        if self.max_size and max(h, w) * scale > self.max_size:
            scale = self.max_size / max(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))

    def __call__(self, image: torch.Tensor, ids: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        size = self.output_size(*image.shape[-2:])
        return resize_image(image, size), (resize_ids(ids, size) if ids is not None else None)


# --------------------------------------------------------------------------------------------------------------
# targets


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(G, H, W) bool -> (G, 4) float xyxy pixel-edge boxes (x1 = last column + 1). Empty masks give zeros."""
    g, h, w = masks.shape
    if g == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    cols = masks.any(dim=1)   # (G, W)
    rows = masks.any(dim=2)   # (G, H)
    x0 = cols.float().argmax(dim=1)
    x1 = w - cols.flip(-1).float().argmax(dim=1)
    y0 = rows.float().argmax(dim=1)
    y1 = h - rows.flip(-1).float().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    boxes[~cols.any(dim=1)] = 0
    return boxes


def build_targets(ids: torch.Tensor, segments_info: Sequence[dict], category_map, *, where: str = "") -> dict:
    """Training targets from an (H, W) panoptic id map and its ``segments_info``.

    - ``semantic`` (H, W) long: class index (``category_map.class_index``); void = 255. Crowd regions keep
      their class, as Panoptic-DeepLab trains its semantic branch.
    - ``boxes`` (G, 4), ``labels`` (G,) thing index, ``masks`` (G, H, W) bool, ``instance_ids`` (G,) panoptic
      id: one entry per non-crowd thing segment present in ``ids``, in ``segments_info`` order.
    - ``crowd`` (H, W) bool: pixels of crowd segments (detectors ignore them; PRN's center loss skips them).
    - ``panoptic`` (H, W) int64: the ids themselves; ``segments_info``: the segments present, as plain dicts.

    An id present in the map but not in ``segments_info``, or a category the map does not know, raises
    InvalidInputError (``where`` names the file in the message).
    """
    ids = ids.long()
    h, w = ids.shape
    uniq, inverse = torch.unique(ids, return_inverse=True)
    segs = {int(s["id"]): s for s in segments_info}
    present = set(uniq.tolist()) - {0}
    unknown = sorted(present - set(segs))
    if unknown:
        raise InvalidInputError(f"{where}: segment ids {unknown[:5]} are in the PNG but not in segments_info; "
                                "validate the set with `prn eval` or fix the annotation")
    thing_ids = set(category_map.thing_ids)
    pos = {sid: i for i, sid in enumerate(uniq.tolist())}
    lut = torch.full((len(uniq),), IGNORE, dtype=torch.long)
    crowd_lut = torch.zeros(len(uniq), dtype=torch.bool)
    things: list[tuple[int, int, int]] = []   # (position in uniq, segment id, thing index)
    kept: list[dict] = []
    for sid, seg in segs.items():
        if sid not in present:
            continue
        cat = int(seg["category_id"])
        try:
            lut[pos[sid]] = category_map.class_index(cat)
        except ValueError:
            raise InvalidInputError(f"{where}: segment {sid} has category_id {cat}, which the model's categories "
                                    "do not list; train with the dataset's categories") from None
        crowd = bool(seg.get("iscrowd", 0))
        crowd_lut[pos[sid]] = crowd
        if cat in thing_ids and not crowd:
            things.append((pos[sid], sid, category_map.thing_index(cat)))
        kept.append({"id": sid, "category_id": cat, "iscrowd": int(crowd)})
    if things:
        index = torch.tensor([t[0] for t in things])
        masks = inverse.unsqueeze(0) == index.view(-1, 1, 1)
    else:
        masks = torch.zeros((0, h, w), dtype=torch.bool)
    return {
        "boxes": masks_to_boxes(masks),
        "labels": torch.tensor([t[2] for t in things], dtype=torch.long),
        "masks": masks,
        "instance_ids": torch.tensor([t[1] for t in things], dtype=torch.long),
        "semantic": lut[inverse],
        "crowd": crowd_lut[inverse],
        "panoptic": ids,
        "segments_info": kept,
    }


# --------------------------------------------------------------------------------------------------------------
# datasets


def default_images_dir(json_path: Path) -> Path | None:
    """``<root>/images/<split>`` for ``<root>/annotations/panoptic_<split>.json`` (the ``prn synth`` and COCO
    layout) when that folder exists, else None."""
    json_path = Path(json_path)
    if json_path.parent.name == "annotations" and json_path.stem.startswith("panoptic_"):
        candidate = json_path.parent.parent / "images" / json_path.stem[len("panoptic_"):]
        if candidate.is_dir():
            return candidate
    return None


def resolve_images_dir(pset: PanopticSet, images_dir: str | os.PathLike | None) -> Path:
    """``images_dir``, or the set's default (:func:`default_images_dir`); a one-line error if there is none or
    the folder does not exist."""
    if images_dir is None:
        images_dir = default_images_dir(pset.json_path)
        if images_dir is None:
            raise fail(pset.json_path, "cannot tell where the images of this set are",
                       "lay the set out as COCO and prn synth do: <root>/annotations/panoptic_<split>.json "
                       "with its images in <root>/images/<split>")
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise fail(images_dir, "images folder does not exist", "pass the folder that holds the set's images")
    return images_dir


def check_has_annotations(pset: PanopticSet) -> None:
    """A one-line error for a set with nothing to train on (no annotations), before its images are looked for."""
    if not pset.annotations:
        raise fail(pset.json_path, f"holds {len(pset.images)} image record(s) but no annotations, so there is "
                   "nothing to train on", "pass a panoptic set whose 'annotations' give the segments of its images "
                   "(the ground truth, e.g. annotations/panoptic_train.json of prn synth)")


def annotation_image_path(pset: PanopticSet, annotation: dict, images_dir: Path, infos: dict | None = None) -> Path:
    """The image file of ``annotation``: ``images_dir / <its images record's file_name>`` (kept inside
    ``images_dir``); a one-line error when the record is missing. ``infos`` is ``pset.images_by_id``, passed in
    when called in a loop."""
    info = (infos if infos is not None else pset.images_by_id).get(annotation["image_id"])
    if info is None or "file_name" not in info:
        raise fail(pset.json_path, f"image {annotation['image_id']} has an annotation but no record in 'images'",
                   "add its images record (id, file_name, width, height)")
    return safe_join(images_dir, info["file_name"], pset.json_path, "image file_name")


def plain_segments(segments: Sequence[dict]) -> list[dict]:
    """``{id, category_id, iscrowd}`` of each segment, as plain ints (cheap to pickle into DataLoader workers)."""
    return [{"id": int(s["id"]), "category_id": int(s["category_id"]), "iscrowd": int(s.get("iscrowd", 0))}
            for s in segments]


class PanopticTrainingSet(Dataset):
    """A COCO panoptic set as a torch Dataset of ``(image, target)`` (see :func:`build_targets`).

    ``source`` is a :class:`PanopticSet` or a path that names a whole set (see ``panoptic.resolve_set``).
    Images are ``images_dir / <images record file_name>``; ``images_dir`` defaults to ``<root>/images/<split>``
    for ``<root>/annotations/panoptic_<split>.json``. ``category_map`` defaults to the set's own categories.
    The target also holds ``image_id`` and ``orig_size`` (h, w) of the untransformed image.

    :meth:`sample` ``(index, seed)`` is the engine's entry point (the transform's randomness comes from
    ``seed``); ``dataset[index]`` uses ``seed = index``, so it is deterministic too.
    """

    def __init__(self, source: str | os.PathLike | PanopticSet, images_dir: str | os.PathLike | None = None, *,
                 category_map=None, transform=None):
        from .models.categories import CategoryMap

        pset = source if isinstance(source, PanopticSet) else load_set(source)
        check_has_annotations(pset)
        images_dir = resolve_images_dir(pset, images_dir)
        self.json_path = pset.json_path
        self.images_dir = images_dir
        self.category_map = category_map if category_map is not None else CategoryMap.from_categories(pset.categories)
        self.transform = transform
        infos = pset.images_by_id
        # Plain tuples only: the dataset is pickled into every DataLoader worker.
        self.items: list[tuple[Any, str, str, list[dict]]] = []
        for ann in pset.annotations:
            image_path = annotation_image_path(pset, ann, images_dir, infos)
            self.items.append((ann["image_id"], str(image_path), str(pset.png_path(ann)),
                               plain_segments(ann["segments_info"])))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.sample(index, seed=index)

    def sample(self, index: int, seed: int):
        """Item ``index`` with the transform's randomness drawn from a generator seeded with ``seed``."""
        image_id, image_path, png_path, segments = self.items[index]
        rgb = read_photo(image_path)
        ids = read_id_png(png_path)
        if rgb.shape[:2] != ids.shape:
            raise fail(png_path, f"panoptic PNG is {ids.shape[1]}x{ids.shape[0]} but its image {image_path} is "
                       f"{rgb.shape[1]}x{rgb.shape[0]}{orientation_hint(rgb.shape[:2], ids.shape)}",
                       "write the PNG at the image's size")
        image = normalize(rgb)
        ids_t = torch.from_numpy(ids.astype(np.int64))
        if self.transform is not None:
            generator = torch.Generator().manual_seed(int(seed))
            image, ids_t = self.transform(image, ids_t, generator)
        target = build_targets(ids_t, segments, self.category_map, where=png_path)
        target["image_id"] = image_id
        target["orig_size"] = (int(rgb.shape[0]), int(rgb.shape[1]))
        return image, target


def list_image_files(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Image files named by ``paths`` (files, or folders listed non-recursively and sorted), deduplicated."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise fail(p, "no such image file or folder", "check the path")
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


class ImageFolder(Dataset):
    """Images for inference: item = ``(image (3, h, w) normalised, info)``.

    ``info`` holds ``path``, ``file_name``, ``orig_size`` (h, w) and ``size`` (h, w) after the optional
    ``transform`` (e.g. :class:`EvalTransform`). An unreadable image raises InvalidInputError naming it; the
    caller reports it and goes on with the next.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], transform=None):
        self.files = list_image_files(paths)
        if not self.files:
            raise fail(", ".join(str(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)),
                       "no images found (looked for " + "/".join(IMAGE_SUFFIXES) + ")",
                       "pass image files or a folder of images")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files[index]
        rgb = read_photo(path)
        image = normalize(rgb)
        if self.transform is not None:
            image, _ = self.transform(image, None)
        info = {"path": str(path), "file_name": path.name, "orig_size": (int(rgb.shape[0]), int(rgb.shape[1])),
                "size": (int(image.shape[1]), int(image.shape[2]))}
        return image, info


# --------------------------------------------------------------------------------------------------------------
# batching


def collate(batch: Sequence[tuple[torch.Tensor, Any]], size_divisibility: int = 128):
    """``(images (B, 3, Hp, Wp), targets list, image_sizes list[(h, w)])`` with zero padding at the bottom and
    right, Hp and Wp the largest size in the batch rounded up to a multiple of ``size_divisibility``."""
    if not batch:
        raise ValueError("collate needs at least one item")
    sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img, _ in batch]
    d = max(1, int(size_divisibility))
    hp = -(-max(s[0] for s in sizes) // d) * d
    wp = -(-max(s[1] for s in sizes) // d) * d
    first = batch[0][0]
    images = first.new_zeros((len(batch), first.shape[0], hp, wp))
    for i, (img, _) in enumerate(batch):
        images[i, :, : img.shape[-2], : img.shape[-1]] = img
    return images, [t for _, t in batch], sizes
