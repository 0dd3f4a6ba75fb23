"""``prn refine``: PRN on any base panoptic segmentation -> the refined set, and what changed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import (BaseSnapConfidence, BatchSize, BoxIouThreshold, CenterThreshold, Device, DeviceOpt, ForegroundSourceOpt,
                      ForegroundThreshold, Images, JsonOut, NmsKernel, Out, Overwrite, PostStuffArea, RestoreBaseSegments,
                      Resume, Runtime, Threads, TopK, UsePredBbox, Weights, command, post_overrides)


def register(app: typer.Typer) -> None:
    command(app, "refine", resume_hint="rerun with --resume to finish the images left")(refine_command)


def refine_command(
    base: Annotated[Path, typer.Option("--base", "-b", metavar="SET", help="Base panoptic set from any model "
                                       "(folder with panoptic.json + panoptic/, or a JSON whose PNG folder is "
                                       "beside it).")],
    images: Images,
    out: Out,
    weights: Weights = None,
    device: DeviceOpt = Device.auto,
    batch_size: BatchSize = 1,
    foreground_source: ForegroundSourceOpt = None,
    use_pred_bbox: UsePredBbox = None,
    center_threshold: CenterThreshold = None,
    nms_kernel: NmsKernel = None,
    top_k: TopK = None,
    foreground_threshold: ForegroundThreshold = None,
    stuff_area: PostStuffArea = None,
    box_iou_threshold: BoxIouThreshold = None,
    restore_base_segments: RestoreBaseSegments = None,
    base_snap_confidence: BaseSnapConfidence = None,
    category_map: Annotated[Optional[Path], typer.Option("--category-map", metavar="FILE", help="JSON "
                                                         "{\"<base id>\": <checkpoint id>} when the base's "
                                                         "categories differ from the checkpoint's.")] = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    threads: Threads = None,
    runtime: Runtime = "torch",
    json_out: JsonOut = None,
) -> None:
    """Refine any model's panoptic segmentation with PRN, and report what changed.

    Unreadable base images are reported and skipped (exit code 3 if any were).

    Example: prn refine --base base/ --images data/images/val --out refined/
    """
    from ..console import emit_json, error_line, human, progress, say
    from ..errors import EXIT_INVALID_INPUT
    from ..runtime import check_device
    from ._common import check_file, check_set_output, check_weights, shipped_or

    overrides = post_overrides(foreground_source=foreground_source, use_pred_bbox=use_pred_bbox,
                               center_threshold=center_threshold, nms_kernel=nms_kernel, top_k=top_k,
                               foreground_threshold=foreground_threshold, stuff_area=stuff_area,
                               box_iou_threshold=box_iou_threshold,
                               restore_base_segments=restore_base_segments,
                               base_snap_confidence=base_snap_confidence)
    check_device(device.value)
    from ..onnx_runtime import check_runtime

    check_runtime(runtime, weights, device.value)
    if runtime == "onnxruntime":
        check_file(weights, "ONNX file", "write it with prn export CKPT --format onnx --out FILE")
    else:
        check_weights(weights, "prn")
    check_file(category_map, "category map", "pass a JSON {\"<base id>\": <checkpoint id>}")
    check_set_output(out, overwrite, resume=resume)
    weights = shipped_or(weights, "prn")

    from ..refine import RefineOptions, refine
    from ..reporting import show_changes
    from ..runtime import set_threads

    set_threads(threads)
    options = RefineOptions(device=device.value, batch_size=batch_size, overrides=overrides,
                            category_map=str(category_map) if category_map else None, runtime=runtime)
    with progress("refining", enabled=os.environ.get("RANK", "0") == "0") as update:  # torchrun: rank 0 only
        result = refine(base, images, weights, out, options=options, overwrite=overwrite, resume=resume,
                        progress=update, on_failure=lambda f, why: error_line(f"skipped {f}: {why}"))
    if not result.main:   # another torchrun rank: rank 0 reports the run
        raise typer.Exit(EXIT_INVALID_INPUT if result.failed else 0)
    show_changes(result.changes, result.written, human(json_out))
    say(f"wrote {result.written} image(s) to {result.json_path}", json_out)
    emit_json({"json": str(result.json_path), "written": result.written,
               "failed": [{"file": f, "error": e} for f, e in result.failed], "changes": result.changes,
               "per_image": result.per_image}, json_out)
    if result.failed:
        error_line(f"{len(result.failed)} base image(s) could not be used and were skipped (listed above)")
        raise typer.Exit(EXIT_INVALID_INPUT)
