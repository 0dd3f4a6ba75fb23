"""TensorBoard event files of a training run (``prn train base|prn --tensorboard``), as detectron2 and
mmdetection write them: losses, learning rate, step time and val PQ as scalars, and a few val panels as images.

They go to ``RUN_DIR/tensorboard/`` (``tensorboard --logdir RUN_DIR``), beside ``metrics.jsonl``, which holds
the same numbers. Writing them needs the optional extra: ``pip install "prn[tensorboard]"``.
"""

from __future__ import annotations

import importlib.util
import numbers
from pathlib import Path
from typing import Sequence

import numpy as np

TENSORBOARD_DIRNAME = "tensorboard"
INSTALL_HINT = 'pip install "prn[tensorboard]"'
#: metrics.jsonl keys -> TensorBoard tags (the loss terms go under loss/, anything else under train/)
_TAGS = {"total": "loss/total", "lr": "train/lr", "grad_norm": "train/grad_norm", "s_per_iter": "time/s_per_iter",
         "eta_s": "time/eta_s", "max_mem_gb": "time/max_mem_gb", "nonfinite_steps": "train/nonfinite_steps"}
_SKIP = {"step", "elapsed_s"}


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def scalar_tags(record: dict) -> dict[str, float]:
    """The scalars of one ``metrics.jsonl`` line, by TensorBoard tag (val results under ``val/``)."""
    if isinstance(record.get("val"), dict):
        return {f"val/{k}": float(v) for k, v in record["val"].items()
                if isinstance(v, numbers.Real) and not isinstance(v, bool) and k != "val_images"}
    out = {}
    for key, value in record.items():
        if key in _SKIP or isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        out[_TAGS.get(key, f"loss/{key.removeprefix('loss_')}" if key.startswith("loss") else f"train/{key}")] = \
            float(value)
    return out


class TrainingEvents:
    """Writes a run's events (rank 0 only). ``purge_step``: on resume, the step the run continues from, so that
    TensorBoard drops the events an interrupted run wrote after its last checkpoint (they are written again)."""

    def __init__(self, run_dir: str | Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIRNAME), purge_step=purge_step)

    def record(self, record: dict) -> None:
        """One ``metrics.jsonl`` line (a training window or a validation)."""
        step = int(record["step"])
        for tag, value in scalar_tags(record).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def panels(self, step: int, panels: Sequence[tuple[str, np.ndarray]]) -> None:
        """Val panels, (title, (H, W, 3) uint8) each, as images ``val_panels/<k>``."""
        for k, (title, image) in enumerate(panels):
            self.writer.add_image(f"val_panels/{k}", np.asarray(image, dtype=np.uint8), step, dataformats="HWC")
            self.writer.add_text(f"val_panels/{k}", title, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def val_panels(gt, sets: Sequence[tuple[str, object]], images_dir: Path, count: int) -> list[tuple[str, np.ndarray]]:
    """Panels image | each set | GT of the first ``count`` GT images (``sets``: (title, PanopticSet)), coloured
    as ``prn viz --color-by panoptic``; the val functions of :mod:`prn_cli.train` draw them for TensorBoard."""
    from .io import read_photo
    from .panoptic import safe_join
    from .visualize import VizOptions, compose_panel, render_overlay

    options = VizOptions(color_by="panoptic")
    categories = gt.categories_by_id
    infos = gt.images_by_id
    lookups = [(title, pset, pset.annotations_by_image()) for title, pset in sets]
    out = []
    for ann in gt.annotations[:count]:
        info = infos.get(ann["image_id"], {})
        photo = read_photo(safe_join(images_dir, info["file_name"], gt.json_path, "image file_name"))
        tiles, titles = [photo], ["image"]
        for title, pset, by_image in lookups:
            pred = by_image.get(ann["image_id"])
            if pred is None:
                continue
            tiles.append(render_overlay(photo, pset.read_ids(pred), pred["segments_info"], categories, options))
            titles.append(title)
        tiles.append(render_overlay(photo, gt.read_ids(ann), ann["segments_info"], categories, options))
        titles.append("ground truth")
        out.append((f"image {ann['image_id']}: " + " | ".join(titles), compose_panel(tiles, titles)))
    return out


__all__ = ["TENSORBOARD_DIRNAME", "INSTALL_HINT", "tensorboard_available", "scalar_tags", "TrainingEvents",
           "val_panels"]
