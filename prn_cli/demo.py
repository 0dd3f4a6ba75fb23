"""``prn demo``: the whole loop on freshly generated data, with no input and no download.

synthetic validation set -> stand-in base prediction (ground truth corrupted the way base models fail)
-> PQ report -> image | base | ground truth panels with an HTML gallery.

The segment and refine steps join this chain as the networks land.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

from .errors import OutputExistsError
from .evaluate import EvalReport, evaluate
from .panoptic import load_set, set_paths, write_json_atomic

ProgressFactory = Callable[[str], ContextManager[Callable[[int, int], None]]]


@dataclass
class DemoResult:
    out_dir: Path
    gt_json: Path
    base_json: Path
    report: EvalReport
    report_json: Path
    viz_dir: Path
    gallery: Path


def _no_progress(description: str):
    from contextlib import nullcontext

    return nullcontext(lambda done, total: None)


def run_demo(out_dir: str | os.PathLike = "prn-demo", *, n: int = 8, width: int = 320, height: int = 240,
             seed: int = 0, overwrite: bool = False, workers: int | None = None,
             progress: ProgressFactory = _no_progress) -> DemoResult:
    """Run the demo chain into ``out_dir`` (``data/``, ``base/``, ``eval.json``, ``viz/``) and return its results."""
    from .perturb import write_corrupted_set
    from .synth import SynthConfig, write_dataset
    from .visualize import visualize

    out = Path(out_dir)
    marker = out / "eval.json"
    if marker.exists() and not overwrite:
        raise OutputExistsError(f"{out} already holds a demo; pass --overwrite to replace it or choose another --out")
    data_dir = out / "data"
    with progress("synthetic data") as update:
        summary = write_dataset(data_dir, SynthConfig(n=n, width=width, height=height, seed=seed, split="val"),
                                overwrite=overwrite, progress=update)
    gt_json = Path(summary["json"])
    base_dir = out / "base"
    with progress("base prediction") as update:
        write_corrupted_set(gt_json, base_dir, seed=seed, overwrite=overwrite, progress=update)
    gt = load_set(gt_json)
    base = load_set(base_dir, need_categories=False)
    with progress("evaluating") as update:
        report = evaluate(gt, [base], names=["base"], workers=workers, progress=update)
    write_json_atomic(marker, report.to_dict())
    viz_dir = out / "viz"
    with progress("drawing panels") as update:
        visualize([("base", base), ("ground truth", gt)], viz_dir, images_dir=summary["images_dir"],
                  html=True, overwrite=overwrite, progress=update)
    return DemoResult(out, gt_json, set_paths(base_dir)[0], report, marker, viz_dir, viz_dir / "index.html")
