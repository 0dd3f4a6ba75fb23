"""Where the time of ``prn segment`` and ``prn refine`` goes, per image, on the path the commands take: decoding,
input preparation, the network, post-processing, the change summary (refine) and PNG writing, with the shipped
tiny models (the shipped PRN has every Table 1 switch on: foreground branch, both CoordConvs, box branch with
PredBbox grouping, plus the base fusion it stores).

Inputs are --images synthetic --size x --size photos (``prn synth``'s generator) and, for refine, their ground truth
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

    from prn_cli.io import read_photo
    from prn_cli.panoptic import load_set, read_id_png, write_id_png
    from prn_cli.predictors import Refiner
    from prn_cli.refine import compare_segmentations
    from prn_cli.refine_data import collate_refine

    refiner = Refiner(device="cpu")
    base = load_set(base_dir)
    images = {im["id"]: im for im in base.images}
    network_keys = ("image", "base_semantic", "base_maps")
    stages: dict[str, list[float]] = {k: [] for k in ("decode", "prepare", "network", "postprocess", "changes",
                                                     "write")}
    for k, ann in enumerate(base.annotations):
        clock = cpu_timer()
        rgb = read_photo(Path(data["images_dir"]) / images[ann["image_id"]]["file_name"])
        ids = read_id_png(base.png_path(ann))
        segs = [{"id": s["id"], "category_id": s["category_id"]} for s in ann["segments_info"]]
        t_decode = clock()
        clock = cpu_timer()
        prepared = refiner.prepare(rgb, ids, segs)
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
                                           prepared["photo_size"], (ids, segs))
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
        write_id_png(out_dir / f"refined_{k}.png", pred.ids)
        t_write = clock()
        if k:  # the first image warms up allocators and kernels
            for name, t in zip(stages, (t_decode, t_prepare, t_network, t_post, t_changes, t_write)):
                stages[name].append(t)
    return summarise(stages)


def bench_segment(data: dict, out_dir: Path) -> dict:
    import numpy as np
    import torch

    from prn_cli.data import collate, normalize
    from prn_cli.io import read_photo
    from prn_cli.panoptic import write_id_png
    from prn_cli.predictors import Segmenter

    segmenter = Segmenter(device="cpu")
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
        write_id_png(out_dir / f"segmented_{k}.png", np.asarray(pred.ids))
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
