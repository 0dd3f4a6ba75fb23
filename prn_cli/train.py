"""``prn train base``: train MS-PanopticFPN on any COCO panoptic dataset with the shared engine."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import fail

#: Architecture presets; ``--config FILE`` (JSON of MSPanopticFPNConfig fields) overrides them.
ARCHS = ("tiny", "r18", "r34", "r50", "r101")


def base_model_config(arch: str = "tiny", config_file: str | os.PathLike | None = None):
    from .models.ms_panoptic_fpn.config import BackboneConfig, MSPanopticFPNConfig

    if arch == "tiny":
        config = MSPanopticFPNConfig.tiny()
    elif arch in ARCHS:
        config = MSPanopticFPNConfig(backbone=BackboneConfig(depth=int(arch[1:])))
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if config_file:
        from .panoptic import read_json

        overrides = read_json(Path(config_file), what="model config JSON")
        merged = config.to_dict()
        for section, values in overrides.items():
            if isinstance(values, dict) and isinstance(merged.get(section), dict):
                unknown = set(values) - set(merged[section])
                if unknown:
                    raise fail(config_file, f"unknown {section} option(s) {sorted(unknown)}",
                               f"use fields of {section}: {', '.join(merged[section])}")
                merged[section].update(values)
            elif section in merged:
                merged[section] = values
            else:
                raise fail(config_file, f"unknown option {section!r}", f"use one of {', '.join(merged)}")
        config = MSPanopticFPNConfig.from_dict(merged)
    return config


@dataclass
class BaseTrainingOptions:
    arch: str = "tiny"
    config_file: str | None = None
    crop: int = 256
    scale_range: tuple[float, float] = (0.75, 1.25)
    backbone_weights: str | None = None
    val_images: int = 50        # images of --val used for the periodic PQ (0 = all)


def predict_panoptic(model, items, writer, device, size_divisibility: int, max_size: int | None = None) -> None:
    """Run ``model`` on ``items`` (``(image record, RGB ndarray)``) and add each panoptic result to ``writer``."""
    from .segment import _run_batch

    for record, rgb in items:
        _run_batch(model, [(None, record, rgb)], writer, None, size_divisibility, max_size, device)


def make_val_fn(val_path: str | os.PathLike, limit: int, size_divisibility: int) -> Callable:
    """``evaluate_fn(model, step) -> {pq, pq_th, pq_st, ...}``: segment (the first ``limit``) val images and
    evaluate them against their ground truth with prn's evaluator."""
    from .data import default_images_dir, load_rgb
    from .evaluate import evaluate
    from .panoptic import PanopticSet, PanopticWriter, load_set, safe_join, set_paths

    gt = load_set(val_path)
    images_dir = default_images_dir(gt.json_path)
    if images_dir is None:
        raise fail(gt.json_path, "cannot tell where the val images are", "use a prn synth dataset root or COCO layout")
    annotations = gt.annotations[: limit or None]
    infos = gt.images_by_id
    subset = PanopticSet(gt.json_path, gt.png_dir, gt.categories, [infos[a["image_id"]] for a in annotations],
                         annotations)

    def evaluate_fn(model, step: int) -> dict:
        device = next(model.parameters()).device
        with tempfile.TemporaryDirectory(prefix="prn-val-") as tmp:
            json_path, png_dir = set_paths(tmp)
            with PanopticWriter(json_path, png_dir, gt.categories) as writer:
                items = []
                for ann in annotations:
                    info = infos[ann["image_id"]]
                    rgb = load_rgb(safe_join(images_dir, info["file_name"], gt.json_path, "image file_name"))
                    items.append(({"id": info["id"], "file_name": info["file_name"]}, rgb))
                predict_panoptic(model, items, writer, device, size_divisibility)
            result = evaluate(subset, [tmp], workers=0).results[0]
        g = result.groups
        return {"pq": g["All"]["pq"], "sq": g["All"]["sq"], "rq": g["All"]["rq"], "pq_th": g["Things"]["pq"],
                "pq_st": g["Stuff"]["pq"], "val_images": len(annotations)}

    return evaluate_fn


def train_base(data: str | os.PathLike, train_cfg, options: BaseTrainingOptions = BaseTrainingOptions(), *,
               val: str | os.PathLike | None = None, progress=None) -> dict:
    """Train MS-PanopticFPN on the panoptic set ``data`` (a COCO panoptic JSON, or a prn synth root)."""
    from .data import PanopticTrainingSet, TrainTransform, collate
    from .engine import train
    from .models.backbone import load_backbone_weights
    from .models.categories import CategoryMap
    from .models.ms_panoptic_fpn.model import build_model
    from .panoptic import load_set

    config = base_model_config(options.arch, options.config_file)
    gt = load_set(data)
    categories = gt.categories
    category_map = CategoryMap.from_categories(categories)
    transform = TrainTransform(crop_size=(options.crop, options.crop), scale_range=tuple(options.scale_range))
    dataset = PanopticTrainingSet(gt, category_map=category_map, transform=transform)
    if options.backbone_weights and not Path(options.backbone_weights).is_file():
        raise fail(options.backbone_weights, "backbone weights file is missing", "pass a local torchvision ResNet "
                   "state_dict (nothing is downloaded)")

    def model_factory():
        model = build_model(config, categories)
        if options.backbone_weights:
            try:
                load_backbone_weights(model.backbone, options.backbone_weights)
            except ValueError as exc:
                raise fail(options.backbone_weights, str(exc), "use torchvision's ResNet state_dict for this depth "
                           "at width 64") from None
        return model

    def collate_fn(batch):
        return collate(batch, size_divisibility=config.size_divisibility)

    evaluate_fn = make_val_fn(val, options.val_images, config.size_divisibility) if val else None
    Path(train_cfg.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(train_cfg.out_dir) / "model_config.json").write_text(json.dumps(config.to_dict(), indent=2))
    return train(model_factory, dataset, train_cfg, kind="base", model_config=config.to_dict(),
                 categories=categories, collate_fn=collate_fn, evaluate_fn=evaluate_fn, progress=progress)
