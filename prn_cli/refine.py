"""``prn refine``: run PRN on any base panoptic segmentation (COCO panoptic PNG + JSON) and write the refined set.

Each base annotation is paired with its image (``refine_data.pair_with_images``), rendered into PRN's input
maps by the same renderer that made its training targets, refined, post-processed (every Table 1 switch is
an option) and written with the checkpoint's categories. A base image that cannot be used (unreadable image
or PNG, a PNG that disagrees with its segments_info or its image's size) is reported and skipped; the set's
JSON is written last, so an interrupted run leaves no half-written set.

What changed is reported per image and in total, by matching base and refined segments (IoU > 0.5, the PQ
rule): ``relabelled`` (matched, other category), ``split`` (an unmatched base segment that holds most of two
or more refined segments), ``merged`` (an unmatched refined segment that holds most of two or more base
segments), ``removed`` and ``added`` (the other unmatched ones), and ``pixels_changed`` (pixels whose
segment is not the match of their base segment, or whose category changed).

Resume: as ``prn segment`` does, ``DIR/.refine-progress.jsonl`` starts with what the run was asked
(:func:`refine_request`) and gets one line per written image (with its changes); ``resume=True`` refuses other
inputs or options, naming the option (``--device`` and ``--batch-size`` may change, and the change is logged),
and refines only the images left. The JSON and the per-image changes are in input order.

Under torchrun the images are shared out over the ranks (:mod:`prn_cli.sharding`): each rank refines its share
through the same loop, with its own progress file, and rank 0 writes the JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InvalidInputError, fail
from .options import PostProcessOverrides, ProcessingSize
from .panoptic import PanopticSet, PanopticWriter, check_annotation, load_set, read_id_png, read_json, set_paths
from .resume import absolute, check_resume, file_digest

PROGRESS_STEM = ".refine-progress"
PROGRESS_NAME = PROGRESS_STEM + ".jsonl"   # rank 0's (and a single process's); see prn_cli.sharding
#: request keys a resume may change: where it runs and how many images go through the network at once
RESUME_MAY_CHANGE = ("device", "batch_size")

CHANGE_KEYS = ("segments_base", "segments_refined", "added", "removed", "split", "merged", "relabelled",
               "pixels_changed", "pixels")


@dataclass
class RefineOptions:
    device: str = "auto"
    batch_size: int = 1
    #: post-processing replacing the checkpoint's stored values
    overrides: PostProcessOverrides = field(default_factory=PostProcessOverrides)
    #: the size PRN runs at (--min-size, --max-size); the PNGs are written at each image's size
    processing_size: ProcessingSize = field(default_factory=ProcessingSize)
    #: JSON file mapping base category ids to the checkpoint's ({"<base id>": <checkpoint id>, ...})
    category_map: str | None = None
    #: "coco" (a COCO panoptic set), or another framework's predictions converted in memory (prn_cli.convert)
    base_format: str = "coco"
    #: the categories a converted base is converted into (a JSON path or a list; None: the checkpoint's)
    base_categories: Any = None
    #: how a converted base is read (label map, id2label, label divisor, void, images JSON)
    base_convert: Any = None
    #: "torch" runs a checkpoint; "onnxruntime" runs a file written by prn export (prn_cli.onnx_runtime)
    runtime: str = "torch"


@dataclass
class RefineResult:
    json_path: Path
    written: int
    failed: list[tuple[str, str]]
    changes: dict                       # totals over the set's images, keys CHANGE_KEYS
    per_image: list[dict]               # {"image_id", "file_name", **changes}
    adopted: int = 0                    # images an interrupted run had written (resume)
    #: False on the ranks other than 0 of a torchrun group (rank 0 reports the run)
    main: bool = True


# --------------------------------------------------------------------------------------------------------------
# what changed


def compare_segmentations(base_ids: np.ndarray, base_cats: dict[int, int], ref_ids: np.ndarray,
                          ref_cats: dict[int, int]) -> dict:
    """Segment-level changes from ``base`` to ``refined`` (see the module docstring). ``*_cats`` map segment id
    -> category id; id 0 is void in both."""
    from .models.prn.base_fusion import dense_labels

    b_uniq, b_inv = dense_labels(base_ids)
    r_uniq, r_inv = dense_labels(ref_ids)
    nb, nr = len(b_uniq), len(r_uniq)
    inter = np.bincount(b_inv * nr + r_inv, minlength=nb * nr).reshape(nb, nr)
    b_area, r_area = inter.sum(1), inter.sum(0)
    b_real = b_uniq != 0
    r_real = r_uniq != 0
    union = b_area[:, None] + r_area[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    iou[~b_real, :] = 0
    iou[:, ~r_real] = 0
    # IoU > 0.5 makes matches unique (two segments of one map cannot both overlap a third by more than half)
    matched = iou > 0.5
    b_match = np.where(matched.any(1), matched.argmax(1), -1)
    r_match = np.where(matched.any(0), matched.argmax(0), -1)
    b_cat = np.array([base_cats.get(int(i), 0) for i in b_uniq])
    r_cat = np.array([ref_cats.get(int(i), 0) for i in r_uniq])
    relabelled = sum(1 for b in range(nb) if b_match[b] >= 0 and b_cat[b] != r_cat[b_match[b]])
    # "holds most of": more than half of the other segment's pixels lie inside this one
    r_inside_b = inter / np.maximum(r_area[None, :], 1) > 0.5          # [b, r]: r mostly inside b
    b_inside_r = inter / np.maximum(b_area[:, None], 1) > 0.5          # [b, r]: b mostly inside r
    split = merged = removed = added = 0
    for b in np.flatnonzero(b_real & (b_match < 0)):
        parts = np.flatnonzero(r_inside_b[b] & r_real)
        if len(parts) >= 2:
            split += 1
        # part of a merge only into a real segment: void holding several base segments is their removal
        elif not any(r_match[r] < 0 and (b_inside_r[:, r] & b_real).sum() >= 2
                     for r in np.flatnonzero(b_inside_r[b] & r_real)):
            removed += 1
    for r in np.flatnonzero(r_real & (r_match < 0)):
        parts = np.flatnonzero(b_inside_r[:, r] & b_real)
        if len(parts) >= 2:
            merged += 1
        elif not any(b_match[b] < 0 and (r_inside_b[b] & r_real).sum() >= 2
                     for b in np.flatnonzero(r_inside_b[:, r] & b_real)):
            added += 1
    # unchanged pixels: void -> void, and pixels of a matched pair that kept its category
    same = int(inter[~b_real][:, ~r_real].sum()) if (~b_real).any() and (~r_real).any() else 0
    for b in np.flatnonzero(b_match >= 0):
        r = b_match[b]
        if b_cat[b] == r_cat[r]:
            same += int(inter[b, r])
    total = int(base_ids.size)
    return {"segments_base": int(b_real.sum()), "segments_refined": int(r_real.sum()), "added": added,
            "removed": removed, "split": split, "merged": merged, "relabelled": relabelled,
            "pixels_changed": total - same, "pixels": total}


# --------------------------------------------------------------------------------------------------------------
# categories


def category_translation(base, ckpt_categories: list[dict], map_file: str | None) -> dict[int, int]:
    """base category id -> checkpoint category id, for every id the base uses."""
    ckpt = {int(c["id"]): c for c in ckpt_categories}
    # a base converted in memory (segments_info None until read) may use any of its categories
    used = sorted({int(s["category_id"]) for a in base.annotations for s in a["segments_info"]}
                  if all(a["segments_info"] is not None for a in base.annotations)
                  else {int(c["id"]) for c in base.categories})
    if map_file:
        raw = read_json(Path(map_file), what="category map")
        if not isinstance(raw, dict):
            raise fail(map_file, "category map must be a JSON object {\"<base id>\": <checkpoint id>}",
                       "write it as e.g. {\"1\": 3, \"2\": 5}")
        try:
            table = {int(k): int(v) for k, v in raw.items()}
        except (TypeError, ValueError):
            raise fail(map_file, "category map keys and values must be integer category ids",
                       "write it as e.g. {\"1\": 3, \"2\": 5}") from None
        unknown_targets = sorted(v for v in set(table.values()) if v not in ckpt)
        if unknown_targets:
            raise fail(map_file, f"maps to category ids {unknown_targets[:5]} that the checkpoint does not have",
                       "map to the checkpoint's category ids (`prn info CKPT` lists them)")
        missing = [c for c in used if c not in table and c not in ckpt]
        if missing:
            raise fail(map_file, f"has no entry for base category ids {missing[:5]}", "add them to the map")
        return {c: table.get(c, c) for c in used}
    if base.categories:
        mine = {int(c["id"]): (str(c.get("name")), int(bool(c.get("isthing", 0)))) for c in base.categories}
        theirs = {i: (str(c.get("name")), int(bool(c.get("isthing", 0)))) for i, c in ckpt.items()}
        differ = sorted(i for i in mine if theirs.get(i) != mine[i])
        if differ:
            i = differ[0]
            got = theirs.get(i)
            raise fail(base.json_path, f"base category {i} ({mine[i][0]!r}) differs from the checkpoint's "
                       f"({'absent' if got is None else repr(got[0])})",
                       "refine with a checkpoint trained on these categories, or pass --category-map FILE")
    unknown = [c for c in used if c not in ckpt]
    if unknown:
        raise fail(base.json_path, f"uses category ids {unknown[:5]} that the checkpoint does not have",
                   "pass --category-map FILE mapping them to the checkpoint's ids")
    return {c: c for c in used}


# --------------------------------------------------------------------------------------------------------------
# the command's core


def refine_request(base_json: str | os.PathLike, image_inputs: Sequence[str | os.PathLike],
                   weights: str | os.PathLike, options: RefineOptions) -> dict:
    """What a refine run is asked (stored in its progress file; a resume must ask the same)."""
    return {"base": absolute(base_json), "images": sorted(absolute(i) for i in image_inputs),
            "weights": absolute(weights), "weights_sha256": file_digest(weights),
            "category_map": absolute(options.category_map), "category_map_sha256": file_digest(options.category_map),
            "base_format": options.base_format,
            # a CATS file as its absolute path; a named list ("cityscapes") or the categories themselves as given
            "base_categories": (absolute(options.base_categories)
                                if isinstance(options.base_categories, (str, os.PathLike))
                                and Path(options.base_categories).exists() else options.base_categories),
            "base_convert": (dataclasses.asdict(options.base_convert) if options.base_convert is not None else None),
            "min_size": options.processing_size.min_size, "max_size": options.processing_size.max_size,
            **dataclasses.asdict(options.overrides), "runtime": options.runtime, "device": options.device,
            "batch_size": options.batch_size}


def refine(base: str | os.PathLike, images: Sequence[str | os.PathLike] | str | os.PathLike,
           weights: str | os.PathLike | None, out_dir: str | os.PathLike, *, options: RefineOptions = RefineOptions(),
           overwrite: bool = False, resume: bool = False, progress: Callable[[int, int], None] | None = None,
           on_failure: Callable[[str, str], None] | None = None) -> RefineResult:
    """Refine the base set ``base`` (paired with ``images``) with the PRN checkpoint ``weights`` (None: the
    shipped one) into ``out_dir`` (panoptic.json + panoptic/); ``resume`` finishes an interrupted run. Under
    torchrun every rank refines its share of the images (:mod:`prn_cli.sharding`); rank 0 writes the JSON and
    returns the whole run's figures."""
    from .refine_data import pair_with_images
    from .segment import list_images
    from .sharding import ShardedRun, merge_into
    from .training_data import InputCheck

    if options.runtime == "onnxruntime":
        from .onnx_runtime import onnx_refiner

        refiner = onnx_refiner(weights, overrides=options.overrides, processing_size=options.processing_size)
    else:
        from .predictors import Refiner

        refiner = Refiner(weights, device=options.device, overrides=options.overrides,
                          processing_size=options.processing_size)
    if options.base_format == "coco":
        base_set = load_set(base, need_categories=False)
    else:
        from .convert import ConvertedBase, ConvertOptions

        base_set = ConvertedBase(base, options.base_format, options.base_categories or refiner.categories,
                                 options.base_convert or ConvertOptions())
    translation = category_translation(base_set, refiner.categories, options.category_map)
    image_inputs = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    pairs = pair_with_images(base_set, list_images(image_inputs))
    json_path, png_dir = set_paths(out_dir)
    request = refine_request(base_set.json_path, image_inputs, refiner.weights, options)
    info = {"description": "prn refine (PRN)", "weights": str(refiner.weights), "base": str(base_set.json_path)}
    total = len(pairs)
    with ShardedRun(options.device, out_dir, PROGRESS_STEM) as run:
        opened: dict = {}

        def open_output() -> list[dict]:
            opened["writer"], adopted = _open_output(run, json_path, png_dir, refiner.categories, info, request,
                                                     pairs, resume, overwrite)
            return adopted

        adopted = run.on_main(open_output)
        # the other ranks start after rank 0 has prepared the folder, so their writers find nothing to remove
        writer = opened.get("writer") or PanopticWriter(json_path, png_dir, refiner.categories, overwrite=True,
                                                        info=info)
        done = {change["file_name"] for change in adopted}
        todo = run.mine([item for item in pairs if item.annotation["file_name"] not in done])
        # warns once if the images are unlike the training data (rank 0 looks at its share)
        input_check = InputCheck.for_predictor(refiner, warn=None if run.main else _quiet)
        with run.progress_log().open(request, resume=resume, shard=run.shard) as log:
            failed, per_image = _refine_pairs(refiner, todo, base_set, translation, writer, log, options.batch_size,
                                              input_check, run.report(progress, len(done), total), on_failure)
        input_check.finish()
        skip = len(adopted) if run.main else 0
        shares = run.gather({"images": writer.images[skip:], "annotations": writer.annotations[skip:],
                             "failed": failed, "per_image": per_image})
        position = {item.annotation["file_name"]: k for k, item in enumerate(pairs)}
        per_image = sorted(adopted + [c for s in shares for c in s["per_image"]],
                           key=lambda change: position.get(change["file_name"], total))
        where = {str(item.image_path): position[item.annotation["file_name"]] for item in pairs}
        failed = sorted((tuple(f) for s in shares for f in s["failed"]), key=lambda f: where.get(f[0], total))
        if run.main:
            merge_into(writer, shares, position)
            writer.commit()
            run.remove_progress()
            if progress:
                progress(total, total)
    totals = {k: sum(p[k] for p in per_image) for k in CHANGE_KEYS}
    return RefineResult(json_path, len(per_image) - len(adopted), failed, totals, per_image, len(adopted),
                        main=run.main)


def _quiet(message: str) -> None:
    """The warning of a rank other than 0: rank 0 speaks for the run."""


def _open_output(run, json_path: Path, png_dir: Path, categories: list[dict], info: dict, request: dict, pairs,
                 resume: bool, overwrite: bool) -> tuple[PanopticWriter, list[dict]]:
    """Rank 0, before the other ranks start: check and prepare the output folder; with ``resume``, check the
    interrupted run's request and adopt the images it finished (returns the writer and their change records)."""
    finished = check_resume(run, json_path, request, command="refine", resume=resume, overwrite=overwrite,
                            may_change=RESUME_MAY_CHANGE)
    writer = PanopticWriter(json_path, png_dir, categories, overwrite=overwrite or resume, info=info)
    asked = {item.annotation["file_name"] for item in pairs}
    kept: list[dict] = []
    adopted_pngs: set[str] = set()
    for d in finished:
        name = d["annotation"]["file_name"]
        if name in asked and name not in adopted_pngs and (png_dir / name).is_file():
            writer.adopt(d["image"], d["annotation"])
            adopted_pngs.add(name)
            kept.append(d)
    if resume:
        run.restart_progress(request, kept)
    else:
        run.remove_progress()
    return writer, [d["changes"] for d in kept]


def _refine_pairs(refiner, todo, base_set, translation: dict[int, int], writer: PanopticWriter, log,
                  batch_size: int, input_check, report, on_failure) -> tuple[list, list[dict]]:
    """Refine ``todo`` (paired base annotations) in batches into ``writer``, one ``log`` line per image. Returns
    the failures and each written image's change record."""
    from .prefetch import attempt, prefetch

    failed: list[tuple[str, str]] = []
    per_image: list[dict] = []
    bs = max(1, int(batch_size))
    chunks = [todo[start:start + bs] for start in range(0, len(todo), bs)]

    def prepare_chunk(chunk):
        return [attempt(prepare_item, refiner, item, base_set, translation) for item in chunk]

    done = 0
    # the next batch is decoded, checked and rendered while the network runs on this one
    for chunk, prepared in prefetch(prepare_chunk, chunks):
        _refine_batch(refiner, chunk, prepared.result(), writer, log, per_image, failed, on_failure, input_check)
        done += len(chunk)
        if report:
            report(done)
    return failed, per_image


def _refine_batch(refiner, batch, prepared, writer, log, per_image, failed, on_failure, input_check=None) -> None:
    """Refine one batch of paired base annotations (``prepared``: :func:`prepare_item`'s result for each, or the
    InvalidInputError it raised), write each result, its changes and its progress line."""
    ready = []
    for item, prep in zip(batch, prepared):
        if isinstance(prep, InvalidInputError):
            failed.append((str(item.image_path), prep.message))
            if on_failure:
                on_failure(str(item.image_path), prep.message)
            continue
        if input_check is not None:
            input_check.observe(prep["image"])
        ready.append(prep)
    predictions = refiner.predict_prepared([p["inputs"] for p in ready],
                                           bases=[(p["base_ids"], p["base_segments"]) for p in ready])
    for prep, pred in zip(ready, predictions):
        item, base_ids, base_segs = prep["item"], prep["base_ids"], prep["base_segments"]
        image = {**item.image, "height": int(pred.ids.shape[0]), "width": int(pred.ids.shape[1])}
        ann = writer.add(image, pred.ids, pred.segments, file_name=item.annotation["file_name"])
        change = compare_segmentations(base_ids, {s["id"]: s["category_id"] for s in base_segs}, pred.ids,
                                       {s["id"]: s["category_id"] for s in pred.segments})
        per_image.append({"image_id": item.annotation["image_id"], "file_name": item.annotation["file_name"],
                          **change})
        log.write(json.dumps({"image": image, "annotation": ann, "changes": per_image[-1]}) + "\n")
        log.flush()


def prepare_item(refiner, item, base_set, translation: dict[int, int]) -> dict:
    """Read one paired base annotation and its photo, check them, and make PRN's inputs:
    ``{"item", "base_ids", "base_segments" (checkpoint category ids), "inputs"}``."""
    from .io import orientation_hint, read_photo

    rgb = read_photo(item.image_path)
    ann = item.annotation
    if isinstance(base_set, PanopticSet):
        png = base_set.png_path(ann)
        ids = read_id_png(png)
    else:       # another framework's prediction, converted now
        png, ids, converted = base_set.read(ann)
        ann = {**ann, "segments_info": converted}
    if ids.shape != rgb.shape[:2]:
        raise InvalidInputError(f"{png}: base PNG is {ids.shape[1]}x{ids.shape[0]} but its image "
                                f"{item.image_path} is {rgb.shape[1]}x{rgb.shape[0]}"
                                f"{orientation_hint(rgb.shape[:2], ids.shape)}; predict the base at the image's size")
    segs = [{"id": int(s["id"]), "category_id": translation.get(int(s["category_id"]), int(s["category_id"])),
             "iscrowd": 0} for s in ann["segments_info"]]
    check_annotation(base_set, {**ann, "segments_info": segs}, ids, {int(c["id"]): c for c in refiner.categories},
                     check_area=False, image_info={"width": rgb.shape[1], "height": rgb.shape[0]})
    return {"item": item, "base_ids": ids, "base_segments": segs, "image": rgb,
            "inputs": refiner.prepare(rgb, ids, segs, where=str(png))}
