"""``prn report``: an interactive HTML report of prediction sets against their ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._common import EvalWorkers, JsonOut, Overwrite, command


def register(app: typer.Typer) -> None:
    command(app, "report")(report_command)


def report_command(
    gt: Annotated[Path, typer.Option("--gt", metavar="SET", help="Ground-truth set (JSON, or a folder written by "
                                     "prn).")],
    pred: Annotated[List[Path], typer.Option("--pred", metavar="SET", help="Prediction set; repeat to compare "
                                             "(e.g. base, then refined): deltas are the last against the first.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder (index.html, tiles/, "
                                      "report.json).")],
    images: Annotated[Optional[Path], typer.Option("--images", "-i", metavar="DIR", help="Folder of the photos; "
                                                   "without it segments are drawn on grey.")] = None,
    name: Annotated[List[str], typer.Option("--name", metavar="NAME", help="Display name of each prediction set, "
                                            "in order.")] = [],
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, metavar="N", help="Draw only the first N "
                                                 "images of the ground truth.")] = None,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, metavar="X", help="Opacity of the segment "
                                         "colours.")] = 0.55,
    workers: EvalWorkers = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = None,
) -> None:
    """Write an interactive HTML report: per image, image | each set | ground truth with per-image PQ and delta,
    sortable and filterable, with a class legend, segment details on hover and a "what changed" layer.

    It opens from disk in any browser (no server, no network). The numbers are those of prn eval --per-image.

    Example: prn report --gt data/annotations/panoptic_val.json --pred base/ --pred refined/ --images data/images/val --out report/
    """
    from ..console import emit_json, progress, say
    from ..panoptic import load_set
    from ..visualize.report import ReportOptions, write_report
    from ._common import check_out_dir

    if name and len(name) != len(pred):
        raise typer.BadParameter("give one --name per --pred, or none", param_hint="--name")
    if not pred:
        raise typer.BadParameter("name at least one prediction set with --pred", param_hint="--pred")
    check_out_dir(out)
    gt_set = load_set(gt)
    pred_sets = [load_set(p, need_categories=False) for p in pred]
    with progress("report") as update:
        summary = write_report(gt_set, pred_sets, out, images_dir=images, names=name or None,
                               options=ReportOptions(alpha=alpha, limit=limit), workers=workers,
                               overwrite=overwrite, progress=update)
    say(f"wrote a report of {summary['images']} image(s): open {summary['index_html']}", json_out)
    emit_json(summary, json_out)
