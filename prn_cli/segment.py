"""``prn segment``: run MS-PanopticFPN on images and write a COCO panoptic set (PNG + JSON).

Image ids: taken from ``--images-json`` (a COCO JSON whose ``images`` records name the files, e.g. the ground
truth, so that ``prn eval`` pairs predictions with it), else from a numeric file stem (COCO's own naming,
``000000139.jpg`` -> 139), else sequential in sorted file order.

Resume: ``DIR/.segment-progress.jsonl`` starts with what the run was asked (:func:`segment_request`: the
images, weights, ``--images-json``, ``--max-size`` and thresholds), and each finished image appends its record
after its PNG is written. ``--resume`` refuses other inputs or options (naming the option; ``--device`` and
``--batch-size`` may change, and the change is logged), adopts the finished images and does the rest. The set's
JSON is written last, then the progress file is removed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import InvalidInputError, OutputExistsError, fail
from .options import ProcessingSize, SegmentOverrides
from .panoptic import PanopticWriter, read_json, set_paths
from .resume import ProgressLog, absolute, check_same_request, file_digest

PROGRESS_NAME = ".segment-progress.jsonl"
#: request keys a resume may change: where it runs and how many images go through the network at once
RESUME_MAY_CHANGE = ("device", "batch_size")


@dataclass
class SegmentOptions:
    device: str = "auto"
    batch_size: int = 1
    #: the size the network runs at (--min-size, --max-size); the PNGs are written at each image's size
    processing_size: ProcessingSize = field(default_factory=ProcessingSize)
    images_json: str | None = None
    #: thresholds replacing the checkpoint's InferenceConfig values
    overrides: SegmentOverrides = field(default_factory=SegmentOverrides)


@dataclass
class SegmentResult:
    json_path: Path
    written: int
    adopted: int
    failed: list[tuple[str, str]]


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
            **dataclasses.asdict(options.overrides), "device": options.device, "batch_size": options.batch_size}


def segment(inputs: Sequence[str | os.PathLike], weights: str | os.PathLike | None, out_dir: str | os.PathLike, *,
            options: SegmentOptions = SegmentOptions(), resume: bool = False, overwrite: bool = False,
            progress: Callable[[int, int], None] | None = None,
            on_failure: Callable[[str, str], None] | None = None) -> SegmentResult:
    """Segment ``inputs`` with the base-model checkpoint ``weights`` (None: the shipped one) into ``out_dir``
    (panoptic.json + panoptic/)."""
    from .predictors import Segmenter
    from .training_data import InputCheck
    from .prefetch import prefetch

    files = list_images(inputs)
    records = assign_image_ids(files, options.images_json)
    segmenter = Segmenter(weights, device=options.device, overrides=options.overrides,
                          processing_size=options.processing_size)
    categories = segmenter.categories
    input_check = InputCheck.for_predictor(segmenter)   # warns once if the images are unlike its training data

    json_path, png_dir = set_paths(out_dir)
    progress_path = Path(out_dir) / PROGRESS_NAME
    progress_log = ProgressLog(progress_path)
    request = segment_request(inputs, segmenter.weights, options)
    done: dict = {}
    if resume:
        if json_path.exists() and not progress_path.exists():
            raise OutputExistsError(f"{json_path} is complete; nothing to resume (pass --overwrite to redo it)")
        stored, finished = progress_log.read()
        if stored is not None:
            changes = check_same_request(stored, request, where=progress_path, may_change=RESUME_MAY_CHANGE,
                                         fix="rerun with the inputs and options of the interrupted run, or pass "
                                         "--overwrite to start again")
            if changes:
                from .console import info

                info("resuming with " + "; ".join(changes))
        done = {d["image"]["file_name"]: d for d in finished}
    elif progress_path.exists() and not overwrite:
        raise OutputExistsError(f"{out_dir} holds an interrupted prn segment run; pass --resume to finish it or "
                                "--overwrite to start again")
    writer = PanopticWriter(json_path, png_dir, categories, overwrite=overwrite or resume,
                            info={"description": "prn segment (MS-PanopticFPN)", "weights": str(segmenter.weights)})
    asked = {r["file_name"] for r in records}
    for d in done.values():
        if d["image"]["file_name"] not in asked or not (png_dir / d["annotation"]["file_name"]).exists():
            continue
        writer.adopt(d["image"], d["annotation"])
    todo = [(f, r) for f, r in zip(files, records) if r["file_name"] not in writer.adopted_names]
    failed: list[tuple[str, str]] = []
    total = len(files)
    finished = total - len(todo)
    if progress:
        progress(finished, total)
    step = max(1, options.batch_size)
    chunks = [todo[start: start + step] for start in range(0, len(todo), step)]
    with progress_log.open(request, resume=resume) as log:
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
            finished += len(chunk)
            if progress:
                progress(finished, total)
    input_check.finish()
    writer.commit()
    progress_log.remove()
    return SegmentResult(json_path, len(todo) - len(failed), len(writer.adopted_names), failed)


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
