"""``prn segment``: MS-PanopticFPN on images -> a COCO panoptic set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..options import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE
from ._common import (RESUME_HINT, BatchSize, Device, DeviceOpt, Images, JsonOut, MaxSize, MinSize, Out, Overwrite,
                      Resume, Runtime, Threads, Weights, command)


def register(app: typer.Typer) -> None:
    command(app, "segment", resume_hint=RESUME_HINT)(segment_command)


def segment_command(
    images: Images,
    out: Out,
    weights: Weights = None,
    device: DeviceOpt = Device.auto,
    batch_size: BatchSize = 1,
    min_size: MinSize = DEFAULT_MIN_SIZE,
    max_size: MaxSize = DEFAULT_MAX_SIZE,
    images_json: Annotated[Optional[Path], typer.Option("--images-json", metavar="FILE", help="COCO JSON whose "
                                                        "images records give the image ids (e.g. the ground truth, "
                                                        "for prn eval).")] = None,
    score_threshold: Annotated[Optional[float], typer.Option("--score-threshold", metavar="X",
                                                             help="Detection score threshold.")] = None,
    nms_iou: Annotated[Optional[float], typer.Option("--nms-iou", metavar="X", help="Class-aware NMS IoU.")] = None,
    instance_score_threshold: Annotated[Optional[float], typer.Option(
        "--instance-score-threshold", metavar="X", help="Fusion: keep instances scoring at least this.")] = None,
    overlap_threshold: Annotated[Optional[float], typer.Option("--overlap-threshold", metavar="X", help="Fusion: "
                                                               "drop an instance more than this covered.")] = None,
    stuff_area: Annotated[Optional[int], typer.Option("--stuff-area", metavar="PX", help="Fusion: minimum stuff "
                                                      "area at 640x480 (scaled with the image area).")] = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    threads: Threads = None,
    runtime: Runtime = "torch",
    json_out: JsonOut = None,
) -> None:
    """Segment images with MS-PanopticFPN into a COCO panoptic set.

    Writes DIR/panoptic.json + DIR/panoptic/ for --out DIR. Unreadable images are reported and skipped; the exit
    code is 3 if any were.

    Example: prn segment --images data/images/val --out base/ --images-json data/annotations/panoptic_val.json
    """
    from ..console import emit_json, error_line, progress, say
    from ..errors import EXIT_INVALID_INPUT
    from ..options import ProcessingSize, SegmentOverrides
    from ..runtime import check_device
    from ._common import check_file, check_set_output, check_weights, shipped_or

    processing_size = ProcessingSize(min_size=min_size, max_size=max_size)
    overrides = SegmentOverrides(score_threshold=score_threshold, nms_iou=nms_iou,
                                 instance_score_threshold=instance_score_threshold,
                                 overlap_threshold=overlap_threshold, stuff_area=stuff_area)
    check_device(device.value)
    from ..onnx_runtime import check_runtime

    check_runtime(runtime, weights, device.value)
    if runtime == "onnxruntime":
        check_file(weights, "ONNX file", "write it with prn export CKPT --format onnx --out FILE")
    else:
        check_weights(weights, "base")
    check_file(images_json, "images JSON", "pass the dataset JSON whose 'images' list these files")
    check_set_output(out, overwrite, resume=resume)
    weights = shipped_or(weights, "base")

    from ..runtime import set_threads
    from ..segment import SegmentOptions, segment

    set_threads(threads)
    options = SegmentOptions(device=device.value, batch_size=batch_size, processing_size=processing_size,
                             images_json=str(images_json) if images_json else None, overrides=overrides,
                             runtime=runtime)
    with progress("segmenting", enabled=os.environ.get("RANK", "0") == "0") as update:  # torchrun: rank 0 only
        result = segment(images, weights, out, options=options, resume=resume, overwrite=overwrite,
                         progress=update, on_failure=lambda f, why: error_line(f"skipped {f}: {why}"))
    if not result.main:   # another torchrun rank: rank 0 reports the run
        raise typer.Exit(EXIT_INVALID_INPUT if result.failed else 0)
    say(f"wrote {result.written} image(s)" + (f" (+{result.adopted} from the interrupted run)" if result.adopted
                                               else "") + f" to {result.json_path}", json_out)
    emit_json({"json": str(result.json_path), "written": result.written, "adopted": result.adopted,
               "failed": [{"file": f, "error": e} for f, e in result.failed]}, json_out)
    if result.failed:
        error_line(f"{len(result.failed)} image(s) could not be read and were skipped (listed above)")
        raise typer.Exit(EXIT_INVALID_INPUT)
