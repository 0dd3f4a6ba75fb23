"""``prn eval`` against the COCO reference evaluator, side by side in one run, and against pure PNG decoding.

Makes N synthetic GT/prediction pairs (``prn synth`` ground truth, and a prediction made by corrupting it the way
base models fail), then runs, each in a fresh process so that times and peak RSS are its own, and alternating
prn and the reference so that both see the same machine load:

- reference: ``pq_compute`` of cocodataset/panopticapi, installed with ``pip install --no-deps panopticapi-lite``
  (a copy of its ``evaluation.py``; its own metadata pins numpy<2 and pulls packages evaluation does not use).
  It runs one process per core (``multiprocessing.cpu_count()``), as it always does;
- prn: :func:`prn_cli.evaluate.evaluate` with ``--workers`` processes and ``sum_chunks`` equal to the
  reference's process count, so that its floats can be compared bit for bit (the default sum costs the same);
- decode: decoding every GT and prediction PNG to ids with prn's decoder (:func:`prn_cli.panoptic.png_decoder`)
  and with every other installed one (Wuffs, libspng, Pillow), nothing else: the floor of any PQ evaluator;
- prn --per-image (with ``--per-image``): the same evaluation with every image's PQ and every segment's outcome,
  and its cost relative to the plain evaluation (runs interleaved with it, so both see the same load).

It prints the fastest run of each, the ratio of the reference's time to prn's (and of their medians), and
whether prn's result equals the reference's exactly (every float of ``All``/``Things``/``Stuff``/``per_class``).

Usage: python benchmarks/bench_eval.py [--n 300] [--size 640x480] [--workers 2] [--repeat 3] [--data DIR] [--per-image]
       [--json]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _cpu_seconds_of_live_children() -> float:
    """CPU time of this process's multiprocessing children that are still running: the reference never closes
    its pool, so its workers are reaped (and counted in RUSAGE_CHILDREN) only when the pool is garbage
    collected, which may not have happened yet. Linux /proc only."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for child in multiprocessing.active_children():
        fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


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


def _png_files(gt_json: Path, pred_dir: Path) -> list[str]:
    from prn_cli.panoptic import load_set

    gt = load_set(gt_json)
    pred = load_set(pred_dir, need_categories=False)
    return [str(gt.png_path(a)) for a in gt.annotations] + [str(pred.png_path(a)) for a in pred.annotations]


def _decode_files(paths: list[str]) -> int:
    from prn_cli.panoptic import read_id_png

    return sum(int(read_id_png(p).size) for p in paths)


def phase_decode(gt_json: Path, pred_dir: Path, workers: int, per_image: bool = False) -> dict:
    from concurrent.futures import ProcessPoolExecutor

    from prn_cli.evaluate import _reuse_freed_memory
    from prn_cli.panoptic import png_decoder

    files = _png_files(gt_json, pred_dir)
    _reuse_freed_memory()  # as prn eval's workers do, so that both measure decoding, not page faults
    t0 = time.perf_counter()
    _decode_files(files)
    one = time.perf_counter() - t0
    chunks = [files[k::workers] for k in range(workers)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, initializer=_reuse_freed_memory) as pool:
        list(pool.map(_decode_files, chunks))
    wall = time.perf_counter() - t0
    return {"decoder": png_decoder(), "seconds_1_process": one, "seconds_workers": wall, "png_files": len(files)}


def _plain(value):
    """numpy scalars (the reference returns some) -> Python floats, so results compare and serialize."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item"):
        return value.item()
    return value


def phase_eval(gt_json: Path, pred_dir: Path, workers: int, per_image: bool = False) -> dict:
    from prn_cli.evaluate import EvalOptions, evaluate
    from prn_cli.panoptic import png_decoder

    options = EvalOptions(sum_chunks=multiprocessing.cpu_count())
    cpu0 = _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    report = evaluate(gt_json, [pred_dir], workers=workers, options=options, per_image=per_image)
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0
    r = report.results[0]
    return {"seconds": seconds, "cpu_seconds": cpu, "images": r.num_images, "decoder": png_decoder(),
            "result": _plain(r.reference_dict()), "peak_rss_mb_parent": _peak_rss_mb(resource.RUSAGE_SELF),
            "peak_rss_mb_largest_worker": _peak_rss_mb(resource.RUSAGE_CHILDREN)}


def phase_reference(gt_json: Path, pred_dir: Path, workers: int, per_image: bool = False) -> dict:
    import contextlib
    import io

    from panopticapi.evaluation import pq_compute

    cpu0 = _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints progress per core
        result = pq_compute(str(gt_json), str(pred_dir / "panoptic.json"), str(gt_json.with_suffix("")),
                            str(pred_dir / "panoptic"))
    seconds = time.perf_counter() - t0
    cpu = (_cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0
           + _cpu_seconds_of_live_children())
    return {"seconds": seconds, "cpu_seconds": cpu, "processes": multiprocessing.cpu_count(),
            "result": _plain(result),
            "peak_rss_mb_parent": _peak_rss_mb(resource.RUSAGE_SELF)}


PHASES = {"decode": phase_decode, "eval": phase_eval, "reference": phase_reference}


def _run_phase(name: str, gt_json: Path, pred_dir: Path, workers: int, env: dict | None = None,
               per_image: bool = False) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", name, "--gt", str(gt_json), "--pred", str(pred_dir),
                          "--workers", str(workers)] + (["--per-image"] if per_image else []),
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"bench_eval: the {name} phase failed:\n{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _decoder_env(name: str) -> dict:
    return {**os.environ, "PRN_PNG_DECODER": name}


def _decoder_installed(name: str) -> bool:
    from prn_cli.panoptic import PNG_DECODERS

    return importlib.util.find_spec(PNG_DECODERS[name]) is not None


def _reference_available() -> bool:
    try:
        importlib.import_module("panopticapi.evaluation")
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each evaluator, alternating; the fastest counts")
    ap.add_argument("--data", type=Path, help="keep the generated pairs here (reused when present)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--per-image", action="store_true", help="also time evaluate(per_image=True)")
    ap.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    ap.add_argument("--gt", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--pred", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.phase:
        print(json.dumps(PHASES[args.phase](args.gt, args.pred, args.workers, args.per_image)))
        return
    if not _reference_available():
        raise SystemExit("bench_eval: the reference evaluator is not installed; "
                         "run `pip install --no-deps panopticapi-lite` first")

    width, height = (int(v) for v in args.size.lower().split("x"))
    from prn_cli.panoptic import png_decoder

    chosen = png_decoder()
    # the other installed decoders, each forced through PRN_PNG_DECODER (a missing one would fall back)
    others = [name for name in ("wuffs", "pyspng", "pillow")
              if name != chosen and _decoder_installed(name)]
    with tempfile.TemporaryDirectory(prefix="prn-bench-") as tmp:
        root = args.data or Path(tmp)
        t0 = time.perf_counter()
        gt_json, pred_dir = make_data(root, args.n, width, height, args.seed)
        made = time.perf_counter() - t0
        load_before = os.getloadavg()
        refs, prns, per_image = [], [], []
        for _ in range(args.repeat):
            refs.append(_run_phase("reference", gt_json, pred_dir, args.workers))
            prns.append(_run_phase("eval", gt_json, pred_dir, args.workers))
            if args.per_image:
                per_image.append(_run_phase("eval", gt_json, pred_dir, args.workers, per_image=True))
        prn_other = {name: _run_phase("eval", gt_json, pred_dir, args.workers, env=_decoder_env(name))
                     for name in others}
        decode = {name: min((_run_phase("decode", gt_json, pred_dir, args.workers, env=_decoder_env(name))
                             for _ in range(args.repeat)), key=lambda d: d["seconds_workers"])
                  for name in [chosen, *others]}
        load_after = os.getloadavg()
    ref_best = min(refs, key=lambda d: d["seconds"])
    prn_best = min(prns, key=lambda d: d["seconds"])
    ref_times = [r["seconds"] for r in refs]
    prn_times = [r["seconds"] for r in prns]
    ref_cpu = min(r["cpu_seconds"] for r in refs)
    prn_cpu = min(r["cpu_seconds"] for r in prns)
    identical = all(p["result"] == ref_best["result"] for p in prns + refs + per_image + list(prn_other.values()))
    figures = {
        "pairs": args.n, "size": args.size, "workers": args.workers, "cpu_count": os.cpu_count(),
        "load_average_1min_before_after": [load_before[0], load_after[0]], "data_seconds": made,
        "reference_seconds": ref_times, "prn_seconds": prn_times,
        "prn_seconds_other_decoders": {name: r["seconds"] for name, r in prn_other.items()},
        "speedup_best": ref_best["seconds"] / prn_best["seconds"],
        "speedup_median": statistics.median(ref_times) / statistics.median(prn_times),
        "reference_cpu_seconds": ref_cpu, "prn_cpu_seconds": prn_cpu, "speedup_cpu": ref_cpu / prn_cpu,
        "identical_to_reference": identical, "decoder": prn_best["decoder"],
        "decode_seconds_1_process": {name: d["seconds_1_process"] for name, d in decode.items()},
        "decode_seconds_workers": {name: d["seconds_workers"] for name, d in decode.items()},
        "prn_peak_rss_mb_parent": prn_best["peak_rss_mb_parent"],
        "prn_peak_rss_mb_largest_worker": prn_best["peak_rss_mb_largest_worker"],
        "reference_processes": ref_best["processes"], "pq": ref_best["result"]["All"]["pq"],
    }
    if per_image:
        figures["per_image_seconds"] = min(e["seconds"] for e in per_image)
        figures["per_image_over_eval"] = figures["per_image_seconds"] / prn_best["seconds"]
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    w, n = args.workers, args.n
    print(f"{n} GT/prediction pairs at {args.size}, {os.cpu_count()} cores, load average "
          f"{load_before[0]:.1f} before / {load_after[0]:.1f} after")
    print(f"  reference pq_compute  {ref_best['seconds']:.2f} s wall, {n / ref_best['seconds']:.0f} images/s "
          f"({ref_best['processes']} processes; runs: {[round(t, 2) for t in ref_times]})")
    print(f"  prn eval              {prn_best['seconds']:.2f} s wall, {n / prn_best['seconds']:.0f} images/s "
          f"({w} workers, {prn_best['decoder']}; runs: {[round(t, 2) for t in prn_times]})")
    print(f"  prn / reference       {figures['speedup_best']:.2f}x the throughput (fastest runs), "
          f"{figures['speedup_median']:.2f}x (medians)")
    print(f"  CPU time, all processes  reference {ref_cpu:.2f} s, prn {prn_cpu:.2f} s: "
          f"{figures['speedup_cpu']:.2f}x (fastest runs; does not depend on the machine's load)")
    print(f"  identical results     {'yes' if identical else 'NO'} (every float, prn with every decoder)")
    for name, r in prn_other.items():
        print(f"  prn eval with {name:<7} {r['seconds']:.2f} s wall")
    if per_image:
        print(f"  prn eval --per-image  {figures['per_image_seconds']:.2f} s wall, "
              f"{figures['per_image_over_eval']:.2f}x the plain evaluation")
    for name, d in decode.items():
        print(f"  pure decode to ids    {name:<7} {d['seconds_1_process']:.2f} s in 1 process, "
              f"{d['seconds_workers']:.2f} s wall in {w}{' (prn uses it)' if name == chosen else ''}")
    print(f"  prn peak RSS          parent {prn_best['peak_rss_mb_parent']:.0f} MB, "
          f"largest worker {prn_best['peak_rss_mb_largest_worker']:.0f} MB")
    print(f"  PQ of the corrupted predictions: {100 * figures['pq']:.1f}")


if __name__ == "__main__":
    main()
