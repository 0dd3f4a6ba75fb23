"""Refine a transformers Mask2Former's panoptic output in memory with PRN, and write both as COCO panoptic sets.

The chain is the one you run with a real model: Mask2Former outputs -> the image processor's own
``post_process_panoptic_segmentation`` -> ``prn_cli.convert.from_hf`` (its ``label_id`` matched to PRN's
categories by name through ``id2label``) -> ``Refiner`` -> ``PanopticWriter``. No weights are downloaded: the
"model" here is a stand-in whose query logits encode ground truth corrupted the way base models fail (coarse
masks, dropped, merged and split instances, wrong classes), at a quarter of the image resolution as
Mask2Former predicts masks. With a trained model, replace ``predict`` by::

    inputs = processor(images=rgb, return_tensors="pt")
    outputs = model(**inputs)           # Mask2FormerForUniversalSegmentation

and pass its ``model.config.id2label``; its labels must name PRN's categories (train PRN on your dataset).

    python examples/refine_mask2former_in_memory.py [--out DIR] [--n 6]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import Mask2FormerImageProcessor
from transformers.models.mask2former.modeling_mask2former import Mask2FormerForUniversalSegmentationOutput

from prn_cli.convert import ConvertOptions, from_hf
from prn_cli.evaluate import evaluate
from prn_cli.io import read_photo
from prn_cli.panoptic import PanopticWriter, load_set
from prn_cli.perturb import CorruptionConfig, corrupt
from prn_cli.predictors import Refiner
from prn_cli.synth import SynthConfig, write_dataset


def predict(ids: np.ndarray, segments: list[dict], label_of: dict[int, int]) -> Mask2FormerForUniversalSegmentationOutput:
    """Mask2Former-shaped outputs with one query per segment: class logits peaked at its label (score ~0.9),
    mask logits at 1/4 resolution (the mean of each 4x4 block, as a soft mask), plus one "no object" query."""
    h, w = ids.shape
    hq, wq = -(-h // 4), -(-w // 4)
    num_labels = len(label_of)
    cls = torch.full((1, len(segments) + 1, num_labels + 1), -4.0)
    masks = torch.full((1, len(segments) + 1, hq, wq), -10.0)
    padded = np.zeros((hq * 4, wq * 4), dtype=ids.dtype)
    padded[:h, :w] = ids
    for q, s in enumerate(segments):
        cls[0, q, label_of[s["category_id"]]] = 4.0
        share = (padded == s["id"]).reshape(hq, 4, wq, 4).mean(axis=(1, 3))
        masks[0, q] = torch.from_numpy((share * 2 - 1) * 10).float()
    cls[0, -1, num_labels] = 4.0        # Mask2Former's "no object" class: dropped by the post-processing
    return Mask2FormerForUniversalSegmentationOutput(class_queries_logits=cls, masks_queries_logits=masks)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="where to write the data and the sets (default: a temporary folder)")
    ap.add_argument("--n", type=int, default=6, help="synthetic val images")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        data = write_dataset(root / "data", SynthConfig(n=args.n, width=256, height=192, seed=5, split="val",
                                                        class_colour=0.7), overwrite=True)
        gt = load_set(data["json"])
        refiner = Refiner(device="cpu")             # the shipped PRN; its categories are the dataset's
        # a model trained on these categories: label i = the i-th category in id order, named as the category
        ordered = sorted(refiner.categories, key=lambda c: c["id"])
        id2label = {i: c["name"] for i, c in enumerate(ordered)}
        label_of = {c["id"]: i for i, c in enumerate(ordered)}
        stuff_labels = {label_of[c["id"]] for c in ordered if not c["isthing"]}
        processor = Mask2FormerImageProcessor()
        options = ConvertOptions(id2label=id2label)

        base_writer = PanopticWriter(root / "base" / "panoptic.json", root / "base" / "panoptic", refiner.categories,
                                     overwrite=True)
        refined_writer = PanopticWriter(root / "refined" / "panoptic.json", root / "refined" / "panoptic",
                                        refiner.categories, overwrite=True)
        base_segments = 0
        for k, (ann, image) in enumerate(zip(gt.annotations, gt.images)):
            rgb = read_photo(root / "data" / "images" / "val" / image["file_name"])
            other_ids, other_segments = corrupt(gt.read_ids(ann), ann["segments_info"], gt.categories, k,
                                                CorruptionConfig(strength=0.6))
            outputs = predict(other_ids, other_segments, label_of)
            result = processor.post_process_panoptic_segmentation(outputs, label_ids_to_fuse=stuff_labels,
                                                                  target_sizes=[rgb.shape[:2]])[0]
            base = from_hf(result, refiner.categories, options)      # (ids, segments_info) in PRN's categories
            refined = refiner(rgb, base)
            base_writer.add(image, *base)
            refined_writer.add(image, refined.ids, refined.segments)
            base_segments += len(base[1])
        base_writer.commit()
        refined_writer.commit()
        report = evaluate(data["json"], [root / "base", root / "refined"], names=["base", "refined"], workers=0)

    pq_base, pq_refined = (r.groups["All"]["pq"] for r in report.results)
    print(f"{len(gt.annotations)} images: Mask2Former output (post-processed by transformers) PQ {100 * pq_base:.1f}"
          f" -> refined by PRN {100 * pq_refined:.1f} ({100 * (pq_refined - pq_base):+.1f})")
    if args.out:
        print(f"COCO panoptic sets: {args.out / 'base'} and {args.out / 'refined'}")
    return {"images": len(gt.annotations), "base_segments": base_segments, "pq_base": pq_base,
            "pq_refined": pq_refined}


if __name__ == "__main__":
    main()
