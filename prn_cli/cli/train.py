"""``prn train base|prn``: train MS-PanopticFPN or PRN with the shared engine (torchrun for several GPUs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import (CONTEXT, RESUME_HINT, Amp, AmpOpt, BackboneWeights, BaseArch, BaseMix, BaseSnapConfidence,
                      BoundaryConfidence, BoundaryMinArea, BoundaryMinCoverage, BoundaryMinGain, BoundaryRadius,
                      BoxIouThreshold, CenterThreshold, CheckpointEvery, ClassifierConfidence, ClassifierJoinShare,
                      ClassifierRemoveConfidence, ClassifierSmallArea, ClassifierSmallConfidence,
                      ClassifierSplitConfidence, ConfigFile, Crop, Device, DeviceOpt, ForegroundSourceOpt,
                      ForegroundThreshold, Iters, JsonOut, KeepBaseThingClass, Lr, MinJoinContact, NmsKernel,
                      NumWorkers, PRNArch, PRNArchOpt, PostStuffArea, ReclaimOtherClasses, RestoreBaseSegments, Seed,
                      StrengthRange, Threads, TopK, TrainBatchSize, UsePredBbox, ValEvery, ValLimit,
                      VoidThingConfidence, VoidThingMinArea, WarmupIters, command, post_overrides)

train_app = typer.Typer(help="Train a network: the base model (MS-PanopticFPN) or the refiner (PRN).",
                        no_args_is_help=True, context_settings=CONTEXT)

RunDir = Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Run folder: checkpoints (last.pt), "
                                      "metrics.jsonl, model_final.pt.")]
TrainResume = Annotated[bool, typer.Option("--resume", metavar="", help="Continue the run in --out exactly where "
                                           "it stopped.")]
TrainOverwrite = Annotated[bool, typer.Option("--overwrite", metavar="", help="Start again: remove an earlier "
                                              "run's checkpoints and metrics in --out.")]


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
    command(train_app, "base", resume_hint=RESUME_HINT)(train_base_command)
    command(train_app, "prn", resume_hint=RESUME_HINT)(train_prn_command)


TensorBoardOpt = Annotated[bool, typer.Option("--tensorboard", metavar="", help="Also write TensorBoard events "
                                              "to OUT/tensorboard: losses, learning rate, val PQ and val panels "
                                              "(needs pip install \"prn[tensorboard]\").")]


def _check_tensorboard(wanted: bool) -> None:
    from ..errors import UsageError
    from ..tensorboard_events import INSTALL_HINT, tensorboard_available

    if wanted and not tensorboard_available():
        raise UsageError(f"--tensorboard needs the tensorboard package; {INSTALL_HINT}, or leave out --tensorboard")


def _train_config(out, iters, batch_size, lr, warmup_iters, checkpoint_every, val_every, device, amp, num_workers,
                  seed, resume, tensorboard=False, channels_last="cuda"):
    from ..engine import TrainConfig
    from ..errors import UsageError

    try:
        return TrainConfig(out_dir=str(out), iters=iters, batch_size=batch_size, lr=lr, warmup_iters=warmup_iters,
                           checkpoint_every=checkpoint_every, val_every=val_every, device=device.value,
                           amp=amp.value, num_workers=num_workers, seed=seed, resume=resume,
                           channels_last=channels_last, tensorboard=tensorboard)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _preflight(out: Path, resume: bool, overwrite: bool, device: Device, checks=()) -> None:
    """Checks that need no torch: options that exclude each other, input files, the run folder."""
    from ..errors import UsageError
    from ..runtime import check_device
    from ..checkpoint import check_run_dir
    from ._common import check_out_dir

    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other: continue the run, or start it again")
    check_device(device.value)
    for check in checks:
        check()
    check_out_dir(out)
    check_run_dir(out, resume=resume, overwrite=overwrite)


def _report(summary, json_out: str | None) -> None:
    from ..console import emit_json, say

    if summary is None or not summary.main:
        return
    say(f"trained {summary.steps} steps; final weights: {summary.final_checkpoint}", json_out)
    if summary.val:
        say("val: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in summary.val.items()), json_out)
    emit_json({"steps": summary.steps, "start_step": summary.start_step, "seconds": round(summary.seconds, 3),
               "final_checkpoint": str(summary.final_checkpoint), "last_checkpoint": str(summary.last_checkpoint),
               "metrics": str(summary.metrics), "losses": summary.losses, "val": summary.val,
               "world_size": summary.world_size, "device": summary.device}, json_out)


def train_base_command(
    data: Annotated[Path, typer.Option("--data", metavar="SET", help="Training set: a panoptic JSON or a prn synth "
                                       "root (images found from the JSON's images records).")],
    out: RunDir,
    val: Annotated[Optional[Path], typer.Option("--val", metavar="SET", help="Validation set for periodic "
                                                "PQ.")] = None,
    arch: Annotated[BaseArch, typer.Option("--arch", metavar="tiny|r18|r34|r50|r101", help="Backbone preset (tiny "
                                           "= ResNet-18 at 1/4 width).")] = BaseArch.tiny,
    config: ConfigFile = None,
    iters: Iters = 2000,
    batch_size: TrainBatchSize = 8,
    lr: Lr = 1e-3,
    warmup_iters: WarmupIters = 100,
    crop: Crop = 256,
    backbone_weights: BackboneWeights = None,
    checkpoint_every: CheckpointEvery = 200,
    val_every: ValEvery = 0,
    val_limit: ValLimit = 50,
    device: DeviceOpt = Device.auto,
    amp: AmpOpt = Amp.off,
    num_workers: NumWorkers = 2,
    seed: Seed = 0,
    resume: TrainResume = False,
    overwrite: TrainOverwrite = False,
    threads: Threads = None,
    tensorboard: TensorBoardOpt = False,
    json_out: JsonOut = None,
) -> None:
    """Train MS-PanopticFPN, the base network.

    Several GPUs or processes: torchrun --nproc_per_node N -m prn_cli train base ...

    Example: prn train base --data data/annotations/panoptic_train.json --out runs/base --iters 20
    """
    from ._common import check_file

    _check_tensorboard(tensorboard)
    _preflight(out, resume, overwrite, device, checks=[
        lambda: check_file(config, "model config JSON", "pass a JSON of MSPanopticFPNConfig fields"),
        lambda: check_file(backbone_weights, "backbone weights file", "pass a local torchvision ResNet state_dict "
                           "or a prn base checkpoint (nothing is downloaded)")])
    train_cfg = _train_config(out, iters, batch_size, lr, warmup_iters, checkpoint_every, val_every, device, amp,
                              num_workers, seed, resume, tensorboard)

    from ..console import progress, training_progress
    from ..runtime import set_threads
    from ..train import BaseTrainingOptions, train_base

    set_threads(threads)
    options = BaseTrainingOptions(arch=arch.value, config_file=str(config) if config else None, crop=crop,
                                  backbone_weights=str(backbone_weights) if backbone_weights else None,
                                  val_limit=val_limit)
    with progress("train base", log_lines=True) as update:
        summary = train_base(data, train_cfg, options, val=val, progress=training_progress(update),
                             overwrite=overwrite)
    _report(summary, json_out)


def train_prn_command(
    data: Annotated[Path, typer.Option("--data", metavar="SET", help="Training GT: a panoptic JSON or a prn synth "
                                       "root.")],
    out: RunDir,
    base: Annotated[Optional[Path], typer.Option("--base", metavar="SET", help="Base predictions on the training "
                                                 "images (e.g. prn segment output), mixed with corrupted GT by "
                                                 "--base-mix.")] = None,
    base_mix: BaseMix = 0.5,
    strength_range: StrengthRange = "0.3,0.8",
    scale_range: Annotated[str, typer.Option("--scale-range", metavar="LOW,HIGH", help="Scale jitter of the "
                                             "training samples before the crop (1,1: none).")] = "0.75,1.25",
    base_instance_dropout: Annotated[float, typer.Option("--base-instance-dropout", min=0.0, max=1.0, metavar="X",
                                                         help="Share of training samples whose base instance maps "
                                                         "(centres, offsets, boxes, boundaries) are blanked, so "
                                                         "that PRN must find things in the image.")] = 0.0,
    disagreement_weight: Annotated[float, typer.Option("--disagreement-weight", min=1.0, metavar="W",
                                                       help="Loss weight of the pixels where the base's class or "
                                                       "foreground differs from the GT (1 = like every other "
                                                       "pixel), so that copying the base stops being cheap.")] = 1.0,
    val: Annotated[Optional[Path], typer.Option("--val", metavar="SET", help="Validation GT for periodic "
                                                "PQ.")] = None,
    val_base: Annotated[Optional[Path], typer.Option("--val-base", metavar="SET", help="Base predictions on the "
                                                     "val images (default: the val GT corrupted with seed 0).")]
    = None,
    arch: PRNArchOpt = PRNArch.tiny,
    config: ConfigFile = None,
    foreground_head: Annotated[Optional[bool], typer.Option("--foreground-head/--no-foreground-head", metavar="",
                                                            help="Table 1: the foreground branch (default: on).")]
    = None,
    coordconv_decoder: Annotated[Optional[bool], typer.Option("--coordconv-decoder/--no-coordconv-decoder",
                                                              metavar="", help="Table 1: CoordConv in the decoders "
                                                              "and heads.")] = None,
    coordconv_encoder: Annotated[Optional[bool], typer.Option("--coordconv-encoder/--no-coordconv-encoder",
                                                              metavar="", help="Table 1: CoordConv at the encoder "
                                                              "input and ASPP.")] = None,
    box_head: Annotated[Optional[bool], typer.Option("--box-head/--no-box-head", metavar="", help="Table 1: the "
                                                     "per-pixel box branch (PredBbox groups pixels with it).")]
    = None,
    iters: Iters = 2000,
    batch_size: TrainBatchSize = 8,
    lr: Lr = 1e-3,
    warmup_iters: WarmupIters = 100,
    crop: Crop = 256,
    backbone_weights: BackboneWeights = None,
    init_weights: Annotated[Optional[Path], typer.Option("--init-weights", metavar="CKPT",
                                                         help="Start from this PRN checkpoint's network (fine-tune "
                                                         "it, e.g. the shipped one on your data); the --arch, "
                                                         "--config and switch flags must describe its network.")]
    = None,
    checkpoint_every: CheckpointEvery = 200,
    val_every: ValEvery = 0,
    val_limit: ValLimit = 50,
    device: DeviceOpt = Device.auto,
    amp: AmpOpt = Amp.off,
    num_workers: NumWorkers = 2,
    seed: Seed = 0,
    foreground_source: ForegroundSourceOpt = None,
    use_pred_bbox: UsePredBbox = None,
    center_threshold: CenterThreshold = None,
    nms_kernel: NmsKernel = None,
    top_k: TopK = None,
    foreground_threshold: ForegroundThreshold = None,
    stuff_area: PostStuffArea = None,
    box_iou_threshold: BoxIouThreshold = None,
    restore_base_segments: RestoreBaseSegments = None,
    reclaim_other_classes: ReclaimOtherClasses = None,
    min_join_contact: MinJoinContact = None,
    keep_base_thing_class: KeepBaseThingClass = None,
    base_snap_confidence: BaseSnapConfidence = None,
    boundary_radius: BoundaryRadius = None,
    boundary_confidence: BoundaryConfidence = None,
    boundary_min_area: BoundaryMinArea = None,
    boundary_min_gain: BoundaryMinGain = None,
    boundary_min_coverage: BoundaryMinCoverage = None,
    classifier_confidence: ClassifierConfidence = None,
    classifier_small_area: ClassifierSmallArea = None,
    classifier_small_confidence: ClassifierSmallConfidence = None,
    classifier_remove_confidence: ClassifierRemoveConfidence = None,
    classifier_join_share: ClassifierJoinShare = None,
    classifier_split_confidence: ClassifierSplitConfidence = None,
    void_thing_confidence: VoidThingConfidence = None,
    void_thing_min_area: VoidThingMinArea = None,
    resume: TrainResume = False,
    overwrite: TrainOverwrite = False,
    threads: Threads = None,
    tensorboard: TensorBoardOpt = False,
    json_out: JsonOut = None,
) -> None:
    """Train PRN, the refiner, on (image, base, GT) triplets.

    The post-processing options are stored in the checkpoint. Several GPUs: torchrun --nproc_per_node N -m
    prn_cli train prn ...

    Example: prn train prn --data data/annotations/panoptic_train.json --out runs/prn --iters 20
    """
    from ..options import PRNSwitches, parse_range
    from ._common import check_file

    postprocess = post_overrides(foreground_source=foreground_source, use_pred_bbox=use_pred_bbox,
                                 center_threshold=center_threshold, nms_kernel=nms_kernel, top_k=top_k,
                                 foreground_threshold=foreground_threshold, stuff_area=stuff_area,
                                 box_iou_threshold=box_iou_threshold,
                                 restore_base_segments=restore_base_segments,
                                 reclaim_other_classes=reclaim_other_classes,
                                 min_join_contact=min_join_contact, keep_base_thing_class=keep_base_thing_class,
                                 base_snap_confidence=base_snap_confidence,
                                 boundary_radius=boundary_radius,
                                 boundary_confidence=boundary_confidence,
                                 boundary_min_area=boundary_min_area, boundary_min_gain=boundary_min_gain,
                                 classifier_confidence=classifier_confidence,
                                 boundary_min_coverage=boundary_min_coverage,
                                 classifier_small_area=classifier_small_area,
                                 classifier_small_confidence=classifier_small_confidence,
                                 classifier_remove_confidence=classifier_remove_confidence,
                                 classifier_join_share=classifier_join_share,
                                 classifier_split_confidence=classifier_split_confidence,
                                 void_thing_confidence=void_thing_confidence, void_thing_min_area=void_thing_min_area)
    switches = PRNSwitches(foreground_head=foreground_head, coordconv_decoder=coordconv_decoder,
                           coordconv_encoder=coordconv_encoder, box_head=box_head)
    strength = parse_range(strength_range, "--strength-range")
    scales = parse_range(scale_range, "--scale-range", low=0.1, high=10.0)
    _check_tensorboard(tensorboard)
    _preflight(out, resume, overwrite, device, checks=[
        lambda: check_file(config, "model config JSON", "pass a JSON of PRNConfig fields"),
        lambda: check_file(backbone_weights, "backbone weights file", "pass a local torchvision ResNet state_dict "
                           "or a prn base checkpoint (nothing is downloaded)"),
        lambda: check_file(init_weights, "PRN checkpoint", "pass a checkpoint written by prn train prn")])
    train_cfg = _train_config(out, iters, batch_size, lr, warmup_iters, checkpoint_every, val_every, device, amp,
                              num_workers, seed, resume, tensorboard, channels_last="always")

    from ..console import progress, training_progress
    from ..runtime import set_threads
    from ..train import PRNTrainingOptions, train_prn

    set_threads(threads)
    options = PRNTrainingOptions(arch=arch.value, config_file=str(config) if config else None, switches=switches,
                                 crop=crop, scale_range=scales, base_mix=base_mix, strength_range=strength,
                                 base_instance_dropout=base_instance_dropout, disagreement_weight=disagreement_weight,
                                 backbone_weights=str(backbone_weights) if backbone_weights else None,
                                 init_weights=str(init_weights) if init_weights else None,
                                 val_limit=val_limit, postprocess=postprocess)
    with progress("train prn", log_lines=True) as update:
        summary = train_prn(data, train_cfg, options, base=base, val=val, val_base=val_base,
                            progress=training_progress(update), overwrite=overwrite)
    _report(summary, json_out)
