"""``prn refine``: PRN on any base panoptic segmentation -> the refined set, and what changed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..options import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE
from ._common import (RESUME_HINT, BaseSnapConfidence, BatchSize, BoundaryConfidence, BoundaryMinArea,
                      BoundaryMinCoverage, BoundaryMinGain, BoundaryRadius, BoxIouThreshold, CenterThreshold,
                      ClassifierConfidence, ClassifierJoinShare, ClassifierRemoveConfidence, ClassifierSmallArea,
                      ClassifierSmallConfidence, ClassifierSplitConfidence, Device, DeviceOpt, ForegroundSourceOpt,
                      ForegroundThreshold, Id2Label, Images, ImagesJson, JsonOut, KeepBaseThingClass, LabelDivisor,
                      LabelMapOpt, MaxSize, MinJoinContact, MinSize, NmsKernel, Out, Overwrite, PostStuffArea,
                      ReclaimOtherClasses, RestoreBaseSegments, Resume, Runtime, Threads, TopK, UsePredBbox, VoidLabel,
                      VoidThingConfidence, VoidThingMinArea, Weights, command, post_overrides)


def register(app: typer.Typer) -> None:
    command(app, "refine", resume_hint=RESUME_HINT)(refine_command)


def refine_command(
    base: Annotated[Path, typer.Option("--base", "-b", metavar="SET", help="Base panoptic set from any model "
                                       "(folder with panoptic.json + panoptic/, or a JSON whose PNG folder is "
                                       "beside it), or with --base-format another framework's prediction files.")],
    images: Images,
    out: Out,
    weights: Weights = None,
    device: DeviceOpt = Device.auto,
    batch_size: BatchSize = 1,
    min_size: MinSize = DEFAULT_MIN_SIZE,
    max_size: MaxSize = DEFAULT_MAX_SIZE,
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
    category_map: Annotated[Optional[Path], typer.Option("--category-map", metavar="FILE", help="JSON "
                                                         "{\"<base id>\": <checkpoint id>} when the base's "
                                                         "categories differ from the checkpoint's.")] = None,
    resume: Resume = False,
    base_format: Annotated[str, typer.Option("--base-format", metavar="FORMAT", help="coco, or a format of prn "
                                             "convert (hf, detectron2, mmdet, 2ch, divisor, cityscapes), converted "
                                             "in memory.")] = "coco",
    categories: Annotated[Optional[Path], typer.Option("--categories", metavar="CATS", help="With --base-format: "
                                                       "the categories the base's labels name (default: the "
                                                       "checkpoint's).")] = None,
    images_json: ImagesJson = None,
    id2label: Id2Label = None,
    label_map: LabelMapOpt = None,
    label_divisor: LabelDivisor = 1000,
    void: VoidLabel = None,
    overwrite: Overwrite = False,
    threads: Threads = None,
    runtime: Runtime = "torch",
    json_out: JsonOut = None,
) -> None:
    """Refine any model's panoptic segmentation with PRN, and report what changed.

    Unreadable base images are reported and skipped (exit code 3 if any were). With --base-format, the base is
    another framework's saved predictions, converted in memory as prn convert --from does.

    Example: prn refine --base base/ --images data/images/val --out refined/
    """
    from ..console import emit_json, error_line, human, progress, say
    from ..errors import EXIT_INVALID_INPUT
    from ..runtime import check_device
    from ._common import check_file, check_set_output, check_weights, shipped_or
    from .convert import base_convert_options

    from ..options import ProcessingSize

    processing_size = ProcessingSize(min_size=min_size, max_size=max_size)
    overrides = post_overrides(foreground_source=foreground_source, use_pred_bbox=use_pred_bbox,
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
    check_device(device.value)
    from ..onnx_runtime import check_runtime

    check_runtime(runtime, weights, device.value)
    if runtime == "onnxruntime":
        check_file(weights, "ONNX file", "write it with prn export CKPT --format onnx --out FILE")
    else:
        check_weights(weights, "prn")
    check_file(category_map, "category map", "pass a JSON {\"<base id>\": <checkpoint id>}")
    check_set_output(out, overwrite, resume=resume)
    base_convert = base_convert_options(base_format, categories=categories, images_json=images_json,
                                        id2label=id2label, label_map=label_map, label_divisor=label_divisor, void=void)
    weights = shipped_or(weights, "prn")

    from ..refine import RefineOptions, refine
    from ..reporting import show_changes
    from ..runtime import set_threads

    set_threads(threads)
    options = RefineOptions(device=device.value, batch_size=batch_size, overrides=overrides,
                            processing_size=processing_size,
                            category_map=str(category_map) if category_map else None, base_format=base_format,
                            base_categories=str(categories) if categories else None, base_convert=base_convert,
                            runtime=runtime)
    with progress("refining", enabled=os.environ.get("RANK", "0") == "0") as update:  # torchrun: rank 0 only
        result = refine(base, images, weights, out, options=options, overwrite=overwrite, resume=resume,
                        progress=update, on_failure=lambda f, why: error_line(f"skipped {f}: {why}"))
    if not result.main:   # another torchrun rank: rank 0 reports the run
        raise typer.Exit(EXIT_INVALID_INPUT if result.failed else 0)
    show_changes(result.changes, result.written + result.adopted, human(json_out))
    say(f"wrote {result.written} image(s)" + (f" (+{result.adopted} from the interrupted run)" if result.adopted
                                               else "") + f" to {result.json_path}", json_out)
    emit_json({"json": str(result.json_path), "written": result.written, "adopted": result.adopted,
               "failed": [{"file": f, "error": e} for f, e in result.failed], "changes": result.changes,
               "per_image": result.per_image}, json_out)
    if result.failed:
        error_line(f"{len(result.failed)} base image(s) could not be used and were skipped (listed above)")
        raise typer.Exit(EXIT_INVALID_INPUT)

