"""``prn train base``: train MS-PanopticFPN on any COCO panoptic dataset with the shared engine."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .errors import UsageError, fail
from .io import write_text_atomic
from .options import PostProcessOverrides, PRNSwitches
from .resume import absolute

if TYPE_CHECKING:
    from .engine import TrainSummary

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
    val_limit: int = 50         # images of --val used for the periodic PQ (0 = all)


def check_backbone_weights(path: str | None) -> None:
    if path and not Path(path).is_file():
        raise fail(path, "backbone weights file is missing", "pass a local torchvision ResNet state_dict or a prn "
                   "base checkpoint (nothing is downloaded)")


def with_backbone_weights(model, path: str | None):
    """``model`` with ``path`` (torchvision ResNet state_dict, or a checkpoint whose ResNet is under
    ``backbone.``) loaded into ``model.backbone``; for PRN the extra stem channels stay zero."""
    from .models.backbone import load_backbone_weights

    if path:
        try:
            load_backbone_weights(model.backbone, path)
        except ValueError as exc:
            raise fail(path, str(exc), "use torchvision's ResNet state_dict for this depth at width 64, or a prn "
                       "base checkpoint of the same architecture") from None
    return model


#: Val panels (image | prediction | GT) drawn for TensorBoard at each validation of a --tensorboard run.
TENSORBOARD_PANELS = 3


def make_val_fn(val_path: str | os.PathLike, limit: int, size_divisibility: int, panels: int = 0) -> Callable:
    """``evaluate_fn(model, step) -> {pq, pq_th, pq_st, ...}`` (percentages): segment (the first ``limit``) val
    images and evaluate them against their ground truth with prn's evaluator; with ``panels``, also the panels
    of that many images under ``"panels"`` (the engine sends them to TensorBoard)."""
    from .data import default_images_dir
    from .evaluate import evaluate
    from .io import read_photo
    from .panoptic import PanopticSet, PanopticWriter, load_set, safe_join, set_paths
    from .predictors import Segmenter
    from .segment import write_predictions

    gt = load_set(val_path)
    images_dir = default_images_dir(gt.json_path)
    if images_dir is None:
        raise fail(gt.json_path, "cannot tell where the val images are", "use a prn synth dataset root or COCO layout")
    annotations = gt.annotations[: limit or None]
    infos = gt.images_by_id
    subset = PanopticSet(gt.json_path, gt.png_dir, gt.categories, [infos[a["image_id"]] for a in annotations],
                         annotations)

    def evaluate_fn(model, step: int) -> dict:
        segmenter = Segmenter.from_model(model, gt.categories, size_divisibility)
        with tempfile.TemporaryDirectory(prefix="prn-val-") as tmp:
            json_path, png_dir = set_paths(tmp)
            with PanopticWriter(json_path, png_dir, gt.categories) as writer:
                for ann in annotations:
                    info = infos[ann["image_id"]]
                    rgb = read_photo(safe_join(images_dir, info["file_name"], gt.json_path, "image file_name"))
                    write_predictions(segmenter, [({"id": info["id"], "file_name": info["file_name"]}, rgb)], writer)
            result = evaluate(subset, [tmp], workers=0).results[0]
            drawn = _panels(subset, [("prediction", tmp)], images_dir, panels)
        return {**_percentages(result.groups), "val_images": len(annotations), **drawn}

    return evaluate_fn


def _training_data(gt) -> dict:
    """What the checkpoint records of its training images (training_data.py): segment and refine compare the
    images they are given with it."""
    from .data import default_images_dir
    from .training_data import summarize_set

    return summarize_set(gt, default_images_dir(gt.json_path))


def _panels(gt, sets, images_dir, count: int) -> dict:
    if not count:
        return {}
    from .panoptic import load_set
    from .tensorboard_events import val_panels

    loaded = [(title, s if hasattr(s, "annotations") else load_set(s, need_categories=False)) for title, s in sets]
    return {"panels": val_panels(gt, loaded, Path(images_dir), count)}


def _percentages(groups: dict, prefix: str = "") -> dict:
    """PQ / SQ / RQ of All, PQ of Things and Stuff, in percent (as every prn table shows them)."""
    def pct(v):
        return None if v is None else round(100.0 * v, 3)

    return {f"{prefix}pq": pct(groups["All"]["pq"]), f"{prefix}sq": pct(groups["All"]["sq"]),
            f"{prefix}rq": pct(groups["All"]["rq"]), f"{prefix}pq_th": pct(groups["Things"]["pq"]),
            f"{prefix}pq_st": pct(groups["Stuff"]["pq"])}


def train_base(data: str | os.PathLike, train_cfg, options: BaseTrainingOptions = BaseTrainingOptions(), *,
               val: str | os.PathLike | None = None, progress=None, overwrite: bool = False) -> "TrainSummary":
    """Train MS-PanopticFPN on the panoptic set ``data`` (a COCO panoptic JSON, or a prn synth root)."""
    from .data import PanopticTrainingSet, TrainTransform, collate
    from .engine import train
    from .models.categories import CategoryMap
    from .models.ms_panoptic_fpn.model import build_model
    from .panoptic import load_set

    config = base_model_config(options.arch, options.config_file)
    gt = load_set(data)
    categories = gt.categories
    category_map = CategoryMap.from_categories(categories)
    transform = TrainTransform(crop_size=(options.crop, options.crop), scale_range=tuple(options.scale_range))
    dataset = PanopticTrainingSet(gt, category_map=category_map, transform=transform)
    check_backbone_weights(options.backbone_weights)

    def model_factory():
        return with_backbone_weights(build_model(config, categories), options.backbone_weights)

    def collate_fn(batch):
        return collate(batch, size_divisibility=config.size_divisibility)

    evaluate_fn = make_val_fn(val, options.val_limit, config.size_divisibility,
                              panels=TENSORBOARD_PANELS if train_cfg.tensorboard else 0) if val else None
    _write_model_config(train_cfg, config.to_dict())
    if overwrite:
        train_cfg = dataclasses.replace(train_cfg, overwrite=True)
    request = training_request(options, data=gt.json_path, val=val)
    return train(model_factory, dataset, train_cfg, kind="base", model_config=config.to_dict(),
                 categories=categories, collate_fn=collate_fn, evaluate_fn=evaluate_fn, progress=progress,
                 request=request, request_may_change=RESUME_MAY_CHANGE,
                 checkpoint_extra={"training_data": _training_data(gt)})


#: Training options a resume may change (logged): validation only, and the initial weights, which the resumed
#: state replaces anyway. The engine adds its own (device, workers, checkpoint interval).
RESUME_MAY_CHANGE = ("val", "val_base", "val_limit", "backbone_weights", "init_weights")
#: Options that the checkpoint's model configuration holds (the engine compares that as a whole)
_IN_MODEL_CONFIG = ("arch", "config_file", "switches", "postprocess")
_PATH_OPTIONS = ("backbone_weights", "init_weights")


def training_request(options, **paths) -> dict:
    """What a training run is asked beside the schedule and the model configuration (stored in last.pt; a resume
    must ask the same but for :data:`RESUME_MAY_CHANGE`): every field of ``options`` (so a new option is covered
    without being listed here) and the sets in ``paths``, as absolute paths."""
    request = {k: absolute(v) for k, v in paths.items()}
    for f in dataclasses.fields(options):
        if f.name in _IN_MODEL_CONFIG:
            continue
        value = getattr(options, f.name)
        request[f.name] = absolute(value) if f.name in _PATH_OPTIONS else (
            list(value) if isinstance(value, tuple) else value)
    return request


def _write_model_config(train_cfg, config: dict) -> None:
    """RUN/model_config.json, for people; a resume leaves the one its run wrote (the engine refuses another)."""
    path = Path(train_cfg.out_dir) / "model_config.json"
    if train_cfg.resume and path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(config, indent=2))


# --------------------------------------------------------------------------------------------------------------
# PRN

#: PRN architecture presets; ``--config FILE`` (JSON of PRNConfig fields) overrides them.
PRN_ARCHS = ("tiny", "r18", "r50")

#: things cut out of each training sample for the thing classifier, when the PRN has one
THING_CROPS_PER_SAMPLE = 16

#: The Table 1 switches (docs/design.md, "Table 1 and prn ablate"), as PRNConfig / PostProcessConfig fields.
TABLE1_SWITCHES = ("foreground_head", "coordconv_decoder", "coordconv_encoder", "box_head")


def prn_model_config(arch: str = "tiny", config_file: str | os.PathLike | None = None, **switches):
    """A PRNConfig from a preset, a JSON file of overrides, then the Table 1 ``switches`` (None = keep)."""
    import dataclasses

    from .models.prn.config import PRNBackboneConfig, PRNConfig

    if arch not in PRN_ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(PRN_ARCHS)}")
    config = PRNConfig.tiny() if arch == "tiny" else PRNConfig(backbone=PRNBackboneConfig(depth=int(arch[1:])))
    if config_file:
        from .panoptic import read_json

        overrides = read_json(Path(config_file), what="model config JSON")
        merged = config.to_dict()
        for key, value in overrides.items():
            if key not in merged:
                raise fail(config_file, f"unknown option {key!r}", f"use one of {', '.join(merged)}")
            if isinstance(value, dict) and isinstance(merged[key], dict):
                unknown = set(value) - set(merged[key])
                if unknown:
                    raise fail(config_file, f"unknown {key} option(s) {sorted(unknown)}",
                               f"use fields of {key}: {', '.join(merged[key])}")
                merged[key].update(value)
            else:
                merged[key] = value
        config = PRNConfig.from_dict(merged)
    changes = {k: v for k, v in switches.items() if v is not None}
    return dataclasses.replace(config, **changes) if changes else config


@dataclass
class PRNTrainingOptions:
    arch: str = "tiny"
    config_file: str | None = None
    #: Table 1 network switches (None fields keep the preset's value)
    switches: PRNSwitches = field(default_factory=PRNSwitches)
    crop: int = 256
    scale_range: tuple[float, float] = (0.75, 1.25)
    base_mix: float = 0.5
    strength_range: tuple[float, float] = (0.3, 0.8)
    #: share of samples whose base instance maps are blanked (refine_data.RefineDataOptions)
    base_instance_dropout: float = 0.0
    #: loss weight of pixels where the base disagrees with the GT (refine_data.RefineDataOptions)
    disagreement_weight: float = 1.0
    backbone_weights: str | None = None
    #: start from this PRN checkpoint's network weights (fine-tuning); the network the options describe must
    #: be the checkpoint's and the categories the training set's
    init_weights: str | None = None
    val_limit: int = 50
    #: post-processing stored in the checkpoint; fields left None follow the heads present
    postprocess: PostProcessOverrides = field(default_factory=PostProcessOverrides)


def default_postprocess(config) -> dict:
    """The post-processing that matches the heads a PRN has: the foreground branch when there is one, PredBbox
    when there is a box branch; stuff area 4096 at 640x480."""
    return {"foreground_source": "foreground" if config.foreground_head else "semantic",
            "use_pred_bbox": bool(config.box_head),
            # Panoptic-DeepLab's COCO stuff area, scaled with the image area like MS-PanopticFPN's fusion: noise
            # specks of a class (e.g. where the base left void) must not become segments of their own
            "stuff_area": 4096, "stuff_area_reference": (480, 640)}


def make_prn_val_fn(val_path: str | os.PathLike, base_path: str | os.PathLike | None, limit: int,
                    render_config, post_config, categories, panels: int = 0) -> Callable:
    """``evaluate_fn(model, step) -> {pq, pq_th, pq_st, base_pq, ...}`` (percentages): refine the (first
    ``limit``) val base predictions and evaluate them against the val GT. Without ``base_path`` the base is the
    val GT corrupted at the default strength with seed 0 (written once to a temporary folder). ``panels``: as
    in :func:`make_val_fn` (image | base | refined | GT)."""
    from .data import default_images_dir
    from .evaluate import evaluate
    from .panoptic import PanopticSet, PanopticWriter, load_set, set_paths
    from .predictors import Refiner
    from .refine import category_translation, prepare_item
    from .refine_data import pair_with_images
    from .segment import list_images

    gt = load_set(val_path)
    images_dir = default_images_dir(gt.json_path)
    if images_dir is None:
        raise fail(gt.json_path, "cannot tell where the val images are", "use a prn synth dataset root or COCO layout")
    keep = gt.annotations[: limit or None]
    keep_ids = {a["image_id"] for a in keep}
    infos = gt.images_by_id
    subset = PanopticSet(gt.json_path, gt.png_dir, gt.categories, [infos[a["image_id"]] for a in keep], keep)
    holder = tempfile.TemporaryDirectory(prefix="prn-val-base-")
    if base_path is None:
        from .perturb import write_corrupted_set

        write_corrupted_set(subset, holder.name, seed=0, overwrite=True)
        base_path = holder.name
    base = load_set(base_path, need_categories=False)
    base = PanopticSet(base.json_path, base.png_dir, base.categories, base.images,
                       [a for a in base.annotations if a["image_id"] in keep_ids])
    translation = category_translation(base, categories, None)
    pairs = pair_with_images(base, list_images([images_dir]))
    base_result = _percentages(evaluate(subset, [base], workers=0).results[0].groups, prefix="base_")

    def evaluate_fn(model, step: int) -> dict:
        _ = holder  # keep the temporary base alive as long as the function
        refiner = Refiner.from_model(model, categories, render_config, post_config)
        with tempfile.TemporaryDirectory(prefix="prn-val-") as tmp:
            json_path, png_dir = set_paths(tmp)
            with PanopticWriter(json_path, png_dir, categories) as writer:
                for item in pairs:
                    prep = prepare_item(refiner, item, base, translation)
                    pred, = refiner.predict_prepared([prep["inputs"]],
                                                     bases=[(prep["base_ids"], prep["base_segments"])])
                    writer.add({**item.image, "height": int(pred.ids.shape[0]), "width": int(pred.ids.shape[1])},
                               pred.ids, pred.segments, file_name=item.annotation["file_name"])
            g = evaluate(subset, [tmp], workers=0).results[0].groups
            drawn = _panels(subset, [("base", base), ("refined", tmp)], images_dir, panels)
        return {**_percentages(g), **base_result, "val_images": len(keep), **drawn}

    return evaluate_fn


def train_prn(data: str | os.PathLike, train_cfg, options: PRNTrainingOptions = PRNTrainingOptions(), *,
              base: str | os.PathLike | None = None, val: str | os.PathLike | None = None,
              val_base: str | os.PathLike | None = None, progress=None, overwrite: bool = False) -> "TrainSummary":
    """Train PRN on (image, base, GT) triplets of the panoptic set ``data``; ``base`` is an optional real base
    prediction set on the training images (mixed with corrupted GT by ``options.base_mix``)."""
    from .engine import train
    from .models.categories import CategoryMap
    from .models.prn.model import build_model
    from .models.prn.postprocess import missing_network_parts
    from .models.prn.render import RenderConfig
    from .panoptic import load_set
    from .refine_data import RefineDataOptions, RefinementTrainingSet, collate_refine

    config = prn_model_config(options.arch, options.config_file, **options.switches.given())
    try:
        post_config = options.postprocess.apply(default_postprocess(config))
    except ValueError as exc:
        raise UsageError(f"post-processing options: {exc}") from None
    for need in missing_network_parts(post_config, config.to_dict()):
        network_fix = {"foreground_head": "leave out --no-foreground-head", "box_head": "add --box-head"}
        raise UsageError(f"{need.flag} needs a part the configured PRN lacks ({need.lacking}); {need.fix}, or "
                         f"{network_fix.get(need.field, f'set {need.field} in --config')}")
    render_config = RenderConfig(offset_scale=config.base_offset_scale)
    gt = load_set(data)
    categories = gt.categories
    category_map = CategoryMap.from_categories(categories)
    data_options = RefineDataOptions(crop=options.crop, scale_range=tuple(options.scale_range),
                                     base_mix=options.base_mix, strength_range=tuple(options.strength_range),
                                     base_instance_dropout=options.base_instance_dropout,
                                     disagreement_weight=options.disagreement_weight,
                                     thing_crops=THING_CROPS_PER_SAMPLE if config.classifier_channels else 0,
                                     thing_crop_size=config.classifier_crop_size,
                                     thing_crop_background=config.classifier_background,
                                     thing_crop_background_examples=config.classifier_background_examples,
                                     render=render_config)
    dataset = RefinementTrainingSet(gt, base=base, category_map=category_map, options=data_options)
    if base is not None and dataset.with_base == 0:
        raise fail(base, "no base prediction shares an image_id with the training set",
                   "predict the base on the training images (prn segment --images-json TRAIN_JSON)")
    check_backbone_weights(options.backbone_weights)
    init_state = None
    if options.init_weights:
        if options.backbone_weights:
            raise UsageError("--init-weights and --backbone-weights both set the backbone; pass one of them")
        init_state = prn_init_state(options.init_weights, config, categories)

    def model_factory():
        if init_state is not None:
            model = build_model(config, categories)
            model.load_state_dict(init_state)
            return model
        return with_backbone_weights(build_model(config, categories), options.backbone_weights)

    evaluate_fn = None
    if val:
        evaluate_fn = make_prn_val_fn(val, val_base, options.val_limit, render_config, post_config, categories,
                                      panels=TENSORBOARD_PANELS if train_cfg.tensorboard else 0)
    ckpt_config = {"model": config.to_dict(), "render": plain_dataclass(render_config),
                   "postprocess": plain_dataclass(post_config)}
    _write_model_config(train_cfg, ckpt_config)
    if overwrite:
        train_cfg = dataclasses.replace(train_cfg, overwrite=True)
    request = training_request(options, data=gt.json_path, base=base, val=val, val_base=val_base)
    return train(model_factory, dataset, train_cfg, kind="prn", model_config=ckpt_config, categories=categories,
                 collate_fn=collate_refine, evaluate_fn=evaluate_fn, progress=progress, request=request,
                 request_may_change=RESUME_MAY_CHANGE, checkpoint_extra={"training_data": _training_data(gt)},
                 defaults=prn_resume_defaults())


def prn_resume_defaults() -> dict:
    """What the options a PRN run may predate meant before they existed: every field at its default (the
    configuration's, the post-processing's, the training options'), for ``engine.train(defaults=...)``."""
    from .models.prn.config import PRNConfig
    from .models.prn.postprocess import PostProcessConfig

    config = {"model": PRNConfig().to_dict(), "postprocess": plain_dataclass(PostProcessConfig())}
    return {"config": json.loads(json.dumps(config)),
            "request": {"training": json.loads(json.dumps(training_request(PRNTrainingOptions()), default=str))}}


def prn_init_state(path: str | os.PathLike, config, categories: Sequence[dict]) -> dict:
    """The network weights of the PRN checkpoint ``path``, checked against the network ``config`` that training
    builds and the training set's ``categories``; every mismatch is one line naming the file."""
    import torch

    from .checkpoint import load_checkpoint
    from .models.prn.model import build_model

    ckpt = load_checkpoint(path, kind="prn")
    theirs = [(int(c["id"]), bool(c.get("isthing"))) for c in ckpt["categories"]]
    ours = [(int(c["id"]), bool(c.get("isthing"))) for c in categories]
    if sorted(theirs) != sorted(ours):
        raise fail(path, "checkpoint's categories differ from the training set's",
                   "fine-tune a PRN trained on the same categories, or train from --backbone-weights")
    state = dict(ckpt["state_dict"])
    reference = build_model(config, categories).state_dict()
    # A PRN without a full-resolution refiner fine-tunes into one: the refiner's output starts at zero, so the
    # network starts as the checkpoint's
    # (so does one without a boundary refiner: its logit starts as the base's thing mask, which the re-cut keeps)
    # (and one without a thing classifier: the predictor relabels nothing until it is trained)
    for module in ("full_resolution.", "boundary.", "classifier."):
        if not any(k.startswith(module) for k in state):
            state.update({k: v for k, v in reference.items() if k.startswith(module)})
    # (and a thing classifier without a "no thing" class gains one: its logit starts at 0, below a sure thing's)
    for name in ("classifier.read_out.weight", "classifier.read_out.bias"):
        if name in state and name in reference and state[name].shape[0] + 1 == reference[name].shape[0]:
            state[name] = torch.cat([state[name], torch.zeros_like(reference[name][-1:])])
    differ = sorted(k for k in set(reference) | set(state)
                    if k not in reference or k not in state or tuple(reference[k].shape) != tuple(state[k].shape))
    if differ:
        raise fail(path, f"checkpoint's network differs from the one these options build (first: {differ[0]})",
                   "pass the --arch, --config and switch flags the checkpoint was trained with "
                   "(prn info shows them)")
    return state


def plain_dataclass(obj) -> dict:
    import dataclasses

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(obj).items()}
