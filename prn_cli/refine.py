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
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import InvalidInputError, fail
from .panoptic import PanopticWriter, check_annotation, load_set, read_id_png, read_json, set_paths

CHANGE_KEYS = ("segments_base", "segments_refined", "added", "removed", "split", "merged", "relabelled",
               "pixels_changed", "pixels")


@dataclass
class RefineOptions:
    device: str = "auto"
    batch_size: int = 1
    #: overrides of the checkpoint's post-processing config (None values keep the trained value)
    postprocess: dict = field(default_factory=dict)
    #: JSON file mapping base category ids to the checkpoint's ({"<base id>": <checkpoint id>, ...})
    category_map: str | None = None


@dataclass
class RefineResult:
    json_path: Path
    written: int
    failed: list[tuple[str, str]]
    changes: dict                       # totals over the written images, keys CHANGE_KEYS
    per_image: list[dict]               # {"image_id", "file_name", **changes}


# --------------------------------------------------------------------------------------------------------------
# what changed


def compare_segmentations(base_ids: np.ndarray, base_cats: dict[int, int], ref_ids: np.ndarray,
                          ref_cats: dict[int, int]) -> dict:
    """Segment-level changes from ``base`` to ``refined`` (see the module docstring). ``*_cats`` map segment id
    -> category id; id 0 is void in both."""
    b_uniq, b_inv = np.unique(base_ids.ravel(), return_inverse=True)
    r_uniq, r_inv = np.unique(ref_ids.ravel(), return_inverse=True)
    nb, nr = len(b_uniq), len(r_uniq)
    inter = np.bincount(b_inv.astype(np.int64) * nr + r_inv, minlength=nb * nr).reshape(nb, nr)
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
        elif not any(r_match[r] < 0 and (b_inside_r[:, r] & b_real).sum() >= 2 for r in np.flatnonzero(b_inside_r[b])):
            removed += 1
    for r in np.flatnonzero(r_real & (r_match < 0)):
        parts = np.flatnonzero(b_inside_r[:, r] & b_real)
        if len(parts) >= 2:
            merged += 1
        elif not any(b_match[b] < 0 and (r_inside_b[b] & r_real).sum() >= 2 for b in np.flatnonzero(r_inside_b[:, r])):
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


def _category_translation(base, ckpt_categories: list[dict], map_file: str | None) -> dict[int, int]:
    """base category id -> checkpoint category id, for every id the base uses."""
    ckpt = {int(c["id"]): c for c in ckpt_categories}
    used = sorted({int(s["category_id"]) for a in base.annotations for s in a["segments_info"]})
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


def load_refiner(weights: str | os.PathLike, device, postprocess_overrides: dict | None = None):
    """``(model, category_map, render_config, postprocess_config, categories)`` from a PRN checkpoint."""
    import dataclasses

    from .checkpoint import load_checkpoint
    from .models.categories import CategoryMap
    from .models.prn.config import PRNConfig
    from .models.prn.model import build_model
    from .models.prn.postprocess import PostProcessConfig
    from .models.prn.render import RenderConfig

    ckpt = load_checkpoint(weights, kind="prn")
    cfg = ckpt["config"]
    config = PRNConfig.from_dict(cfg["model"])
    render = RenderConfig(**cfg.get("render", {}))
    post = dict(cfg.get("postprocess", {}))
    for key, value in (postprocess_overrides or {}).items():
        if value is None:
            continue
        if key not in {f.name for f in dataclasses.fields(PostProcessConfig)}:
            raise ValueError(f"unknown post-processing option {key}")
        post[key] = value
    try:
        postprocess = PostProcessConfig(**post)
    except ValueError as exc:
        raise InvalidInputError(f"post-processing options: {exc}") from None
    if postprocess.foreground_source == "foreground" and not config.foreground_head:
        raise InvalidInputError(f"{weights}: this PRN has no foreground branch; use --foreground-source semantic")
    if postprocess.use_pred_bbox and not config.box_head:
        raise InvalidInputError(f"{weights}: this PRN has no box branch; leave out --pred-bbox")
    categories = ckpt["categories"]
    model = build_model(config, categories)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    return model, CategoryMap.from_categories(categories), render, postprocess, categories


def resolve_device(choice: str):
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"--device {choice}: CUDA is not available on this machine; use --device cpu")
    return torch.device(choice)


def refine(base: str | os.PathLike, images: Sequence[str | os.PathLike] | str | os.PathLike,
           weights: str | os.PathLike, out_dir: str | os.PathLike, *, options: RefineOptions = RefineOptions(),
           overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
           on_failure: Callable[[str, str], None] | None = None) -> RefineResult:
    """Refine the base set ``base`` (paired with ``images``) with the PRN checkpoint ``weights`` into
    ``out_dir`` (panoptic.json + panoptic/)."""
    import torch

    from .refine_data import pair_with_images
    from .segment import list_images

    device = resolve_device(options.device)
    model, category_map, render_config, post_config, categories = load_refiner(weights, device, options.postprocess)
    base_set = load_set(base, need_categories=False)
    translation = _category_translation(base_set, categories, options.category_map)
    image_inputs = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    pairs = pair_with_images(base_set, list_images(image_inputs))
    json_path, png_dir = set_paths(out_dir)
    writer = PanopticWriter(json_path, png_dir, categories, overwrite=overwrite,
                            info={"description": "prn refine (PRN)", "weights": str(weights),
                                  "base": str(base_set.json_path)})
    base_cat_ids = {int(c["id"]): c for c in categories}
    failed: list[tuple[str, str]] = []
    per_image: list[dict] = []
    total = len(pairs)
    if progress:
        progress(0, total)
    bs = max(1, int(options.batch_size))
    with torch.inference_mode():
        for start in range(0, total, bs):
            ready = []
            for item in pairs[start:start + bs]:
                try:
                    ready.append(_prepare(item, base_set, translation, base_cat_ids, category_map, render_config))
                except InvalidInputError as exc:
                    failed.append((str(item.image_path), exc.message))
                    if on_failure:
                        on_failure(str(item.image_path), exc.message)
            if ready:
                for prep, (ids, segs) in zip(ready, _refine_batch(model, ready, category_map, post_config, device)):
                    item, base_ids, base_segs = prep["item"], prep["base_ids"], prep["base_segments"]
                    image = {**item.image, "height": int(ids.shape[0]), "width": int(ids.shape[1])}
                    writer.add(image, ids, segs, file_name=item.annotation["file_name"])
                    change = compare_segmentations(base_ids, {s["id"]: s["category_id"] for s in base_segs}, ids,
                                                   {s["id"]: s["category_id"] for s in segs})
                    per_image.append({"image_id": item.annotation["image_id"],
                                      "file_name": item.annotation["file_name"], **change})
            if progress:
                progress(min(start + bs, total), total)
    writer.commit()
    totals = {k: sum(p[k] for p in per_image) for k in CHANGE_KEYS}
    return RefineResult(json_path, len(per_image), failed, totals, per_image)


def _prepare(item, base_set, translation, ckpt_cats, category_map, render_config) -> dict:
    import torch

    from .data import load_rgb, normalize
    from .refine_data import render_base

    rgb = load_rgb(item.image_path)
    ann = item.annotation
    png = base_set.png_path(ann)
    ids = read_id_png(png)
    if ids.shape != rgb.shape[:2]:
        raise InvalidInputError(f"{png}: base PNG is {ids.shape[1]}x{ids.shape[0]} but its image "
                                f"{item.image_path} is {rgb.shape[1]}x{rgb.shape[0]}; predict the base at the "
                                "image's size")
    segs = [{"id": int(s["id"]), "category_id": translation.get(int(s["category_id"]), int(s["category_id"])),
             "iscrowd": 0} for s in ann["segments_info"]]
    check_annotation(base_set, {**ann, "segments_info": segs}, ids, ckpt_cats, check_area=False,
                     image_info={"width": rgb.shape[1], "height": rgb.shape[0]})
    base_sem, base_maps = render_base(torch.from_numpy(ids.astype(np.int64)), segs, category_map, render_config,
                                      where=str(png))
    return {"item": item, "base_ids": ids, "base_segments": segs,
            "inputs": {"image": normalize(rgb), "base_semantic": base_sem, "base_maps": base_maps}}


def _refine_batch(model, ready: list[dict], category_map, post_config, device) -> list[tuple[np.ndarray, list]]:
    import torch

    from .models.prn.postprocess import panoptic_from_outputs
    from .refine_data import collate_refine
    from .synth import random_segment_ids

    inputs, _ = collate_refine([(p["inputs"], None) for p in ready], size_divisibility=32)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    outputs = model(inputs)
    thing = torch.zeros(category_map.num_classes, dtype=torch.bool, device=device)
    for cid in category_map.thing_ids:
        thing[category_map.class_index(cid)] = True
    results = []
    for i, prep in enumerate(ready):
        h, w = prep["base_ids"].shape
        one = {k: v[i, :, :h, :w] for k, v in outputs.items()}
        seg_map, infos = panoptic_from_outputs(one, thing, post_config)
        seg_map = seg_map.cpu().numpy()
        # COCO-like ids (random colours), reproducible per image
        rng = np.random.default_rng(np.random.SeedSequence([int(h), int(w), len(infos), 11]))
        new_ids = random_segment_ids(rng, len(infos))
        lut = np.zeros(int(seg_map.max(initial=0)) + 1, np.uint32)
        segs = []
        for info, sid in zip(infos, new_ids):
            lut[info["index"]] = sid
            segs.append({"id": int(sid), "category_id": int(category_map.class_ids[info["class_index"]]),
                         "iscrowd": 0, "score": round(float(info.get("score", 1.0)), 4)})
        results.append((lut[seg_map], segs))
    return results
