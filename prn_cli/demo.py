"""``prn demo``: the whole pipeline on freshly generated data, with the shipped models and no download.

synthetic validation set -> ``prn segment`` (the shipped MS-PanopticFPN) -> ``prn refine`` (the shipped PRN)
-> one PQ table, base vs refined -> image | base | refined | ground truth panels with an HTML gallery.

``corrupted_base=True`` replaces the segment step with the ground truth corrupted the way base models fail,
a stand-in for "any other model's output" (PRN is model-agnostic).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

from .errors import OutputExistsError
from .evaluate import EvalReport, evaluate
from .io import write_json_atomic
from .panoptic import load_set, set_paths

ProgressFactory = Callable[[str], ContextManager[Callable[[int, int], None]]]


@dataclass
class DemoResult:
    out_dir: Path
    gt_json: Path
    base_json: Path
    refined_json: Path
    report: EvalReport
    report_json: Path
    viz_dir: Path
    gallery: Path
    html_report: Path | None = None     # prn report's index.html: sortable, hover details, what changed


def _no_progress(description: str):
    from contextlib import nullcontext

    return nullcontext(lambda done, total: None)


def run_demo(out_dir: str | os.PathLike = "prn-demo", *, n: int = 8, width: int = 256, height: int = 256,
             seed: int = 0, overwrite: bool = False, workers: int | None = None, base_weights=None,
             prn_weights=None, corrupted_base: bool = False, device: str = "auto",
             progress: ProgressFactory = _no_progress) -> DemoResult:
    """Run the demo chain into ``out_dir`` (``data/``, ``base/``, ``refined/``, ``eval.json``, ``viz/``).

    ``base_weights``/``prn_weights`` default to the shipped checkpoints (see :mod:`prn_cli.shipped`).
    """
    from .perturb import write_corrupted_set
    from .refine import RefineOptions, refine
    from .segment import SegmentOptions, segment
    from .shipped import shipped_weights
    from .synth import SynthConfig, write_dataset
    from .visualize import VizOptions, visualize
    from .visualize.report import write_report

    out = Path(out_dir)
    marker = out / "eval.json"
    if marker.exists() and not overwrite:
        raise OutputExistsError(f"{out} already holds a demo; pass --overwrite to replace it or choose another --out")
    prn_weights = prn_weights or shipped_weights("prn")
    if not corrupted_base:
        base_weights = base_weights or shipped_weights("base")
    # both checkpoints are read before anything is written: a wrong --prn-weights must not leave data/ and
    # base/ behind after minutes of work
    from .checkpoint import load_checkpoint

    load_checkpoint(prn_weights, kind="prn")
    if not corrupted_base:
        load_checkpoint(base_weights, kind="base")
    data_dir = out / "data"
    # class_colour 0.7: the distribution the shipped models were trained on (models/README.md)
    with progress("synthetic data") as update:
        summary = write_dataset(data_dir, SynthConfig(n=n, width=width, height=height, seed=seed, split="val",
                                                      class_colour=0.7),
                                overwrite=overwrite, progress=update)
    gt_json = Path(summary["json"])
    base_dir, refined_dir = out / "base", out / "refined"
    if corrupted_base:
        with progress("base prediction (corrupted GT)") as update:
            write_corrupted_set(gt_json, base_dir, seed=seed, overwrite=overwrite, progress=update)
    else:
        with progress("segmenting (MS-PanopticFPN)") as update:
            segment([summary["images_dir"]], base_weights, base_dir, overwrite=overwrite, progress=update,
                    options=SegmentOptions(device=device, images_json=str(gt_json)))
    with progress("refining (PRN)") as update:
        refine(base_dir, summary["images_dir"], prn_weights, refined_dir, overwrite=overwrite, progress=update,
               options=RefineOptions(device=device))
    gt = load_set(gt_json)
    base = load_set(base_dir, need_categories=False)
    refined = load_set(refined_dir)
    with progress("evaluating") as update:
        report = evaluate(gt, [base, refined], names=["base", "refined"], workers=workers, progress=update)
    write_json_atomic(marker, report.to_dict())
    viz_dir = out / "viz"
    with progress("drawing panels") as update:
        # panoptic colours: a stuff class looks the same in the base, refined and GT panels
        visualize([("base", base), ("refined", refined), ("ground truth", gt)], viz_dir,
                  images_dir=summary["images_dir"], html=True, overwrite=overwrite, progress=update,
                  options=VizOptions(color_by="panoptic"))
    with progress("writing the report") as update:
        html_report = write_report(gt, [base, refined], out / "report", images_dir=summary["images_dir"],
                                   names=["base", "refined"], workers=workers, overwrite=overwrite,
                                   progress=update)["index_html"]
    return DemoResult(out, gt_json, set_paths(base_dir)[0], set_paths(refined_dir)[0], report, marker, viz_dir,
                      viz_dir / "index.html", Path(html_report))
