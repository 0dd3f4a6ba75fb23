"""``visualize``: the ``prn viz`` command as a function, in named steps.

Every input is checked and every output file planned before anything is written: then earlier output is
replaced, the images are drawn one by one, and the gallery and the manifest (``viz.json``) are written last.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InvalidInputError, fail
from ..io import orientation_hint, prepare_output_dir, read_photo, refuse_file_as_folder, write_json_atomic, write_png_atomic, \
    write_text_atomic
from ..panoptic import PanopticSet, read_json, where
from .gallery import gallery_html
from .options import VizOptions
from .overlay import render_overlay
from .panels import compose_panel, text_tile
from .selection import (PANELS_DIRNAME, ImageJob, categories_of, check_categories, find_photos, folder_names,
                        plan_images, select_annotations)

INDEX_NAME = "index.html"
MANIFEST_NAME = "viz.json"
IMAGE_TILE_TITLE = "image"
#: Size of a panel's tiles when an image has neither a photo nor any set's annotation (h, w).
_FALLBACK_TILE = (240, 320)


@dataclass(frozen=True)
class _Run:
    """What one call draws and where: fixed before the first file is written."""

    out: Path
    titles: list[str]
    folders: list[str]
    psets: list[PanopticSet]
    options: VizOptions
    categories: dict[int, dict]
    overlays: bool
    panels: bool


def visualize(sets: Sequence[tuple[str, PanopticSet]], out_dir: str | os.PathLike, *,
              images_dir: str | os.PathLike | None = None, options: VizOptions = VizOptions(),
              image_ids: Sequence[Any] | None = None, limit: int | None = None, panels: bool = True,
              overlays: bool = True, html: bool = False, overwrite: bool = False,
              progress: Callable[[int, int], None] | None = None) -> dict:
    """Draw overlays and side-by-side panels of one or more panoptic sets into ``out_dir``.

    - ``sets``: (title, set) pairs, in tile order. The first set decides which images are drawn (in its order);
      the others are matched by ``image_id``. A set that lacks an image gets a dark "missing" tile in the panel
      and no overlay file; it is not an error (the summary counts them per set under ``missing``).
    - ``images_dir``: folder of the photos. Each image's photo is its ``images`` record's ``file_name`` (first
      set that has one), else ``<PNG stem>.jpg/.jpeg/.png``. With photos, colours are blended over them and
      panels start with an ``image`` tile; without, segments are drawn on a neutral grey.
    - ``image_ids``: draw only these images (ids or PNG stems, compared as text); ``limit``: at most this many.
    - ``overlays``: write ``<title>/<stem>.png`` per set; ``panels``: write ``panels/<stem>.png`` when a panel
      has two tiles or more (several sets, or one set and its photos); ``html``: write ``index.html``.
    - Categories (colours, names) come from the first set that lists any.

    Refuses (:class:`OutputExistsError`) an ``out_dir`` holding earlier output unless ``overwrite``; then the
    files that the earlier run listed in its ``viz.json`` and this run does not write are removed.
    Returns ``{"out_dir", "images", "files_written", "overlays", "panels", "index_html", "sets"}``, ``sets``
    being ``[{"title", "folder", "missing"}]`` in set order (``missing``: images that the set lacks).
    """
    if not sets:
        raise ValueError("visualize needs at least one (title, set) pair")
    titles = [str(t) for t, _ in sets]
    psets = [s for _, s in sets]
    out = Path(out_dir)
    refuse_file_as_folder(out)
    photos_dir = Path(images_dir) if images_dir is not None else None
    if photos_dir is not None and not photos_dir.is_dir():
        raise fail(photos_dir, "images folder does not exist", "pass the folder that holds the photos")
    categories, cat_source = categories_of(sets)
    if cat_source is None and (options.color_by == "category" or options.labels):
        raise fail(psets[0].json_path, "no set lists categories, so category colours and labels are unknown",
                   "include the ground-truth set, whose JSON lists the categories")

    plan = plan_images(psets, select_annotations(psets[0], image_ids, limit))
    check_categories(plan, psets, categories, cat_source)
    n_tiles = len(sets) + int(photos_dir is not None)
    run = _Run(out, titles, folder_names(titles), psets, options, categories, overlays, panels and n_tiles >= 2)
    files, gallery = _planned_files(run, plan, html)
    _refuse_input_folders(run, files, photos_dir)
    old_files = _earlier_output(out, files, overwrite)
    if photos_dir is not None:
        find_photos(photos_dir, psets, plan)

    # Stale files of the earlier run go first, so an interrupted run never mixes two runs under one manifest.
    if overwrite and (out / MANIFEST_NAME).exists():
        _remove_earlier_output(out, old_files, keep=set(files))
    try:
        missing, n_overlays, n_panels = _draw_all(run, plan, progress)
        index_html = _write_gallery(run, plan, gallery) if html else None
        _write_manifest(run, plan, files, photos_dir)
    except BaseException:
        # stopped midway (Ctrl-C, a bad PNG, a full disk): no overlays without their viz.json are left behind,
        # so the folder holds either a complete result or nothing of this run, and a plain rerun may write it
        _remove_partial_output(out, files)
        raise
    return {"out_dir": str(out), "images": len(plan), "files_written": n_overlays + n_panels + int(html),
            "overlays": n_overlays, "panels": n_panels, "index_html": str(index_html) if index_html else None,
            "sets": [{"title": t, "folder": f, "missing": m} for t, f, m in zip(titles, run.folders, missing)]}


# --------------------------------------------------------------------------------------------------------------
# before drawing: the files, the output folder


def _planned_files(run: _Run, plan: Sequence[ImageJob], html: bool) -> tuple[list[str], list[str]]:
    """(every file this run writes but the manifest, the files the gallery shows), relative to ``out``.

    The overwrite check, the input-clobber check and the manifest all need the list, so it is made first.
    """
    files: list[str] = []
    for job in plan:
        if run.overlays:
            files += [f"{folder}/{job.rel}" for folder, a in zip(run.folders, job.per_set) if a is not None]
        if run.panels:
            files.append(f"{PANELS_DIRNAME}/{job.rel}")
    gallery = [f"{PANELS_DIRNAME}/{job.rel}" for job in plan] if run.panels else \
        [f"{run.folders[0]}/{job.rel}" for job in plan] if run.overlays else []
    if html:
        files.append(INDEX_NAME)
    return files, gallery


def _refuse_input_folders(run: _Run, files: Sequence[str], photos_dir: Path | None) -> None:
    """An output folder that is an input folder (a set's PNGs, the photos) would have its files replaced."""
    inputs = {p.png_dir.resolve() for p in run.psets} | ({photos_dir.resolve()} if photos_dir else set())
    for folder in {Path(f).parts[0] for f in files if "/" in f}:
        if (run.out / folder).resolve() in inputs:
            raise fail(run.out / folder, "is an input folder; writing there would replace input files",
                       "choose another output folder")


def _earlier_output(out: Path, files: Sequence[str], overwrite: bool) -> list[str]:
    """The files that an earlier run's ``viz.json`` lists (to remove the stale ones); refuses earlier output
    (a ``viz.json``, or any file this run would write) unless ``overwrite``."""
    if prepare_output_dir(out, overwrite=overwrite, marker_names=[MANIFEST_NAME], what="prn viz output"):
        try:
            old = read_json(out / MANIFEST_NAME, what="prn viz manifest")
            return [f for f in old.get("files", []) if isinstance(f, str)] if isinstance(old, dict) else []
        except InvalidInputError:
            return []
    if not overwrite:
        # Leftovers of an interrupted run (no viz.json yet) are protected too.
        prepare_output_dir(out, overwrite=False, marker_names=files)
    return []


def _remove_earlier_output(out: Path, old_files: Sequence[str], keep: set[str]) -> None:
    """Remove the manifest, then the earlier run's files that this run does not write again."""
    (out / MANIFEST_NAME).unlink()
    for f in old_files:
        if f not in keep and f != MANIFEST_NAME and is_plain_relative(f):
            target = out / f
            if target.is_file():
                target.unlink()
                # A set dropped since the last run leaves no empty folder behind.
                if target.parent != out and not any(target.parent.iterdir()):
                    target.parent.rmdir()


def _remove_partial_output(out: Path, files: Sequence[str]) -> None:
    """Remove what an unfinished run wrote (its planned files, and the folders it left empty)."""
    for f in [*files, MANIFEST_NAME]:
        target = out / f
        if target.is_file():
            target.unlink()
    for folder in sorted({(out / f).parent for f in files}, key=lambda p: len(p.parts), reverse=True):
        if folder != out and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def is_plain_relative(name: str) -> bool:
    """A manifest entry that stays inside the output folder (no absolute path, '..', backslash or drive)."""
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and ".." not in parts and "\\" not in name and ":" not in name


# --------------------------------------------------------------------------------------------------------------
# drawing


def _draw_all(run: _Run, plan: Sequence[ImageJob],
              progress: Callable[[int, int], None] | None) -> tuple[list[int], int, int]:
    """Draw every image; returns (images each set lacks, overlays written, panels written)."""
    total = len(plan)
    if progress is not None:
        progress(0, total)
    missing = [0] * len(run.titles)
    n_overlays = n_panels = 0
    for k, job in enumerate(plan):
        photo = read_photo(job.photo) if job.photo is not None else None
        tiles, shape = _draw_overlays(run, job, photo)
        n_overlays += sum(t is not None for t in tiles) if run.overlays else 0
        for j, tile in enumerate(tiles):
            missing[j] += tile is None
        if run.panels:
            _write_panel(run, job, photo, tiles, shape)
            n_panels += 1
        if progress is not None:
            progress(k + 1, total)
    return missing, n_overlays, n_panels


def _draw_overlays(run: _Run, job: ImageJob,
                   photo: np.ndarray | None) -> tuple[list[np.ndarray | None], tuple[int, int] | None]:
    """One overlay per set (None where the set lacks the image), each written to ``<folder>/<stem>.png`` when
    overlays are on; returns (the overlays, the (h, w) of the first one, or None when every set lacks it)."""
    tiles: list[np.ndarray | None] = []
    shape = None
    for folder, pset, set_ann in zip(run.folders, run.psets, job.per_set):
        if set_ann is None:
            tiles.append(None)
            continue
        ids = pset.read_ids(set_ann)
        if photo is not None and photo.shape[:2] != ids.shape:
            raise InvalidInputError(
                f"{job.photo} is {photo.shape[1]}x{photo.shape[0]} but its panoptic PNG "
                f"{pset.png_path(set_ann)} is {ids.shape[1]}x{ids.shape[0]}"
                f"{orientation_hint(photo.shape[:2], ids.shape)}; the PNG must have the photo's size")
        tile = render_overlay(photo, ids, set_ann["segments_info"], run.categories, run.options,
                              source=where(pset, set_ann))
        shape = shape or tile.shape[:2]
        if run.overlays:
            write_png_atomic(run.out / folder / job.rel, tile)
        tiles.append(tile)
    return tiles, shape


def _write_panel(run: _Run, job: ImageJob, photo: np.ndarray | None, overlays: list[np.ndarray | None],
                 shape: tuple[int, int] | None) -> None:
    """``panels/<stem>.png``: [photo |] one tile per set, a "missing" tile where a set lacks the image."""
    h, w = shape or (photo.shape[:2] if photo is not None else _FALLBACK_TILE)
    missing = ["missing", f"no annotation of image {job.ann['image_id']}"]
    tiles = [t if t is not None else text_tile(h, w, missing) for t in overlays]
    titles = list(run.titles)
    if photo is not None:
        tiles.insert(0, photo)
        titles.insert(0, IMAGE_TILE_TITLE)
    options = run.options
    write_png_atomic(run.out / PANELS_DIRNAME / job.rel,
                     compose_panel(tiles, titles, title_height=options.title_height,
                                   title_font_size=options.title_font_size, padding=options.padding))


# --------------------------------------------------------------------------------------------------------------
# after drawing: the gallery and the manifest


def _write_gallery(run: _Run, plan: Sequence[ImageJob], gallery: Sequence[str]) -> Path:
    """``index.html`` over the panels (or the first set's overlays); returns its path."""
    entries = [(f, f"image {job.ann['image_id']} ({job.rel})") for f, job in zip(gallery, plan)]
    # Single-set galleries link only overlays that exist (the first set may not lack images, but be safe).
    entries = [(f, c) for f, c in entries if (run.out / f).is_file()]
    index_html = run.out / INDEX_NAME
    # the heading names the columns of the panels, the photo's included
    columns = ([IMAGE_TILE_TITLE] if run.panels and any(job.photo is not None for job in plan) else []) + run.titles
    write_text_atomic(index_html, gallery_html(columns if run.panels else run.titles[:1], entries))
    return index_html


def _write_manifest(run: _Run, plan: Sequence[ImageJob], files: list[str], photos_dir: Path | None) -> None:
    """``viz.json``, written last: what was drawn and which files were written; marks the folder as prn viz's."""
    run.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run.out / MANIFEST_NAME, {
        "tool": "prn viz",
        "sets": [{"title": t, "json": str(p.json_path), "png_dir": str(p.png_dir)}
                 for t, p in zip(run.titles, run.psets)],
        "images_dir": str(photos_dir) if photos_dir is not None else None,
        "images": [job.ann["image_id"] for job in plan],
        "files": files,
    })


__all__ = ["visualize", "INDEX_NAME", "MANIFEST_NAME", "IMAGE_TILE_TITLE", "is_plain_relative"]
