"""Throughput and memory of ``prn eval`` against the floor, pure PNG decoding.

Makes N synthetic GT/prediction pairs (``prn synth`` ground truth, and a prediction made by corrupting it the way
base models fail), then measures, each in a fresh process so that peak RSS is its own:

- decode: Pillow decoding every GT and prediction PNG, nothing else (the floor of any PQ evaluator), in one
  process, and the wall time of the same split over the workers;
- eval: :func:`prn_cli.evaluate.evaluate` with ``--workers`` processes; images/s and peak RSS of the parent and
  of the largest worker.

- eval --per-image (with ``--per-image``): the same with every image's PQ and every segment's outcome, and its
  cost relative to the plain evaluation (measured in the same run).

Usage: python benchmarks/bench_eval.py [--n 300] [--size 640x480] [--workers 2] [--data DIR] [--per-image] [--json]

The COCO reference evaluator (panopticapi ``pq_compute``) takes about 5.1 s wall for 300 such pairs on this
project's 2-core machine, with a peak RSS of about 47 MB per process; ``--reference-seconds`` sets the figure
the speed-up is computed against.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def make_data(root: Path, n: int, width: int, height: int, seed: int) -> tuple[Path, Path]:
    from prn_cli.perturb import write_corrupted_set
    from prn_cli.synth import SynthConfig, write_dataset

    gt_json = root / "annotations" / "panoptic_val.json"
    if not gt_json.exists():
        write_dataset(root, SynthConfig(n=n, width=width, height=height, seed=seed, split="val"))
    pred_dir = root / "pred"
    if not (pred_dir / "panoptic.json").exists():
        write_corrupted_set(gt_json, pred_dir, seed=seed)
    return gt_json, pred_dir


def _decode_files(paths: list[str]) -> int:
    from PIL import Image

    pixels = 0
    for p in paths:
        with Image.open(p) as img:
            img.load()
            pixels += img.size[0] * img.size[1]
    return pixels


def phase_decode(gt_json: Path, pred_dir: Path, workers: int) -> dict:
    from concurrent.futures import ProcessPoolExecutor

    from prn_cli.panoptic import load_set

    gt = load_set(gt_json)
    pred = load_set(pred_dir, need_categories=False)
    files = [str(gt.png_path(a)) for a in gt.annotations] + [str(pred.png_path(a)) for a in pred.annotations]
    t0 = time.perf_counter()
    _decode_files(files)
    one = time.perf_counter() - t0
    chunks = [files[k::workers] for k in range(workers)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_decode_files, chunks))
    wall = time.perf_counter() - t0
    return {"decode_seconds_1_process": one, f"decode_seconds_{workers}_processes": wall, "png_files": len(files)}


def phase_eval(gt_json: Path, pred_dir: Path, workers: int, per_image: bool = False) -> dict:
    from prn_cli.evaluate import evaluate

    t0 = time.perf_counter()
    report = evaluate(gt_json, [pred_dir], workers=workers, per_image=per_image)
    seconds = time.perf_counter() - t0
    r = report.results[0]
    return {"eval_seconds": seconds, "images": r.num_images, "images_per_second": r.num_images / seconds,
            "pq": r.groups["All"]["pq"], "peak_rss_mb_parent": _peak_rss_mb(resource.RUSAGE_SELF),
            "peak_rss_mb_largest_worker": _peak_rss_mb(resource.RUSAGE_CHILDREN)}


def _run_phase(name: str, gt_json: Path, pred_dir: Path, workers: int, per_image: bool = False) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", name, "--gt", str(gt_json), "--pred", str(pred_dir),
                          "--workers", str(workers)] + (["--per-image"] if per_image else []),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each phase; the fastest is reported")
    ap.add_argument("--data", type=Path, help="keep the generated pairs here (reused when present)")
    ap.add_argument("--reference-seconds", type=float, default=5.1)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--per-image", action="store_true", help="also time evaluate(per_image=True)")
    ap.add_argument("--phase", choices=["decode", "eval"], help=argparse.SUPPRESS)
    ap.add_argument("--gt", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--pred", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.phase:
        if args.phase == "decode":
            print(json.dumps(phase_decode(args.gt, args.pred, args.workers)))
        else:
            print(json.dumps(phase_eval(args.gt, args.pred, args.workers, args.per_image)))
        return

    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="prn-bench-") as tmp:
        root = args.data or Path(tmp)
        t0 = time.perf_counter()
        gt_json, pred_dir = make_data(root, args.n, width, height, args.seed)
        made = time.perf_counter() - t0
        decode = min((_run_phase("decode", gt_json, pred_dir, args.workers) for _ in range(args.repeat)),
                     key=lambda d: d[f"decode_seconds_{args.workers}_processes"])
        evals, per_image = [], []
        for _ in range(args.repeat):   # interleaved, so that both see the same load
            evals.append(_run_phase("eval", gt_json, pred_dir, args.workers))
            if args.per_image:
                per_image.append(_run_phase("eval", gt_json, pred_dir, args.workers, per_image=True))
        best = min(evals, key=lambda d: d["eval_seconds"])
    figures = {
        "pairs": args.n, "size": args.size, "workers": args.workers, "cpu_count": os.cpu_count(),
        "data_seconds": made, **decode, **best,
        "eval_seconds_all_runs": [round(e["eval_seconds"], 3) for e in evals],
        "eval_over_decode_wall": best["eval_seconds"] / decode[f"decode_seconds_{args.workers}_processes"],
        "speedup_vs_reference": args.reference_seconds / best["eval_seconds"],
    }
    if per_image:
        figures["per_image_seconds"] = min(e["eval_seconds"] for e in per_image)
        figures["per_image_over_eval"] = figures["per_image_seconds"] / best["eval_seconds"]
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    w = args.workers
    print(f"{args.n} GT/prediction pairs at {args.size}, {w} worker(s), {os.cpu_count()} cores")
    print(f"  pure PNG decode       {decode['decode_seconds_1_process']:.2f} s in 1 process, "
          f"{decode[f'decode_seconds_{w}_processes']:.2f} s wall in {w}")
    print(f"  prn eval              {best['eval_seconds']:.2f} s wall, {best['images_per_second']:.0f} images/s "
          f"(runs: {figures['eval_seconds_all_runs']})")
    print(f"  eval / decode wall    {figures['eval_over_decode_wall']:.2f}x")
    if per_image:
        print(f"  eval --per-image      {figures['per_image_seconds']:.2f} s wall, "
              f"{figures['per_image_over_eval']:.2f}x the plain evaluation")
    print(f"  vs reference {args.reference_seconds:.1f} s   {figures['speedup_vs_reference']:.2f}x faster")
    print(f"  peak RSS              parent {best['peak_rss_mb_parent']:.0f} MB, "
          f"largest worker {best['peak_rss_mb_largest_worker']:.0f} MB")
    print(f"  PQ of the corrupted predictions: {100 * best['pq']:.1f}")


if __name__ == "__main__":
    main()
