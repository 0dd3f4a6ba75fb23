"""``prn ablate``: the paper's Table 1 as a command, several seeds per row."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import (Amp, AmpOpt, BackboneWeights, BaseMix, BaseSnapConfidence, BoundaryConfidence, BoundaryMinArea,
                      BoundaryMinCoverage, BoundaryMinGain, BoundaryRadius, BoxIouThreshold, CenterThreshold,
                      ClassifierConfidence, ClassifierJoinShare, ClassifierRemoveConfidence, ClassifierSmallArea,
                      ClassifierSmallConfidence, ClassifierSplitConfidence, ConfigFile, Crop, Device, DeviceOpt,
                      ForegroundThreshold, Iters, JsonOut, KeepBaseThingClass, Lr, MinJoinContact, NmsKernel,
                      NumWorkers, PRNArch, PRNArchOpt, PostStuffArea, ReclaimOtherClasses, RestoreBaseSegments, Seed,
                      StrengthRange, Threads, TopK, TrainBatchSize, ValLimit, VoidThingConfidence, VoidThingMinArea,
                      WarmupIters, command, post_overrides)


def register(app: typer.Typer) -> None:
    command(app, "ablate", resume_hint="rerun the same command to resume it row by row")(ablate_command)


def ablate_command(
    data: Annotated[Path, typer.Option("--data", metavar="SET", help="Training GT: a panoptic JSON or a prn synth "
                                       "root.")],
    val: Annotated[Path, typer.Option("--val", metavar="SET", help="Val GT the rows are evaluated on (its images "
                                      "found from the COCO / prn synth layout, or --val-images).")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Run folder: ablation.json, rows/<row>/"
                                      "seed-<s>/ (training run, refined set, result.json), table.md, "
                                      "table.json.")],
    val_base: Annotated[Optional[Path], typer.Option("--val-base", metavar="SET", help="Base predictions on the val "
                                                     "images (any model's panoptic set); or use --base-weights.")]
    = None,
    base_weights: Annotated[Optional[Path], typer.Option("--base-weights", metavar="FILE", help="Base-model "
                                                         "checkpoint (prn train base) that segments the val images "
                                                         "once into RUN/base_val.")] = None,
    base: Annotated[Optional[Path], typer.Option("--base", metavar="SET", help="Base predictions on the training "
                                                 "images, mixed with corrupted GT by --base-mix.")] = None,
    base_mix: BaseMix = 0.5,
    strength_range: StrengthRange = "0.3,0.8",
    val_images: Annotated[Optional[Path], typer.Option("--val-images", metavar="DIR", help="Folder of the val "
                                                       "images.")] = None,
    val_limit: ValLimit = 0,
    rows: Annotated[Optional[str], typer.Option("--rows", metavar="ROWS", help="Comma-separated rows to run, by "
                                                "number (1-8) or name (base, fgsem, fg, fg-ccdec, fg-ccenc, "
                                                "fg-ccdec-ccenc, fg-bbox, fg-ccdec-ccenc-bbox); the base row always "
                                                "runs. Default: all.")] = None,
    extensions_from: Annotated[Optional[Path], typer.Option("--extensions-from", metavar="FILE", help="A trained PRN "
                                                            "whose boundary refiner and thing classifier (and their "
                                                            "post-processing) every PRN row borrows when it refines; "
                                                            "changing it re-refines without training.")] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, metavar="N", help="Train every PRN row with N seeds "
                                       "(--seed, --seed+1, ...); the table gives mean ± std. Raising N reuses the "
                                       "seeds already done.")] = 1,
    arch: PRNArchOpt = PRNArch.tiny,
    config: ConfigFile = None,
    backbone_weights: BackboneWeights = None,
    iters: Iters = 2000,
    batch_size: TrainBatchSize = 8,
    lr: Lr = 1e-3,
    warmup_iters: WarmupIters = 100,
    crop: Crop = 256,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=0, metavar="N", help="Steps between "
                                                  "checkpoints (an interrupted row resumes from the last "
                                                  "one).")] = 200,
    seed: Seed = 0,
    device: DeviceOpt = Device.auto,
    amp: AmpOpt = Amp.off,
    num_workers: NumWorkers = 2,
    threads: Threads = None,
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
    refine_batch_size: Annotated[int, typer.Option("--refine-batch-size", min=1, metavar="N", help="Images per PRN "
                                                   "forward pass when refining.")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar="", help="Start again: remove an earlier "
                                            "ablation in --out (needed when its options differ; without it a rerun "
                                            "resumes).")] = False,
    json_out: JsonOut = None,
) -> None:
    """Reproduce the paper's Table 1: train PRN per row and seed, refine the val base, evaluate, tabulate.

    Writes RUN/table.md and RUN/table.json (PQ / PQth / PQst per row, mean ± std over seeds, the gain over the
    base, the paper's figures). Rerun the same command to resume row by row. Several GPUs: torchrun
    --nproc_per_node N -m prn_cli ablate ... (rank 0 refines and evaluates).

    Example: prn ablate --data data/annotations/panoptic_train.json --val data/annotations/panoptic_val.json \
        --val-base base/ --out runs/table1 --rows fg --iters 20
    """
    from ..engine import TrainConfig
    from ..errors import UsageError
    from ..options import parse_range
    from ..runtime import check_device
    from ..train import PRNTrainingOptions
    from ._common import check_file, check_out_dir, check_weights

    postprocess = post_overrides(center_threshold=center_threshold, nms_kernel=nms_kernel, top_k=top_k,
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
    strength = parse_range(strength_range, "--strength-range")
    check_device(device.value)
    check_weights(base_weights, "base")
    check_weights(extensions_from, "prn")
    check_file(config, "model config JSON", "pass a JSON of PRNConfig fields")
    check_out_dir(out)

    from ..ablate import AblationOptions, ablation_table, console_progress, run_ablation
    from ..console import emit_json, human, say

    try:
        schedule = TrainConfig(out_dir="", iters=iters, batch_size=batch_size, lr=lr, warmup_iters=warmup_iters,
                               checkpoint_every=checkpoint_every, amp=amp.value, num_workers=num_workers, seed=seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    training = PRNTrainingOptions(arch=arch.value, config_file=str(config) if config else None, crop=crop,
                                  base_mix=base_mix, strength_range=strength,
                                  backbone_weights=str(backbone_weights) if backbone_weights else None)
    options = AblationOptions(
        data=str(data), val=str(val), val_base=str(val_base) if val_base else None,
        base_weights=str(base_weights) if base_weights else None, base=str(base) if base else None,
        val_images=str(val_images) if val_images else None, val_limit=val_limit, training=training,
        schedule=schedule, postprocess=postprocess, seeds=seeds, rows=rows, device=device.value, threads=threads,
        refine_batch_size=refine_batch_size, extensions_from=str(extensions_from) if extensions_from else None)
    with console_progress() as update:
        result = run_ablation(out, options, update, overwrite=overwrite)
    if not result.main:
        return
    human(json_out).print(ablation_table(result.table))
    say(f"table: {result.table_md} and {result.table_json}", json_out)
    emit_json(result.table, json_out)
