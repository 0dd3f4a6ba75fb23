"""CPU images/s of ``prn segment`` and ``prn refine`` with the PyTorch runtime and with onnxruntime, side by side.

Exports the checkpoints (default: the shipped base model and PRN) with :func:`prn_cli.onnx_export.export_onnx`,
then runs the same predictors as the commands on the same in-memory images (a --size x --size synthetic image;
for refine, its ground truth corrupted into a base), one runtime after the other, each with --threads intra-op
threads. Reported per task and runtime: images/s over --images images (after one warm-up image), the CPU time
per image (all threads; what a loaded machine distorts least), the network's time alone, and whether both
runtimes wrote the same ids. Needs the onnx extra.

Usage: python benchmarks/bench_onnx.py [--size 512] [--images 5] [--threads 2] [--base CKPT] [--prn CKPT] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _inputs(size: int, count: int):
    from prn_cli.perturb import corrupt
    from prn_cli.synth import SynthConfig, generate_sample, synth_categories

    cfg = SynthConfig(width=size, height=size, seed=5, max_things=14)
    out = []
    for index in range(count):
        rgb, ids, segs = generate_sample(cfg, index)
        base_ids, base_segs = corrupt(ids, segs, synth_categories(), index)
        out.append((rgb, base_ids, base_segs))
    return out


def _time(fn, items) -> tuple[float, float, list]:
    """Wall and CPU seconds (this process, all its threads) of ``fn`` over ``items``, and the results."""
    fn(items[0])   # warm-up: allocations, onnxruntime's first-run planning
    results = []
    t0, c0 = time.perf_counter(), time.process_time()
    for item in items:
        results.append(fn(item))
    return time.perf_counter() - t0, time.process_time() - c0, results


def _dense_seconds(model_call, items) -> float:
    """Seconds in the network alone (PyTorch module or onnxruntime session), over ``items``."""
    import torch

    with torch.inference_mode():
        model_call(items[0])
        t0 = time.perf_counter()
        for item in items:
            model_call(item)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base", type=Path, help="base checkpoint (default: the shipped one)")
    ap.add_argument("--prn", type=Path, help="PRN checkpoint (default: the shipped one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import numpy as np
    import torch

    from prn_cli.data import normalize
    from prn_cli.onnx_export import export_onnx
    from prn_cli.onnx_runtime import onnx_refiner, onnx_segmenter
    from prn_cli.predictors import Refiner, Segmenter
    from prn_cli.shipped import shipped_weights

    torch.set_num_threads(args.threads)
    base_ckpt = args.base or shipped_weights("base")
    prn_ckpt = args.prn or shipped_weights("prn")
    items = _inputs(args.size, args.images + 1)
    figures: dict = {"size": args.size, "images": args.images, "threads": args.threads, "cpu_count": os.cpu_count(),
                     "load_average_1min": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="prn-onnx-") as tmp:
        base_onnx = Path(tmp) / "base.onnx"
        prn_onnx = Path(tmp) / "prn.onnx"
        export_onnx(base_ckpt, base_onnx, height=args.size, width=args.size)
        export_onnx(prn_ckpt, prn_onnx, height=args.size, width=args.size)
        segmenters = {"torch": Segmenter(base_ckpt, device="cpu"),
                      "onnxruntime": onnx_segmenter(base_onnx, threads=args.threads)}
        refiners = {"torch": Refiner(prn_ckpt, device="cpu"),
                    "onnxruntime": onnx_refiner(prn_onnx, threads=args.threads)}
        prepared = [refiners["torch"].prepare(rgb, ids, segs) for rgb, ids, segs in items]
        for task, predictors in (("segment", segmenters), ("refine", refiners)):
            ids = {}
            for runtime, predictor in predictors.items():
                if task == "segment":
                    seconds, cpu, results = _time(lambda item: predictor(item[0]), items)
                    size_div = predictor.size_divisibility
                    d = -(-args.size // size_div) * size_div
                    batch = torch.nn.functional.pad(normalize(items[0][0]), (0, d - args.size, 0, d - args.size))[None]
                    dense = _dense_seconds(lambda _: predictor.model._features(batch), items)
                else:
                    seconds, cpu, results = _time(lambda item: predictor(*item), items)
                    from prn_cli.refine_data import collate_refine

                    batched = [collate_refine([(p, None)], size_divisibility=32)[0] for p in prepared]
                    dense = _dense_seconds(lambda k: predictor.model(batched[0]), items)
                ids[runtime] = [r.ids for r in results]
                figures[f"{task}_{runtime}"] = {"images_per_second": len(items) / seconds,
                                                "ms_per_image": 1000 * seconds / len(items),
                                                "cpu_ms_per_image": 1000 * cpu / len(items),
                                                "dense_ms_per_image": 1000 * dense / len(items)}
            figures[f"{task}_same_ids_fraction"] = float(np.mean([(a == b).mean() for a, b in
                                                                  zip(ids["torch"], ids["onnxruntime"])]))
            figures[f"{task}_speedup"] = (figures[f"{task}_onnxruntime"]["images_per_second"]
                                          / figures[f"{task}_torch"]["images_per_second"])
            figures[f"{task}_cpu_ratio"] = (figures[f"{task}_torch"]["cpu_ms_per_image"]
                                            / figures[f"{task}_onnxruntime"]["cpu_ms_per_image"])
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{args.images} + 1 warm-up images of {args.size}x{args.size}, {args.threads} threads, "
          f"{os.cpu_count()} cores, load average {figures['load_average_1min']:.1f}")
    for task in ("segment", "refine"):
        for runtime in ("torch", "onnxruntime"):
            f = figures[f"{task}_{runtime}"]
            print(f"  {task:8s} {runtime:12s} {f['images_per_second']:6.2f} images/s  "
                  f"{f['ms_per_image']:7.1f} ms/image, CPU {f['cpu_ms_per_image']:7.1f} ms/image  "
                  f"(network alone {f['dense_ms_per_image']:.1f} ms)")
        print(f"  {task:8s} onnxruntime / torch: {figures[f'{task}_speedup']:.2f}x the images/s, "
              f"{figures[f'{task}_cpu_ratio']:.2f}x less CPU time; same ids on "
              f"{100 * figures[f'{task}_same_ids_fraction']:.3f} % of pixels")


if __name__ == "__main__":
    main()
