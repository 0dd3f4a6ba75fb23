"""Inference speed and peak memory of PRN as ``prn refine`` runs it: rendering the base, the network, and the
post-processing, with the post-processing's share of the time.

Inputs are real: a synthetic --size x --size image and its ground truth corrupted into a base prediction. The
network is a trained checkpoint (--weights) or, by default, randomly initialised per --archs (its residual base
prior makes it reproduce the base, so the maps look like a trained PRN's). ``--center-threshold`` defaults to 0
for random weights, so every local maximum of the heatmap is a centre and post-processing groups pixels against
``top_k`` (200) centres, its worst case.

- CPU: images/s at batch 1 with --threads intra-op threads; split into render / network / post-processing ms;
  peak RSS of the process;
- CUDA (when a GPU is present): the same, fp32 and with bf16 autocast, plus peak GPU memory.

With ``--weights`` it also times ``Refiner(weights)`` end to end as ``prn refine`` runs it (the checkpoint's stored
post-processing, the fusion with the base and the boundary re-cut included). ``--boundary-radius PX`` times it three
times in the same run: without the boundary re-cut (radius 0), with a PX re-cut whose refiner runs on the tiles
near the things' boundaries (as ``prn refine`` runs it), and the same with the refiner on the whole map. A checkpoint with
a thing classifier is also timed without its steps (relabelling, removing, cutting merged things, things left void),
in the same run.

Usage: python benchmarks/bench_refine.py [--archs tiny r50] [--size 512] [--images 5] [--threads 2] [--json]
       [--weights PRN.pt [--boundary-radius 2]]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch


def make_input(size: int):
    from prn_cli.perturb import corrupt
    from prn_cli.synth import SynthConfig, generate_sample, synth_categories

    cfg = SynthConfig(width=size, height=size, seed=5, max_things=14)
    rgb, ids, segs = generate_sample(cfg, 0)
    base_ids, base_segs = corrupt(ids, segs, synth_categories(), 0)
    return rgb, base_ids, base_segs


def build(arch: str, weights: str | None):
    from prn_cli.models.categories import CategoryMap
    from prn_cli.models.prn.model import build_model
    from prn_cli.models.prn.render import RenderConfig
    from prn_cli.synth import synth_categories
    from prn_cli.train import prn_model_config

    if weights:
        from prn_cli.predictors import Refiner

        refiner = Refiner(weights, device="cpu")
        return refiner.model, refiner.category_map, refiner.render_config
    cats = synth_categories()
    config = prn_model_config(arch, foreground_head=True, box_head=True, coordconv_encoder=True,
                              coordconv_decoder=True)
    return build_model(config, cats).eval(), CategoryMap.from_categories(cats), RenderConfig()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(model, cmap, render, sample, device, n: int, amp: bool, post_config) -> dict:
    from prn_cli.data import normalize
    from prn_cli.models.prn.postprocess import panoptic_from_outputs
    from prn_cli.refine_data import collate_refine, render_base

    rgb, base_ids, base_segs = sample
    thing = torch.zeros(cmap.num_classes, dtype=torch.bool, device=device)
    for cid in cmap.thing_ids:
        thing[cmap.class_index(cid)] = True
    parts = {"render": [], "network": [], "postprocess": []}
    for k in range(n + 1):
        sync(device)
        t0 = time.perf_counter()
        ids_t = torch.from_numpy(base_ids.astype(np.int64)).to(device)
        sem, maps = render_base(ids_t, base_segs, cmap, render)
        inputs, _ = collate_refine([({"image": normalize(rgb).to(device), "base_semantic": sem,
                                      "base_maps": maps}, None)])
        sync(device)
        t1 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(inputs)
        sync(device)
        t2 = time.perf_counter()
        h, w = base_ids.shape
        one = {key: v[0, :, :h, :w].float() for key, v in out.items()}
        with torch.inference_mode():
            seg_map, infos = panoptic_from_outputs(one, thing, post_config)
        seg_map.cpu()
        t3 = time.perf_counter()
        if k:  # the first pass warms up allocators and kernels
            parts["render"].append(t1 - t0)
            parts["network"].append(t2 - t1)
            parts["postprocess"].append(t3 - t2)
    total = sum(sum(v) for v in parts.values())
    row = {"images_per_s": n / total}
    for key, v in parts.items():
        row[f"{key}_ms"] = 1000 * sum(v) / n
    row["postprocess_share"] = sum(parts["postprocess"]) / total
    row["segments"] = len(infos)
    return row


def whole(weights: str, sample, n: int, boundary_radius: int | None = None, everywhere: bool = False,
          without_classifier: bool = False) -> dict:
    """``Refiner(weights)(rgb, base)`` end to end on the CPU, with the checkpoint's stored post-processing
    (``boundary_radius``: the re-cut's radius instead; ``everywhere``: its refiner on the whole map, not on tiles;
    ``without_classifier``: none of the thing classifier's steps: relabelling, removing, cutting merged things,
    things left void)."""
    from prn_cli.options import PostProcessOverrides
    from prn_cli.predictors import Refiner

    rgb, base_ids, base_segs = sample
    off = dict(classifier_confidence=0.0, classifier_remove_confidence=0.0, classifier_split_confidence=0.0,
               void_thing_confidence=0.0)
    refiner = Refiner(weights, device="cpu", overrides=PostProcessOverrides(
        boundary_radius=boundary_radius, **(off if without_classifier else {})))
    if everywhere:
        tiled = refiner.model.boundary.forward
        refiner.model.boundary.forward = lambda image, base_maps, region=None: tiled(image, base_maps)
    classifier_times = [0.0]

    def timed(step):
        def run_step(*args, **kwargs):
            t = time.perf_counter()
            out = step(*args, **kwargs)
            classifier_times[-1] += time.perf_counter() - t
            return out
        return run_step

    # the classifier's steps: relabelling and removing things, cutting merged things, naming the things left void
    refiner._reclassify_things = timed(refiner._reclassify_things)
    refiner._split_merged_things = timed(refiner._split_merged_things)
    refiner._find_void_things = timed(refiner._find_void_things)
    times = []
    for k in range(n + 1):
        t0 = time.perf_counter()
        refiner(rgb, base_ids, base_segs)
        if k:
            times.append(time.perf_counter() - t0)
        classifier_times.append(0.0)
    row = {"images_per_s": n / sum(times), "ms": 1000 * sum(times) / n}
    if any(classifier_times):   # the first (warm-up) image's time is left out, as above
        row["classifier_ms"] = 1000 * sum(classifier_times[1:]) / n
    return row


def main() -> None:
    from prn_cli.models.prn.postprocess import PostProcessConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", nargs="+", default=["tiny", "r50"])
    ap.add_argument("--weights", help="a trained PRN checkpoint instead of random weights (one row)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--center-threshold", type=float, default=None,
                    help="default: 0 for random weights (worst case), the trained value with --weights")
    ap.add_argument("--boundary-radius", type=int, default=None,
                    help="with --weights: time the whole refine with this boundary re-cut (refiner on tiles, and on "
                         "the whole map) and without one")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sample = make_input(args.size)
    rows = []
    for arch in ([args.weights] if args.weights else args.archs):
        model, cmap, render = build(arch, args.weights)
        threshold = args.center_threshold if args.center_threshold is not None else (None if args.weights else 0.0)
        post = PostProcessConfig(foreground_source="foreground", use_pred_bbox=True,
                                 **({"center_threshold": threshold} if threshold is not None else {}))
        row = {"arch": arch, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
               "size": args.size, "cpu": run(model, cmap, render, sample, torch.device("cpu"), args.images, False,
                                              post),
               "cpu_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if torch.cuda.is_available():
            dev = torch.device("cuda")
            model = model.to(dev)
            for amp in (False, True):
                torch.cuda.reset_peak_memory_stats()
                key = "cuda_bf16" if amp else "cuda_fp32"
                row[key] = run(model, cmap, render, sample, dev, max(args.images, 20), amp, post)
                row[key]["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        if args.weights:
            row["cpu_whole"] = whole(args.weights, sample, args.images, args.boundary_radius)
            if args.boundary_radius:
                row["cpu_whole_no_recut"] = whole(args.weights, sample, args.images, 0)
                row["cpu_whole_everywhere"] = whole(args.weights, sample, args.images, args.boundary_radius, True)
            if model.classifier is not None:
                row["cpu_whole_no_classifier"] = whole(args.weights, sample, args.images, args.boundary_radius,
                                                       without_classifier=True)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"PRN refine (render + network + post-processing with Foreground and PredBbox), {args.size}x{args.size}, "
          f"batch 1, {args.threads} CPU thread(s)")
    for r in rows:
        for key in ("cpu", "cuda_fp32", "cuda_bf16"):
            if key not in r:
                continue
            c = r[key]
            print(f"  {r['arch']:5s} {r['params_m']:6.2f} M params  {key:9s} {c['images_per_s']:6.2f} images/s  "
                  f"render {c['render_ms']:.1f} ms, network {c['network_ms']:.1f} ms, post {c['postprocess_ms']:.1f} "
                  f"ms ({100 * c['postprocess_share']:.0f}%), {c['segments']} segments"
                  + (f", peak GPU {c['peak_mem_mb']:.0f} MB" if "peak_mem_mb" in c else ""))
        if "cpu_whole" in r:
            print(f"  as prn refine runs it (the checkpoint's stored post-processing, fusion with the base and "
                  f"boundary re-cut included): {r['cpu_whole']['images_per_s']:.2f} images/s, "
                  f"{r['cpu_whole']['ms']:.1f} ms per image"
                  + (f", of which the thing classifier's steps {r['cpu_whole']['classifier_ms']:.1f} ms"
                     if "classifier_ms" in r["cpu_whole"] else ""))
        if "cpu_whole_no_recut" in r:
            print(f"  the same without the boundary re-cut: {r['cpu_whole_no_recut']['images_per_s']:.2f} images/s, "
                  f"{r['cpu_whole_no_recut']['ms']:.1f} ms per image")
        if "cpu_whole_everywhere" in r:
            print(f"  the same with the boundary refiner on the whole map instead of the tiles near things: "
                  f"{r['cpu_whole_everywhere']['images_per_s']:.2f} images/s, "
                  f"{r['cpu_whole_everywhere']['ms']:.1f} ms per image")
        if "cpu_whole_no_classifier" in r:
            print(f"  the same without the thing classifier's steps: "
                  f"{r['cpu_whole_no_classifier']['images_per_s']:.2f} "
                  f"images/s, {r['cpu_whole_no_classifier']['ms']:.1f} ms per image")
        print(f"  peak RSS {r['cpu_peak_rss_mb']:.0f} MB (process so far)")


if __name__ == "__main__":
    main()
