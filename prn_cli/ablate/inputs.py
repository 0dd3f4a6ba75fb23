"""What the ablation evaluates on: the val GT subset, its images and the val base (given, or made in RUN/base_val)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import fail
from .folder import BASE_VAL_DIR
from .options import AblationOptions
from .progress import ProgressFn


@dataclass
class ValInputs:
    gt: Any                  # PanopticSet: the val GT subset that is evaluated
    images: list[Path]       # its image files, in GT order
    base_path: Path | None   # the val base to use as it is (None: RUN/base_val is made)


def check_inputs(options: AblationOptions) -> ValInputs:
    """Read and check everything the ablation needs before anything is trained (cheap: JSON files only)."""
    from ..checkpoint import load_checkpoint
    from ..data import default_images_dir
    from ..panoptic import PanopticSet, load_set, safe_join

    for name in ("config_file", "backbone_weights"):
        value = getattr(options.training, name)
        if value and not Path(value).is_file():
            raise fail(value, f"{name.replace('_', ' ')} is missing", "check the path")
    load_set(options.data)
    if options.base:
        load_set(options.base, need_categories=False)
    gt = load_set(options.val)
    images_dir = Path(options.val_images) if options.val_images else default_images_dir(gt.json_path)
    if images_dir is None:
        raise fail(gt.json_path, "cannot tell where the val images are", "pass --val-images DIR or use a prn "
                   "synth root or the COCO layout (annotations/panoptic_<split>.json beside images/<split>/)")
    if not images_dir.is_dir():
        raise fail(images_dir, "val images folder does not exist", "pass --val-images DIR")
    keep = gt.annotations[: options.val_limit or None]
    if not keep:
        raise fail(gt.json_path, "the val ground truth holds no annotation", "use a non-empty val set")
    infos = gt.images_by_id
    missing = [a["image_id"] for a in keep if a["image_id"] not in infos]
    if missing:
        raise fail(gt.json_path, f"annotation of image_id {missing[0]} has no image record", "fix the val JSON")
    subset = PanopticSet(gt.json_path, gt.png_dir, gt.categories, [infos[a["image_id"]] for a in keep], keep,
                         gt.extra)
    images = [safe_join(images_dir, infos[a["image_id"]]["file_name"], gt.json_path, "image file_name")
              for a in keep]
    absent = [p for p in images if not p.is_file()]
    if absent:
        raise fail(absent[0], "val image is missing", "pass the folder of the val images with --val-images DIR")
    base_path = None
    if options.val_base is not None:
        base = load_set(options.val_base, need_categories=False)
        have = {a["image_id"] for a in base.annotations}
        lacking = [a["image_id"] for a in keep if a["image_id"] not in have]
        if lacking:
            raise fail(base.json_path, f"has no prediction for val image_id {lacking[0]} ({len(lacking)} missing)",
                       "predict the base on every val image (or lower --val-limit)")
        if not options.val_limit or len(keep) == len(gt.annotations):
            base_path = base.json_path
    else:
        load_checkpoint(options.base_weights, kind="base")
    return ValInputs(subset, images, base_path)


def make_base_val(run: Path, options: AblationOptions, inputs: ValInputs, progress: ProgressFn,
                  stage: str = "base") -> Path:
    """The val base to refine: the given set, else RUN/base_val (made once: segmented, or a subset copy)."""
    from ..panoptic import PanopticWriter, load_set, set_paths
    from ..segment import PROGRESS_NAME, SegmentOptions, segment

    if inputs.base_path is not None:
        return inputs.base_path
    out = Path(run) / BASE_VAL_DIR
    json_path, png_dir = set_paths(out)
    pending = out / PROGRESS_NAME
    if json_path.exists() and not pending.exists():
        return json_path
    stage = f"{stage}: " + ("segment val images" if options.base_weights else "copy the val subset")
    if options.base_weights:
        seg_options = SegmentOptions(device=options.device, images_json=str(inputs.gt.json_path))
        segment(inputs.images, options.base_weights, out, options=seg_options, resume=pending.exists(),
                overwrite=True, progress=lambda d, t: progress(stage, d, t))
        return json_path
    base = load_set(options.val_base, need_categories=False)
    by_image = base.annotations_by_image()
    records = base.images_by_id
    keep = [by_image[a["image_id"]] for a in inputs.gt.annotations]
    with PanopticWriter(json_path, png_dir, base.categories, overwrite=True,
                        info={"description": "prn ablate: the first val images of the base",
                              "source": str(base.json_path)}) as writer:
        for k, ann in enumerate(keep):
            target = png_dir / ann["file_name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            source = base.png_path(ann)
            if not source.is_file():
                raise fail(source, "base PNG is missing", f"regenerate the val base {base.json_path}")
            shutil.copyfile(source, target)
            image = records.get(ann["image_id"]) or {"id": ann["image_id"], "file_name": ann["file_name"]}
            writer.adopt(image, ann)
            progress(stage, k + 1, len(keep))
    return json_path
