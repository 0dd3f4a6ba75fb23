"""``prn segment``: run MS-PanopticFPN on images and write a COCO panoptic set (PNG + JSON).

Image ids: taken from ``--images-json`` (a COCO JSON whose ``images`` records name the files, e.g. the ground
truth, so that ``prn eval`` pairs predictions with it), else from a numeric file stem (COCO's own naming,
``000000139.jpg`` -> 139), else sequential in sorted file order.

Resume: ``DIR/.segment-progress.jsonl`` starts with what the run was asked (:func:`segment_request`: the
images, weights, ``--images-json``, ``--max-size`` and thresholds), and each finished image appends its record
after its PNG is written. ``--resume`` refuses other inputs or options (naming the option; ``--device`` and
``--batch-size`` may change, and the change is logged), adopts the finished images and does the rest. The set's
JSON is written last, in input order, then the progress file is removed.

Under torchrun the images are shared out over the ranks (:mod:`prn_cli.sharding`): each rank segments its share
through the same loop, with its own progress file, and rank 0 writes the JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import InvalidInputError, fail
from .options import ProcessingSize, SegmentOverrides
from .panoptic import PanopticWriter, read_json, set_paths
from .resume import absolute, check_resume, file_digest

PROGRESS_STEM = ".segment-progress"
PROGRESS_NAME = PROGRESS_STEM + ".jsonl"   # rank 0's (and a single process's); see prn_cli.sharding
#: request keys a resume may change: where it runs and how many images go through the network at once
RESUME_MAY_CHANGE = ("device", "batch_size")


@dataclass
class SegmentOptions:
    device: str = "auto"
    batch_size: int = 1
    #: the size the network runs at (--min-size, --max-size); the PNGs are written at each image's size
    processing_size: ProcessingSize = field(default_factory=ProcessingSize)
    images_json: str | None = None
    #: "torch" runs a checkpoint; "onnxruntime" runs a file written by prn export (prn_cli.onnx_runtime)
    runtime: str = "torch"
    #: thresholds replacing the checkpoint's InferenceConfig values
    overrides: SegmentOverrides = field(default_factory=SegmentOverrides)


@dataclass
class SegmentResult:
    json_path: Path
    written: int
    adopted: int
    failed: list[tuple[str, str]]
    #: False on the ranks other than 0 of a torchrun group (rank 0 reports the run)
    main: bool = True


def list_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files named by ``inputs`` (files, or folders listed non-recursively), sorted, deduplicated."""
    from .data import IMAGE_SUFFIXES, list_image_files

    files = list_image_files(list(inputs))
    if not files:
        raise fail(", ".join(str(i) for i in inputs), "no images found (looked for " + "/".join(IMAGE_SUFFIXES)
                   + ")", "pass image files or a folder of images")
    return files


def assign_image_ids(files: Sequence[Path], images_json: str | None) -> list[dict]:
    """COCO image records (id, file_name, width/height filled later) for ``files``. Two files whose names share a
    stem (``a.jpg`` and ``a.png``, or one name in two folders) would write one PNG: a one-line error."""
    seen: dict[str, Path] = {}
    for f in files:
        other = seen.setdefault(f.stem, f)
        if other != f:
            raise fail(f, f"has the same file stem as {other}, so both would be written to {f.stem}.png",
                       "segment the folders separately (another --out each) or rename one of the images")
    if images_json:
        records = read_json(Path(images_json), what="images JSON").get("images") or []
        by_name = {Path(str(r.get("file_name", ""))).name: r for r in records}
        out = []
        for f in files:
            r = by_name.get(f.name)
            if r is None:
                raise fail(images_json, f"has no image record for {f.name}",
                           "pass the JSON whose 'images' list these files, or leave out --images-json")
            out.append({"id": r["id"], "file_name": f.name})
        return out
    if all(f.stem.isdigit() for f in files) and len({int(f.stem) for f in files}) == len(files):
        return [{"id": int(f.stem), "file_name": f.name} for f in files]
    return [{"id": k, "file_name": f.name} for k, f in enumerate(files, start=1)]


def segment_request(inputs: Sequence[str | os.PathLike], weights: str | os.PathLike,
                    options: SegmentOptions) -> dict:
    """What a segment run is asked (stored in its progress file; a resume must ask the same)."""
    return {"images": sorted(absolute(i) for i in inputs), "weights": absolute(weights), "weights_sha256":
            file_digest(weights), "images_json": absolute(options.images_json),
            "min_size": options.processing_size.min_size, "max_size": options.processing_size.max_size,
            **dataclasses.asdict(options.overrides), "runtime": options.runtime, "device": options.device,
            "batch_size": options.batch_size}


def segment(inputs: Sequence[str | os.PathLike], weights: str | os.PathLike | None, out_dir: str | os.PathLike, *,
            options: SegmentOptions = SegmentOptions(), resume: bool = False, overwrite: bool = False,
            progress: Callable[[int, int], None] | None = None,
            on_failure: Callable[[str, str], None] | None = None) -> SegmentResult:
    """Segment ``inputs`` with the base-model checkpoint ``weights`` (None: the shipped one) into ``out_dir``
    (panoptic.json + panoptic/). Under torchrun every rank segments its share of the images
    (:mod:`prn_cli.sharding`); rank 0 writes the JSON and returns the whole run's figures."""
    from .sharding import ShardedRun, merge_into
    from .training_data import InputCheck

    files = list_images(inputs)
    records = assign_image_ids(files, options.images_json)
    if options.runtime == "onnxruntime":
        from .onnx_runtime import onnx_segmenter

        segmenter = onnx_segmenter(weights, overrides=options.overrides, processing_size=options.processing_size)
    else:
        from .predictors import Segmenter

        segmenter = Segmenter(weights, device=options.device, overrides=options.overrides,
                              processing_size=options.processing_size)
    json_path, png_dir = set_paths(out_dir)
    request = segment_request(inputs, segmenter.weights, options)
    info = {"description": "prn segment (MS-PanopticFPN)", "weights": str(segmenter.weights)}
    with ShardedRun(options.device, out_dir, PROGRESS_STEM) as run:
        opened: dict = {}

        def open_output() -> list[str]:
            opened["writer"] = _open_output(run, json_path, png_dir, segmenter.categories, info, request, records,
                                            resume, overwrite)
            return sorted(opened["writer"].adopted_names)

        adopted = set(run.on_main(open_output))
        # the other ranks start after rank 0 has prepared the folder, so their writers find nothing to remove
        writer = opened.get("writer") or PanopticWriter(json_path, png_dir, segmenter.categories, overwrite=True,
                                                        info=info)
        todo = run.mine([(f, r) for f, r in zip(files, records) if r["file_name"] not in adopted])
        # warns once if the images are unlike the training data (rank 0 looks at its share)
        input_check = InputCheck.for_predictor(segmenter, warn=None if run.main else _quiet)
        with run.progress_log().open(request, resume=resume, shard=run.shard) as log:
            failed = _segment_images(segmenter, todo, writer, log, options.batch_size, input_check,
                                     run.report(progress, len(adopted), len(files)), on_failure)
        input_check.finish()
        shares = run.gather({"images": writer.images[len(adopted) if run.main else 0:],
                             "annotations": writer.annotations[len(adopted) if run.main else 0:], "failed": failed})
        written = sum(len(s["images"]) for s in shares)
        position = {str(f): k for k, f in enumerate(files)}
        failed = sorted((tuple(f) for s in shares for f in s["failed"]), key=lambda item: position.get(item[0], 0))
        if run.main:
            merge_into(writer, shares, {png_name(r): k for k, r in enumerate(records)})
            writer.commit()
            run.remove_progress()
            if progress:
                progress(len(files), len(files))
        return SegmentResult(json_path, written, len(adopted), failed, main=run.main)


def _quiet(message: str) -> None:
    """The warning of a rank other than 0: rank 0 speaks for the run."""


def _open_output(run, json_path: Path, png_dir: Path, categories: list[dict], info: dict, request: dict,
                 records: Sequence[dict], resume: bool, overwrite: bool) -> PanopticWriter:
    """Rank 0, before the other ranks start: check and prepare the output folder; with ``resume``, check the
    interrupted run's request and adopt the images it finished."""
    finished = check_resume(run, json_path, request, command="segment", resume=resume, overwrite=overwrite,
                            may_change=RESUME_MAY_CHANGE)
    done = {d["image"]["file_name"]: d for d in finished}
    writer = PanopticWriter(json_path, png_dir, categories, overwrite=overwrite or resume, info=info)
    asked = {r["file_name"] for r in records}
    kept = []
    for d in done.values():
        if d["image"]["file_name"] not in asked or not (png_dir / d["annotation"]["file_name"]).exists():
            continue
        writer.adopt(d["image"], d["annotation"])
        kept.append(d)
    if resume:
        run.restart_progress(request, kept)
    else:
        run.remove_progress()
    return writer


def _segment_images(segmenter, todo, writer: PanopticWriter, log, batch_size: int, input_check, report,
                    on_failure) -> list[tuple[str, str]]:
    """Segment ``todo`` (``(file, image record)``) in batches into ``writer``, one ``log`` line per image."""
    from .prefetch import prefetch

    failed: list[tuple[str, str]] = []
    step = max(1, batch_size)
    chunks = [todo[start: start + step] for start in range(0, len(todo), step)]
    done = 0
    # the next batch's photos are decoded while the network runs on this one
    for chunk, photos in prefetch(read_photos, chunks):
        batch = []
        for (f, rec), rgb in zip(chunk, photos.result()):
            if isinstance(rgb, InvalidInputError):
                failed.append((str(f), rgb.message))
                if on_failure:
                    on_failure(str(f), rgb.message)
                continue
            input_check.observe(rgb)
            batch.append((rec, rgb))
        if batch:
            write_predictions(segmenter, batch, writer, log)
        done += len(chunk)
        if report:
            report(done)
    return failed


def png_name(record: dict) -> str:
    """The PNG that an image record's prediction is written to (PanopticWriter's default name)."""
    return Path(str(record["file_name"])).with_suffix(".png").as_posix()


def read_photos(chunk: Sequence[tuple[Path, dict]]) -> list:
    """The RGB photo of each ``(file, record)`` of ``chunk``, or the :class:`InvalidInputError` that reading it
    raised (reported by the caller, in order)."""
    from .io import read_photo
    from .prefetch import attempt

    return [attempt(read_photo, f) for f, _ in chunk]


def write_predictions(segmenter, batch: Sequence[tuple[dict, np.ndarray]], writer: PanopticWriter, log=None) -> None:
    """Segment ``batch`` (``(image record, RGB)``) with ``segmenter`` and add each result to ``writer``; with
    ``log``, append one resume line per written image."""
    for (rec, rgb), pred in zip(batch, segmenter.predict_batch([rgb for _, rgb in batch])):
        image = {**rec, "height": int(rgb.shape[0]), "width": int(rgb.shape[1])}
        ann = writer.add(image, pred.ids, pred.segments)
        if log is not None:
            log.write(json.dumps({"image": image, "annotation": ann}) + "\n")
            log.flush()
