"""Where the time of ``prn segment`` and ``prn refine`` goes, per image, on the path the commands take: decoding,
input preparation, the network, post-processing, the change summary (refine) and PNG writing, with the shipped
tiny models (the shipped PRN has every Table 1 switch on: foreground branch, both CoordConvs, box branch with
PredBbox grouping, plus the base fusion it stores).

Each stage calls the function the command calls (``refine.prepare_item``: decode the photo and the base PNG, check
the annotation, render PRN's inputs; ``PanopticWriter.add``: area, bbox and the PNG). Inputs are --images synthetic --size x --size photos (``prn synth``'s generator) and, for refine, their ground truth
corrupted at strength 0.5 (``write_corrupted_set``) as the base, written to a temporary folder first.

Times are CPU seconds of this process (``time.process_time``; with --threads N the threads' times add up), which
a loaded machine disturbs far less than wall time; the medians over the images are reported. Images/s is
1 / (sum of the stage medians). Post-processing is everything between the network's output maps and the id map
that is written: PRN's grouping and the fusion with the base (``Refiner.postprocess``), MS-PanopticFPN's mask
pasting and panoptic fusion and the enlargement to the photo's size. It is timed directly where the predictor has
``postprocess`` and otherwise as predict_batch minus the network (earlier versions).

Usage: python benchmarks/bench_inference.py [--size 512] [--images 8] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path


def cpu_timer():
    start = time.process_time()
    return lambda: time.process_time() - start


def bench_refine(data: dict, base_dir: Path, out_dir: Path) -> dict:
    import torch

    from prn_cli.panoptic import PanopticWriter, load_set
    from prn_cli.predictors import Refiner
    from prn_cli.refine import category_translation, compare_segmentations, prepare_item
    from prn_cli.refine_data import collate_refine, pair_with_images
    from prn_cli.segment import list_images

    refiner = Refiner(device="cpu")
    base = load_set(base_dir)
    translation = category_translation(base, refiner.categories, None)
    pairs = pair_with_images(base, list_images([data["images_dir"]]))
    writer = PanopticWriter(out_dir / "refined" / "panoptic.json", out_dir / "refined" / "panoptic",
                            refiner.categories, overwrite=True)
    network_keys = ("image", "base_semantic", "base_maps")
    stages: dict[str, list[float]] = {k: [] for k in ("read+prepare", "network", "postprocess", "changes",
                                                     "write")}
    for k, item in enumerate(pairs):
        clock = cpu_timer()       # what prn refine does per image before the network: decode, check, render
        ready = prepare_item(refiner, item, base, translation)
        prepared, ids, segs = ready["inputs"], ready["base_ids"], ready["base_segments"]
        t_prepare = clock()
        inputs, _ = collate_refine([({key: prepared[key] for key in network_keys}, None)])
        clock = cpu_timer()
        with torch.inference_mode():
            outputs = refiner.model(inputs)
        t_network = clock()
        if hasattr(refiner, "postprocess"):
            h, w = prepared["base_semantic"].shape[-2:]
            clock = cpu_timer()
            with torch.inference_mode():
                pred = refiner.postprocess({key: v[0, :, :h, :w] for key, v in outputs.items()},
                                           prepared["photo_size"], (ids, segs), inputs=inputs)
            t_post = clock()
        else:
            clock = cpu_timer()
            pred = refiner.predict_prepared([prepared], bases=[(ids, segs)])[0]
            t_post = clock() - t_network
        clock = cpu_timer()
        compare_segmentations(ids, {s["id"]: s["category_id"] for s in segs}, pred.ids,
                              {s["id"]: s["category_id"] for s in pred.segments})
        t_changes = clock()
        clock = cpu_timer()
        writer.add({**item.image, "height": int(pred.ids.shape[0]), "width": int(pred.ids.shape[1])}, pred.ids,
                   pred.segments, file_name=item.annotation["file_name"])
        t_write = clock()
        if k:  # the first image warms up allocators and kernels
            for name, t in zip(stages, (t_prepare, t_network, t_post, t_changes, t_write)):
                stages[name].append(t)
    return summarise(stages)


def bench_segment(data: dict, out_dir: Path) -> dict:
    import numpy as np
    import torch

    from prn_cli.data import collate, normalize
    from prn_cli.io import read_photo
    from prn_cli.panoptic import PanopticWriter
    from prn_cli.predictors import Segmenter

    segmenter = Segmenter(device="cpu")
    writer = PanopticWriter(out_dir / "segmented" / "panoptic.json", out_dir / "segmented" / "panoptic",
                            segmenter.categories, overwrite=True)
    files = sorted(Path(data["images_dir"]).glob("*.jpg"))
    stages: dict[str, list[float]] = {k: [] for k in ("decode", "network", "postprocess", "write")}
    for k, f in enumerate(files):
        clock = cpu_timer()
        rgb = read_photo(f)
        t_decode = clock()
        batch, _, sizes = collate([(normalize(rgb), None)], size_divisibility=segmenter.size_divisibility)
        clock = cpu_timer()
        with torch.inference_mode():
            outputs = segmenter.model(batch, image_sizes=sizes)
        t_network = clock()
        clock = cpu_timer()
        pred = segmenter.predict_batch([rgb])[0]          # network + post-processing
        t_post = clock() - t_network
        clock = cpu_timer()
        writer.add({"id": k + 1, "file_name": f.name, "height": rgb.shape[0], "width": rgb.shape[1]},
                   np.asarray(pred.ids), pred.segments)
        t_write = clock()
        del outputs
        if k:
            for name, t in zip(stages, (t_decode, t_network, t_post, t_write)):
                stages[name].append(t)
    return summarise(stages)


def summarise(stages: dict[str, list[float]]) -> dict:
    ms = {name: 1000 * statistics.median(v) for name, v in stages.items()}
    total = sum(ms.values())
    return {"images_per_s": 1000 / total, "ms": ms, "postprocess_share": ms["postprocess"] / total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--commands", nargs="+", default=["segment", "refine"], choices=["segment", "refine"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch

    from prn_cli.perturb import write_corrupted_set
    from prn_cli.synth import SynthConfig, write_dataset

    torch.set_num_threads(args.threads)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="prn-bench-inference-") as tmp:
        tmp = Path(tmp)
        data = write_dataset(tmp / "data", SynthConfig(n=args.images + 1, width=args.size, height=args.size,
                                                       seed=5, split="val", max_things=14))
        write_corrupted_set(data["json"], tmp / "base", seed=0)
        for command in args.commands:
            if command == "segment":
                rows["segment"] = bench_segment(data, tmp)
            else:
                rows["refine"] = bench_refine(data, tmp / "base", tmp)
    result = {"size": args.size, "images": args.images, "threads": args.threads, **rows,
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"shipped tiny models, {args.size}x{args.size}, batch 1, {args.threads} thread(s), median CPU ms per image")
    for command in ("segment", "refine"):
        if command in rows:
            r = rows[command]
            parts = ", ".join(f"{k} {v:.1f}" for k, v in r["ms"].items())
            print(f"  prn {command:7s} {r['images_per_s']:5.2f} images/s  post-processing "
                  f"{100 * r['postprocess_share']:4.1f}%  ({parts})")
    print(f"  peak RSS {result['peak_rss_mb']} MB (whole process)")


if __name__ == "__main__":
    main()
