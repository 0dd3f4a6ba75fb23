"""``prn segment``: run MS-PanopticFPN on images and write a COCO panoptic set (PNG + JSON).

Image ids: taken from ``--images-json`` (a COCO JSON whose ``images`` records name the files, e.g. the ground
truth, so that ``prn eval`` pairs predictions with it), else from a numeric file stem (COCO's own naming,
``000000139.jpg`` -> 139), else sequential in sorted file order.

Resume: each finished image appends its record to ``DIR/.segment-progress.jsonl`` after its PNG is written;
``--resume`` adopts those images and does the rest. The set's JSON is written last, in input order, then the
progress file is removed. Under torchrun the images are shared out over the ranks (:mod:`prn_cli.sharding`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import InvalidInputError, OutputExistsError, fail
from .options import SegmentOverrides
from .panoptic import PanopticWriter, read_json, set_paths

PROGRESS_STEM = ".segment-progress"
PROGRESS_NAME = PROGRESS_STEM + ".jsonl"   # rank 0's (and a single process's); see prn_cli.sharding


@dataclass
class SegmentOptions:
    device: str = "auto"
    batch_size: int = 1
    max_size: int | None = None          # resize so the long side is at most this (outputs at the original size)
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


def segment(inputs: Sequence[str | os.PathLike], weights: str | os.PathLike | None, out_dir: str | os.PathLike, *,
            options: SegmentOptions = SegmentOptions(), resume: bool = False, overwrite: bool = False,
            progress: Callable[[int, int], None] | None = None,
            on_failure: Callable[[str, str], None] | None = None) -> SegmentResult:
    """Segment ``inputs`` with the base-model checkpoint ``weights`` (None: the shipped one) into ``out_dir``
    (panoptic.json + panoptic/). Under torchrun every rank segments its share of the images
    (:mod:`prn_cli.sharding`); rank 0 writes the JSON and returns the whole run's figures."""
    from .predictors import Segmenter
    from .sharding import ShardedRun

    files = list_images(inputs)
    records = assign_image_ids(files, options.images_json)
    if options.runtime == "onnxruntime":
        from .onnx_runtime import onnx_segmenter

        segmenter = onnx_segmenter(weights, overrides=options.overrides, max_size=options.max_size)
    else:
        segmenter = Segmenter(weights, device=options.device, overrides=options.overrides,
                              max_size=options.max_size)
    json_path, png_dir = set_paths(out_dir)
    info = {"description": "prn segment (MS-PanopticFPN)", "weights": str(segmenter.weights)}
    with ShardedRun(options.device, out_dir, PROGRESS_STEM) as run:
        opened: dict = {}

        def open_output() -> list[str]:
            opened["writer"] = _open_output(run, json_path, png_dir, segmenter.categories, info, resume, overwrite)
            return sorted(opened["writer"].adopted_names)

        adopted = set(run.on_main(open_output))
        # the other ranks start after rank 0 has cleared the folder, so their writers find nothing to remove
        writer = opened.get("writer") or PanopticWriter(json_path, png_dir, segmenter.categories, overwrite=True,
                                                        info=info)
        todo = run.mine([(f, r) for f, r in zip(files, records) if r["file_name"] not in adopted])
        report = _progress_on_main(run, progress, len(adopted), len(files))
        failed = _segment_images(segmenter, todo, writer, run.progress_path(), options.batch_size, report,
                                 on_failure)
        shares = run.gather({"images": writer.images[len(adopted) if run.main else 0:],
                             "annotations": writer.annotations[len(adopted) if run.main else 0:], "failed": failed})
        written = sum(len(s["images"]) for s in shares)
        position = {str(f): k for k, f in enumerate(files)}
        failed = sorted((tuple(f) for s in shares for f in s["failed"]), key=lambda item: position.get(item[0], 0))
        if run.main:
            from .sharding import merge_into

            merge_into(writer, shares, {png_name(r): k for k, r in enumerate(records)})
            writer.commit()
            run.remove_progress()
            if progress:
                progress(len(files), len(files))
        return SegmentResult(json_path, written, len(adopted), failed, main=run.main)


def _open_output(run, json_path: Path, png_dir: Path, categories: list[dict], info: dict, resume: bool,
                 overwrite: bool) -> PanopticWriter:
    """Rank 0: check and prepare the output folder, adopting what an interrupted run finished (``resume``)."""
    done: dict = {}
    if resume:
        if json_path.exists() and not run.progress_files():
            raise OutputExistsError(f"{json_path} is complete; nothing to resume (pass --overwrite to redo it)")
        done = {d["image"]["file_name"]: d for d in run.read_progress()}
    elif run.progress_files() and not overwrite:
        raise OutputExistsError(f"{run.out_dir} holds an interrupted prn segment run; pass --resume to finish it "
                                "or --overwrite to start again")
    writer = PanopticWriter(json_path, png_dir, categories, overwrite=overwrite or resume, info=info)
    if not resume:
        run.remove_progress()
    for d in done.values():
        if (png_dir / d["annotation"]["file_name"]).exists():
            writer.adopt(d["image"], d["annotation"])
    return writer


def _progress_on_main(run, progress, already: int, total: int):
    """Rank 0 shows the run's progress, estimated from its own share; the other ranks show none."""
    if progress is None or not run.main:
        return None
    world = run.context.world_size
    progress(already, total)
    return lambda done: progress(min(total, already + done * world), total)


def _segment_images(segmenter, todo, writer: PanopticWriter, progress_path: Path, batch_size: int, report,
                    on_failure) -> list[tuple[str, str]]:
    """Segment ``todo`` (``(file, image record)``) in batches into ``writer``, logging each image for resume."""
    from .io import read_photo

    failed: list[tuple[str, str]] = []
    step = max(1, batch_size)
    with open(progress_path, "a", encoding="utf-8") as log:
        for start in range(0, len(todo), step):
            batch = []
            for f, rec in todo[start: start + step]:
                try:
                    rgb = read_photo(f)
                except InvalidInputError as exc:
                    failed.append((str(f), exc.message))
                    if on_failure:
                        on_failure(str(f), exc.message)
                    continue
                batch.append((rec, rgb))
            if batch:
                write_predictions(segmenter, batch, writer, log)
            if report:
                report(min(start + step, len(todo)))
    return failed


def png_name(record: dict) -> str:
    """The PNG that an image record's prediction is written to (PanopticWriter's default name)."""
    return Path(str(record["file_name"])).with_suffix(".png").as_posix()


def write_predictions(segmenter, batch: Sequence[tuple[dict, np.ndarray]], writer: PanopticWriter, log=None) -> None:
    """Segment ``batch`` (``(image record, RGB)``) with ``segmenter`` and add each result to ``writer``; with
    ``log``, append one resume line per written image."""
    for (rec, rgb), pred in zip(batch, segmenter.predict_batch([rgb for _, rgb in batch])):
        image = {**rec, "height": int(rgb.shape[0]), "width": int(rgb.shape[1])}
        ann = writer.add(image, pred.ids, pred.segments)
        if log is not None:
            log.write(json.dumps({"image": image, "annotation": ann}) + "\n")
            log.flush()
