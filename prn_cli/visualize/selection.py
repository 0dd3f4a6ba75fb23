"""What ``prn viz`` draws: the images (in the first set's order), each set's annotation of them, the output
names, and the photos. Everything here reads JSONs and stats files only, so every input error is found before
the first pixel is drawn."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import InvalidInputError, fail
from ..panoptic import PanopticSet, safe_join, where

PANELS_DIRNAME = "panels"
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


@dataclass
class ImageJob:
    """One image to draw: the first set's annotation, the output name ``<stem>.png`` (sub-folders kept), each
    set's annotation (None where a set lacks the image) and, once found, the photo."""

    ann: dict
    rel: str
    per_set: list[dict | None]
    photo: Path | None = None


def folder_names(titles: Sequence[str]) -> list[str]:
    """Safe, distinct folder names for set titles (case-insensitively distinct, for macOS and Windows)."""
    used = {PANELS_DIRNAME.lower()}
    names = []
    for title in titles:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", str(title)).strip("._") or "set"
        name, k = base, 2
        while name.lower() in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name.lower())
        names.append(name)
    return names


GT_TITLE = "ground truth"


def default_titles(psets: Sequence[PanopticSet]) -> list[str]:
    """Panel titles when none are given: each set's name, except that a dataset's own annotations (COCO's and
    ``prn synth``'s layout, ``annotations/panoptic_<split>.json``) are called "ground truth" when only one set
    is laid out so."""
    def is_dataset(p: PanopticSet) -> bool:
        return p.json_path.parent.name == "annotations" and p.json_path.stem.startswith("panoptic_")

    datasets = [p for p in psets if is_dataset(p)]
    return [GT_TITLE if len(datasets) == 1 and is_dataset(p) else p.name for p in psets]


def categories_of(sets: Sequence[tuple[str, PanopticSet]]) -> tuple[dict[int, dict], PanopticSet | None]:
    """(id -> category, the set they come from) of the first set that lists categories; ({}, None) if none."""
    for _, pset in sets:
        if pset.categories:
            # Prediction JSONs are loaded without category checks; a malformed list must not crash here.
            for i, c in enumerate(pset.categories):
                if not isinstance(c, dict) or "id" not in c:
                    raise fail(pset.json_path, f"categories[{i}] lacks 'id'", "fix or regenerate the file")
            return pset.categories_by_id, pset
    return {}, None


def select_annotations(first: PanopticSet, image_ids: Sequence[Any] | None, limit: int | None) -> list[dict]:
    """The first set's annotations to draw: all, or those of ``image_ids`` (ids or PNG stems), at most ``limit``."""
    by_image = first.annotations_by_image()
    # First-appearance order of image ids, each with its winning (last) annotation, as the evaluator reads them.
    order = list(dict.fromkeys(a["image_id"] for a in first.annotations))
    anns = [by_image[i] for i in order]
    if image_ids is not None:
        wanted = {str(v) for v in image_ids}
        keep = [a for a in anns
                if str(a["image_id"]) in wanted or Path(str(a["file_name"])).stem in wanted]
        found = {str(a["image_id"]) for a in keep} | {Path(str(a["file_name"])).stem for a in keep}
        unknown = [str(v) for v in image_ids if str(v) not in found]
        if unknown:
            raise fail(first.json_path, f"no annotation for image {', '.join(unknown[:5])}"
                       + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""),
                       "pass image ids (or PNG stems) listed in the first set")
        anns = keep
    if limit is not None:
        anns = anns[:max(0, int(limit))]
    return anns


def plan_images(psets: Sequence[PanopticSet], anns: Sequence[dict]) -> list[ImageJob]:
    """One job per annotation, matched with every set's annotation of the same ``image_id``.

    Ids that differ only in type (1 vs "1") still match. Two images with the same PNG name are an error.
    """
    lookups = []
    for pset in psets:
        by_image = pset.annotations_by_image()
        lookups.append((by_image, {str(k): v for k, v in by_image.items()}))
    plan = []
    seen_rel: dict[str, Any] = {}
    for ann in anns:
        rel = Path(str(ann["file_name"])).with_suffix(".png").as_posix()
        if rel in seen_rel:
            raise fail(psets[0].json_path, f"images {seen_rel[rel]} and {ann['image_id']} both have the PNG "
                       f"name {rel}", "give each image its own file_name")
        seen_rel[rel] = ann["image_id"]
        per_set = []
        for by_image, by_str in lookups:
            found = by_image.get(ann["image_id"])
            per_set.append(found if found is not None else by_str.get(str(ann["image_id"])))
        plan.append(ImageJob(ann, rel, per_set))
    return plan


def check_categories(plan: Sequence[ImageJob], psets: Sequence[PanopticSet], categories: dict[int, dict],
                     cat_source: PanopticSet | None) -> None:
    """Unknown categories are found in the JSONs alone: fail before drawing anything rather than midway."""
    if not categories:
        return
    for job in plan:
        for pset, set_ann in zip(psets, job.per_set):
            for seg in set_ann["segments_info"] if set_ann is not None else ():
                if seg["category_id"] not in categories:
                    raise InvalidInputError(
                        f"{where(pset, set_ann)}: segment {seg['id']} has unknown category_id "
                        f"{seg['category_id']}; use a category id listed in {cat_source.json_path}")


def find_photo(images_dir: Path, records: list[tuple[PanopticSet, dict]], stem: str) -> tuple[Path | None, list]:
    """The photo of one image: the ``file_name`` of its ``images`` records, else ``<stem>.<ext>``.

    Returns (path or None, the paths tried without success).
    """
    tried: list[Path] = []
    for pset, rec in records:
        name = rec.get("file_name")
        if isinstance(name, str):
            p = safe_join(images_dir, name, pset.json_path, "image file_name")
            if p not in tried:
                if p.is_file():
                    return p, tried
                tried.append(p)
    for ext in PHOTO_EXTENSIONS:
        p = images_dir / (stem + ext)
        if p not in tried:
            if p.is_file():
                return p, tried
            tried.append(p)
    return None, tried


def find_photos(photos_dir: Path, psets: Sequence[PanopticSet], plan: Sequence[ImageJob]) -> None:
    """Set every job's ``photo``; any image without one is an error that names the first and counts the rest."""
    records_by_set = [p.images_by_id for p in psets]
    missing_photos = []
    for job in plan:
        image_id = job.ann["image_id"]
        records = [(p, r[image_id]) for p, r in zip(psets, records_by_set) if image_id in r]
        path, tried = find_photo(photos_dir, records, job.rel[:-len(".png")])
        if path is None:
            missing_photos.append((image_id, tried))
        else:
            job.photo = path
    if missing_photos:
        image_id, tried = missing_photos[0]
        more = f" (and {len(missing_photos) - 1} more images)" if len(missing_photos) > 1 else ""
        raise fail(photos_dir, f"no photo for image {image_id}{more}; looked for "
                   + ", ".join(p.name for p in tried[:4]),
                   "pass the folder that holds the photos, named as the images' file_name")


__all__ = ["ImageJob", "PANELS_DIRNAME", "PHOTO_EXTENSIONS", "GT_TITLE", "default_titles", "folder_names", "categories_of", "select_annotations",
           "plan_images", "check_categories", "find_photo", "find_photos"]
