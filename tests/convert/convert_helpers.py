"""Predictions encoded the way each framework encodes them, built from a COCO panoptic ground truth, for the
tests of this folder (imported as ``from convert_helpers import ...``; the folder has no ``__init__.py``).

Each encoder follows the framework's own convention independently of prn_cli.convert (see
/work/shared/reference/formats.md), so a conversion that scores PQ 100 against the GT is lossless.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import prn_forkserver
from prn_cli.panoptic import PanopticWriter, id2rgb, load_set

DATA = Path(__file__).resolve().parents[1] / "data"
COCO_SAMPLE = DATA / "coco_panoptic_sample"
GT_JSON = COCO_SAMPLE / "panoptic_examples.json"
TWO_CHANNEL_DIR = COCO_SAMPLE / "panoptic_examples_2ch_format"


def prn(*args, timeout=300) -> subprocess.CompletedProcess:
    """``prn ARGS``, forked from a server that imported prn once (tests/prn_forkserver.py)."""
    return subprocess.run([*prn_forkserver.command(), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=timeout)


def gt_images():
    """[(stem, ids, segments_info, categories)] of the COCO sample ground truth (2 images, 133 categories)."""
    gt = load_set(GT_JSON)
    return gt, [(Path(a["file_name"]).stem, gt.read_ids(a), a["segments_info"]) for a in gt.annotations]


def sorted_categories(categories):
    return sorted(categories, key=lambda c: c["id"])


def contiguous(categories) -> dict[int, int]:
    """category id -> contiguous index (the i-th category in id order: detectron2's and mmdet's labels)."""
    return {c["id"]: i for i, c in enumerate(sorted_categories(categories))}


def instance_numbers(segments, categories) -> dict[int, int]:
    """segment id -> instance: things 1.. per category, stuff 0 (Panoptic-DeepLab, mmdet, deeplab2)."""
    things = {c["id"] for c in categories if c["isthing"]}
    count: dict[int, int] = {}
    out = {}
    for s in segments:
        if s["category_id"] in things:
            count[s["category_id"]] = count.get(s["category_id"], 0) + 1
            out[s["id"]] = count[s["category_id"]]
        else:
            out[s["id"]] = 0
    return out


def paint(ids, values: dict[int, int], void: int, dtype=np.int64) -> np.ndarray:
    out = np.full(ids.shape, void, dtype=dtype)
    for sid, v in values.items():
        out[ids == sid] = v
    return out


def detectron2_pair(ids, segments, categories, *, separated=False):
    """``outputs["panoptic_seg"]`` of PanopticFPN / Mask2Former in detectron2: ids 1.., contiguous category_id."""
    import torch

    things = {c["id"] for c in categories if c["isthing"]}
    index = contiguous(categories)
    thing_index = {c["id"]: i for i, c in enumerate(c for c in sorted_categories(categories) if c["isthing"])}
    stuff_index = {c["id"]: i + 1 for i, c in enumerate(c for c in sorted_categories(categories) if not c["isthing"])}
    new_ids = {s["id"]: k for k, s in enumerate(segments, start=1)}
    infos = []
    for s in segments:
        isthing = s["category_id"] in things
        label = (thing_index if isthing else stuff_index)[s["category_id"]] if separated else index[s["category_id"]]
        info = {"id": new_ids[s["id"]], "isthing": isthing, "category_id": label}
        info.update({"score": 0.9, "instance_id": new_ids[s["id"]]} if isthing else {"area": 1})
        infos.append(info)
    return torch.from_numpy(paint(ids, new_ids, 0, np.int32)), infos


def deeplab_map(ids, segments, categories, *, divisor=1000, label="index", void=-1) -> np.ndarray:
    """``category * divisor + instance`` (Panoptic-DeepLab: contiguous, -1 void; deeplab2: ids, its void)."""
    index = contiguous(categories)
    inst = instance_numbers(segments, categories)
    values = {s["id"]: (index[s["category_id"]] if label == "index" else s["category_id"]) * divisor + inst[s["id"]]
              for s in segments}
    return paint(ids, values, void)


def mmdet_map(ids, segments, categories) -> np.ndarray:
    """mmdetection: ``label + instance * 1000``, void = number of classes."""
    index = contiguous(categories)
    inst = instance_numbers(segments, categories)
    values = {s["id"]: index[s["category_id"]] + inst[s["id"]] * 1000 for s in segments}
    return paint(ids, values, len(categories))


def mmdet_png_rgb(ids, segments, categories) -> np.ndarray:
    """DetInferencer's ``_panoptic_seg.png``: void (label == num classes) set to 0, then id2rgb."""
    pan = mmdet_map(ids, segments, categories)
    pan[pan % 1000 == len(categories)] = 0
    return id2rgb(pan)


def hf_result(ids, segments, categories, *, split_stuff=False, extra_queries=()):
    """transformers' real ``post_process_panoptic_segmentation`` on Mask2Former-shaped outputs whose queries are the
    GT segments (class logits peaked at the contiguous label, mask logits +-20). The processor resizes the masks
    to 384x384 and back; with near-binary masks of a crop about that size the output is exactly the GT (the tests
    check it through PQ 100). ``split_stuff``: each stuff segment comes as
    two queries of its (fused) label, so segments_info lists its id twice. ``extra_queries``: (label, mask)."""
    import torch
    from transformers import Mask2FormerImageProcessor
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerForUniversalSegmentationOutput

    index = contiguous(categories)
    things = {c["id"] for c in categories if c["isthing"]}
    queries = []
    for s in segments:
        mask = ids == s["id"]
        if split_stuff and s["category_id"] not in things:
            rows = np.flatnonzero(mask.any(1))
            half = rows[len(rows) // 2]
            top = mask.copy()
            top[half:] = False
            queries += [(index[s["category_id"]], top), (index[s["category_id"]], mask & ~top)]
        else:
            queries.append((index[s["category_id"]], mask))
    queries += list(extra_queries)
    n = len(categories)
    cls = torch.full((1, len(queries), n + 1), -20.0)
    masks = torch.full((1, len(queries), *ids.shape), -20.0)
    for q, (label, mask) in enumerate(queries):
        cls[0, q, label] = 20.0
        masks[0, q][torch.from_numpy(mask)] = 20.0
    outputs = Mask2FormerForUniversalSegmentationOutput(class_queries_logits=cls, masks_queries_logits=masks)
    stuff_labels = {index[c["id"]] for c in categories if not c["isthing"]}
    return Mask2FormerImageProcessor().post_process_panoptic_segmentation(
        outputs, label_ids_to_fuse=stuff_labels, target_sizes=[ids.shape])[0]


def id2label(categories) -> dict[str, str]:
    return {str(i): c["name"] for i, c in enumerate(sorted_categories(categories))}


def crop_set(out_dir: Path, size: int = 384) -> Path:
    """The sample GT cropped to its top-left size x size at most (segments that keep pixels), as a set in
    ``out_dir``."""
    gt, images = gt_images()
    json_path = out_dir / "gt_crop.json"
    with PanopticWriter(json_path, out_dir / "gt_crop", gt.categories) as writer:
        for (stem, ids, segs), rec in zip(images, gt.images):
            crop = ids[:size, :size]
            present = set(np.unique(crop).tolist())
            writer.add({**rec, "width": crop.shape[1], "height": crop.shape[0]}, crop,
                       [s for s in segs if s["id"] in present], file_name=f"{stem}.png")
    return json_path


def pq(gt, pred) -> float:
    from prn_cli.evaluate import evaluate

    return evaluate(gt, [pred], workers=0).results[0].groups["All"]["pq"]
