"""What a checkpoint was trained on, and a warning when the images it is given look nothing like that.

Training records a cheap summary of its images in the checkpoint (``training_data``: the set's path, image and
category counts, and the mean and spread of a few per-image statistics over a sample of its images). The
shipped checkpoints predate that record, so :mod:`prn_cli.shipped` holds theirs, measured the same way on the
data they were trained on. ``prn segment`` and ``prn refine`` compare the first images they read with it
(:class:`InputCheck`) and warn once when they are far off: a model trained on prn's synthetic shapes answers
"square" and "road" on a photo of a cat, and should say so.

Everything here is numpy only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

#: The per-image statistics, in order: size, and colour / texture measured on every 2nd pixel.
FEATURES = ("long_side", "aspect", "brightness", "contrast", "saturation", "edges")
#: How many training images are summarised (the first ones of the set: enough for a mean and a spread).
SAMPLE_IMAGES = 64
#: How many input images are looked at before deciding (fewer when the input has fewer).
CHECK_IMAGES = 8
#: A statistic is "far" when the inputs' mean lies this many training spreads away ...
Z_LIMIT = 4.0
#: ... where a spread is at least this, and at least this fraction of the mean (the statistics lie in [0, 1];
#: a set of one size, or of one noise level, has next to no spread)
MIN_SPREAD = 0.01
MIN_RELATIVE_SPREAD = 0.1
#: Image sizes are far when the long sides differ by more than this factor.
SIZE_FACTOR = 2.0


def image_statistics(rgb: np.ndarray) -> np.ndarray:
    """The :data:`FEATURES` of one (H, W, 3) uint8 image."""
    h, w = rgb.shape[:2]
    small = np.asarray(rgb[::2, ::2, :3], dtype=np.float32) / 255.0
    grey = small.mean(axis=2)
    saturation = small.max(axis=2) - small.min(axis=2)
    edges = np.abs(np.diff(grey, axis=1)).mean() if grey.shape[1] > 1 else 0.0
    return np.array([max(h, w), w / max(1, h), grey.mean(), grey.std(), saturation.mean(), edges], dtype=np.float64)


def summarize(images: Sequence[np.ndarray], *, source: str | None = None, total_images: int | None = None,
              categories: Sequence[dict] = ()) -> dict:
    """``training_data`` for a checkpoint: where the data came from, how big it is, and the statistics' mean and
    standard deviation over ``images``."""
    stats = np.stack([image_statistics(im) for im in images]) if len(images) else np.zeros((0, len(FEATURES)))
    return {"source": source, "images": total_images if total_images is not None else len(images),
            "categories": len(categories), "things": sum(1 for c in categories if c.get("isthing")),
            "sample": len(images), "features": list(FEATURES),
            "mean": [round(float(v), 6) for v in stats.mean(axis=0)] if len(images) else [],
            "std": [round(float(v), 6) for v in stats.std(axis=0)] if len(images) else []}


def summarize_set(gt, images_dir: str | os.PathLike | None, sample: int = SAMPLE_IMAGES) -> dict:
    """:func:`summarize` over the first ``sample`` photos of a training set (``gt``: a PanopticSet)."""
    from .io import read_photo
    from .panoptic import safe_join

    photos = []
    if images_dir is not None:
        for info in gt.images[:sample]:
            path = safe_join(Path(images_dir), info["file_name"], gt.json_path, "image file_name")
            if path.is_file():
                photos.append(read_photo(path))
    return summarize(photos, source=str(gt.json_path), total_images=len(gt.images), categories=gt.categories)


def far_statistics(training: dict, observed: np.ndarray) -> list[str]:
    """What sets the ``observed`` statistics (one row per image) apart from ``training``'s, in words; [] when
    nothing does."""
    if not training or not training.get("mean") or list(training.get("features", [])) != list(FEATURES):
        return []
    mean = np.asarray(training["mean"], dtype=np.float64)
    std = np.maximum(np.asarray(training["std"], dtype=np.float64), np.maximum(MIN_SPREAD,
                                                                               MIN_RELATIVE_SPREAD * np.abs(mean)))
    seen = observed.mean(axis=0)
    out = []
    if not 1 / SIZE_FACTOR <= seen[0] / max(1.0, mean[0]) <= SIZE_FACTOR:
        out.append(f"images of about {seen[0]:.0f} px on the long side (trained on {mean[0]:.0f} px)")
    for k in range(2, len(FEATURES)):
        if abs(seen[k] - mean[k]) / std[k] > Z_LIMIT:
            out.append(f"{FEATURES[k]} {seen[k]:.2f} (trained on {mean[k]:.2f} ± {training['std'][k]:.2f})")
    return out


class InputCheck:
    """Looks at the first :data:`CHECK_IMAGES` images a predictor is given and warns once (through ``warn``)
    when they are far from what its checkpoint was trained on. Does nothing without a training record."""

    def __init__(self, training: dict | None, checkpoint: str, warn: Callable[[str], None] | None = None,
                 hint: str = ""):
        if warn is None:
            from .console import warn as console_warn

            warn = console_warn
        self.training, self.checkpoint, self.warn, self.hint = training, checkpoint, warn, hint
        self.rows: list[np.ndarray] = []
        self.done = not training

    @classmethod
    def for_predictor(cls, predictor, warn: Callable[[str], None] | None = None) -> "InputCheck":
        """The check of a Segmenter or Refiner: its checkpoint's record, else the shipped model's."""
        from .shipped import shipped_training_data

        weights = getattr(predictor, "weights", None)
        training = getattr(predictor, "training_data", None) or shipped_training_data(weights)
        hint = ("" if training is None or not training.get("shipped") else
                "; the shipped models are a demonstration trained on prn's synthetic shapes: to segment or refine "
                "real images, train on your own data (prn train base, prn train prn) and pass --weights")
        return cls(training, str(weights), warn, hint)

    def observe(self, rgb: np.ndarray) -> None:
        if self.done:
            return
        self.rows.append(image_statistics(rgb))
        if len(self.rows) >= CHECK_IMAGES:
            self.finish()

    def finish(self) -> None:
        """Decide on what was seen (also when fewer than :data:`CHECK_IMAGES` images came)."""
        if self.done or not self.rows:
            self.done = True
            return
        self.done = True
        far = far_statistics(self.training, np.stack(self.rows))
        if far:
            source = self.training.get("description") or self.training.get("source") or "its training data"
            self.warn(f"these images look unlike what {self.checkpoint} was trained on ({source}): "
                      + "; ".join(far) + ". Expect poor predictions" + self.hint)


__all__ = ["FEATURES", "image_statistics", "summarize", "summarize_set", "far_statistics", "InputCheck"]
