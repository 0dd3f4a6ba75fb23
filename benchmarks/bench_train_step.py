"""Where the time of one ``prn train prn`` step goes on a CPU, and what the usual levers do to it.

Builds the training set ``prn train prn`` builds (``RefinementTrainingSet``: GT corrupted the way base models fail,
mixed with a real base set when ``--base`` is given, random crops), then measures separately:

- data: producing one batch (``--batch-size`` samples: decode, augment, corrupt, render, collate) in this process,
  which is what each DataLoader worker does per batch;
- step: forward (losses), backward, gradient clipping and the AdamW update on one fixed batch, for each variant:
  ``threads=N`` (intra-op threads), ``channels_last`` (model and inputs in NHWC), ``compile`` (``torch.compile``
  with the inductor backend on CPU; its compilation time is reported apart and not counted in s/step).

Times are wall seconds (the medians over ``--steps`` steps after ``--warmup`` untimed ones); run it on a quiet
machine, or pause other jobs. The model is the tiny PRN (``--model prn``) or the tiny MS-PanopticFPN
(``--model base``), with ``--config FILE`` on top, as ``prn train --config``.

Usage: python benchmarks/bench_train_step.py [--model prn|base] --data data/annotations/panoptic_train.json [--base BASE_SET]
       [--batch-size 4] [--crop 256] [--steps 8] [--variants threads=1,threads=2,channels_last,compile] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def make_batch_source(model: str, gt, base: str | None, crop: int, batch_size: int, config):
    """A function returning the next collated training batch of ``gt`` (a PanopticSet), as ``prn train`` builds it."""
    from prn_cli.data import PanopticTrainingSet, TrainTransform, collate
    from prn_cli.models.prn.render import RenderConfig
    from prn_cli.refine_data import RefineDataOptions, RefinementTrainingSet, collate_refine

    if model == "prn":
        dataset = RefinementTrainingSet(gt, base=base, options=RefineDataOptions(
            crop=crop, render=RenderConfig(offset_scale=config.base_offset_scale)))
        collate_fn = collate_refine
    else:
        dataset = PanopticTrainingSet(gt, transform=TrainTransform(crop_size=(crop, crop)))

        def collate_fn(items):
            return collate(items, size_divisibility=config.size_divisibility)

    counter = iter(range(10 ** 9))

    def batch():
        start = next(counter) * batch_size
        return collate_fn([dataset[(start + k) % len(dataset)] for k in range(batch_size)])

    return batch


def step_fn(model, optimizer, batch):
    import torch

    from prn_cli.engine import loss_terms

    inputs, targets, *rest = batch
    output = model(inputs, targets, image_sizes=rest[0]) if rest else model(inputs, targets)
    _, total = loss_terms(output)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(total.detach())


def time_variant(variant: str, build_model, categories, config, batch, steps: int, warmup: int) -> dict:
    import torch

    from prn_cli.engine import _to_device

    threads = int(variant.split("=")[1]) if variant.startswith("threads=") else 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(config, categories).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    compile_seconds = None
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        batch = _to_device(batch, torch.device("cpu"), channels_last=True)
    run = model
    if variant == "compile":
        run = torch.compile(model)
        t0 = time.perf_counter()
        step_fn(run, optimizer, batch)       # compiles forward and backward
        compile_seconds = time.perf_counter() - t0
    for _ in range(warmup):
        step_fn(run, optimizer, batch)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step_fn(run, optimizer, batch)
        times.append(time.perf_counter() - t0)
    return {"variant": variant, "threads": threads, "s_per_step": statistics.median(times),
            "s_per_step_min": min(times), "compile_seconds": compile_seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("prn", "base"), default="prn", help="prn train prn or prn train base")
    ap.add_argument("--data", required=True, help="training GT (a panoptic JSON or a prn synth root)")
    ap.add_argument("--base", help="real base predictions on the training images (as prn train prn --base)")
    ap.add_argument("--config", help="model config JSON on top of the tiny one (as prn train --config)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--variants", default="threads=1,threads=2,channels_last,compile")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from prn_cli.panoptic import load_set
    from prn_cli.train import base_model_config, prn_model_config

    torch.set_num_threads(1)
    if args.model == "prn":
        from prn_cli.models.prn.model import build_model
        config = prn_model_config("tiny", args.config)
    else:
        from prn_cli.models.ms_panoptic_fpn.model import build_model
        config = base_model_config("tiny", args.config)
    gt = load_set(args.data)
    categories = gt.categories
    batch = make_batch_source(args.model, gt, args.base, args.crop, args.batch_size, config)
    data_times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        sample = batch()
        data_times.append(time.perf_counter() - t0)
    results = []
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        try:
            results.append(time_variant(variant, build_model, categories, config, sample, args.steps,
                                        args.warmup))
        except Exception as exc:  # e.g. no C compiler for inductor: report, keep the other variants
            results.append({"variant": variant, "error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}"})
    figures = {"model": args.model, "batch_size": args.batch_size, "crop": args.crop, "data_s_per_batch": statistics.median(data_times),
               "steps": results}
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"prn train {args.model} step, tiny model, batch {args.batch_size}, crop {args.crop}, median of {args.steps} steps")
    print(f"  data: {figures['data_s_per_batch']:.3f} s per batch in one process (each DataLoader worker's cost)")
    for r in results:
        if "error" in r:
            print(f"  {r['variant']:<14} failed: {r['error']}")
            continue
        extra = f", compiled in {r['compile_seconds']:.0f} s" if r["compile_seconds"] is not None else ""
        print(f"  {r['variant']:<14} {r['s_per_step']:.3f} s/step (fastest {r['s_per_step_min']:.3f}){extra}")


if __name__ == "__main__":
    main()
