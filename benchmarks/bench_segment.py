"""Inference speed and peak memory of MS-PanopticFPN (the network plus panoptic fusion, as ``prn segment`` runs it).

For each architecture (default: tiny and r50, randomly initialised: speed does not depend on the weights, except
through the number of detections, which is capped at 100 by ``--keep-all``), images of --size x --size:

- CPU: images/s at batch 1 with --threads intra-op threads, peak RSS of the process;
- CUDA (when a GPU is present): images/s fp32 and with bf16 autocast, peak GPU memory.

Usage: python benchmarks/bench_segment.py [--archs tiny r50] [--size 512] [--images 5] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch


def build(arch: str, keep_all: bool):
    from prn_cli.models.ms_panoptic_fpn.model import build_model
    from prn_cli.synth import synth_categories
    from prn_cli.train import base_model_config

    config = base_model_config(arch)
    if keep_all:
        # An untrained head scores nothing above 0.05; let through the top boxes, as a trained model would.
        config.inference.score_threshold = 0.0
        config.inference.instance_score_threshold = 0.0
    return build_model(config, synth_categories()).eval()


def run(model, device: torch.device, size: int, n: int, amp: bool) -> float:
    images = torch.randn(1, 3, size, size, device=device)
    timings = []
    for k in range(n + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(images, image_sizes=[(size, size)])[0]
            model.panoptic(out)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k:  # the first pass warms up allocators and kernels
            timings.append(time.perf_counter() - t0)
    return n / sum(timings)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", nargs="+", default=["tiny", "r50"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep-all", action="store_true", default=True)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for arch in args.archs:
        model = build(arch, args.keep_all)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        row = {"arch": arch, "params_m": round(params, 2), "size": args.size,
               "cpu_images_per_s": run(model, torch.device("cpu"), args.size, args.images, False),
               "cpu_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if torch.cuda.is_available():
            dev = torch.device("cuda")
            model = model.to(dev)
            for amp in (False, True):
                torch.cuda.reset_peak_memory_stats()
                key = "cuda_bf16" if amp else "cuda_fp32"
                row[f"{key}_images_per_s"] = run(model, dev, args.size, max(args.images, 20), amp)
                row[f"{key}_peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"MS-PanopticFPN inference + fusion, {args.size}x{args.size}, batch 1, {args.threads} CPU thread(s)")
    for r in rows:
        line = (f"  {r['arch']:5s} {r['params_m']:6.2f} M params  CPU {r['cpu_images_per_s']:6.2f} images/s, "
                f"peak RSS {r['cpu_peak_rss_mb']:.0f} MB (process so far)")
        if "cuda_fp32_images_per_s" in r:
            line += (f" | CUDA fp32 {r['cuda_fp32_images_per_s']:.1f}/s ({r['cuda_fp32_peak_mem_mb']:.0f} MB), "
                     f"bf16 {r['cuda_bf16_images_per_s']:.1f}/s ({r['cuda_bf16_peak_mem_mb']:.0f} MB)")
        print(line)


if __name__ == "__main__":
    main()
