"""``prn eval``: panoptic quality, identical to the COCO reference evaluator."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._common import EvalWorkers, JsonOut, command


class GtArea(str, Enum):
    json = "json"
    png = "png"


class Crowd(str, Enum):
    last = "last"
    union = "union"


def register(app: typer.Typer) -> None:
    command(app, "eval")(eval_command)


def eval_command(
    gt: Annotated[Optional[Path], typer.Option("--gt", metavar="SET", help="Ground-truth set: a panoptic JSON (PNGs "
                                               "in the folder of the same name) or a folder written by prn.")] = None,
    pred: Annotated[List[Path], typer.Option("--pred", metavar="SET", help="Prediction set (JSON or prn folder). "
                                             "Repeat to compare several sets against one GT: one table, with "
                                             "deltas against the first.")] = [],
    gt_json: Annotated[Optional[Path], typer.Option("--gt-json", metavar="FILE", help="Ground-truth JSON, for "
                                                    "other layouts.")] = None,
    gt_dir: Annotated[Optional[Path], typer.Option("--gt-dir", metavar="DIR", help="Ground-truth PNG folder (with "
                                                   "--gt-json).")] = None,
    pred_json: Annotated[List[Path], typer.Option("--pred-json", metavar="FILE", help="Prediction JSON, for other "
                                                  "layouts (repeatable).")] = [],
    pred_dir: Annotated[List[Path], typer.Option("--pred-dir", metavar="DIR", help="PNG folder of each "
                                                 "--pred-json, in order.")] = [],
    name: Annotated[List[str], typer.Option("--name", metavar="NAME", help="Display name of each prediction set, "
                                            "in order.")] = [],
    per_class: Annotated[bool, typer.Option("--per-class", metavar="", help="Also print PQ/SQ/RQ and TP/FP/FN per "
                                            "category.")] = False,
    per_image: Annotated[bool, typer.Option("--per-image", metavar="", help="Also evaluate every image alone: "
                                            "PQ/SQ/RQ and TP/FP/FN per image and set, every segment's GT match, "
                                            "IoU and outcome (missed, merged, split, wrong class) in the JSON, and "
                                            "a table of the images where the sets differ most.")] = False,
    image_rows: Annotated[int, typer.Option("--image-rows", min=0, metavar="N", help="Rows of the --per-image "
                                            "table.")] = 10,
    json_out: JsonOut = None,
    workers: EvalWorkers = None,
    gt_area: Annotated[GtArea, typer.Option("--gt-area", metavar="json|png", help="GT segment area from the JSON "
                                            "'area' field (as the reference) or from the PNG pixel count.")]
    = GtArea.json,
    crowd: Annotated[Crowd, typer.Option("--crowd", metavar="last|union", help="Which crowd regions of a category "
                                         "ignore predictions: the last one listed (as the reference) or all of "
                                         "them.")] = Crowd.last,
    allow_duplicate_ids: Annotated[bool, typer.Option("--allow-duplicate-ids", metavar="", help="Accept segment "
                                                      "ids listed twice in one annotation; the last entry wins, as "
                                                      "in the reference.")] = False,
    sum_chunks: Annotated[int, typer.Option("--sum-chunks", min=1, metavar="N", help="Sum IoUs as a reference run "
                                            "with N processes does, to reproduce its floats bit for bit.")] = 1,
) -> None:
    """Panoptic quality (PQ, SQ, RQ) of predictions, identical to the COCO reference evaluator.

    Example: prn eval --gt data/annotations/panoptic_val.json --pred base/ --pred refined/
    """
    from ..console import progress
    from ..evaluate import EvalOptions, evaluate
    from ..panoptic import load_set
    from ..reporting import show_report

    if gt is not None and gt_json is not None:
        raise typer.BadParameter("give either --gt or --gt-json, not both", param_hint="--gt")
    if gt is None and gt_json is None:
        raise typer.BadParameter("name the ground truth with --gt (or --gt-json and --gt-dir)", param_hint="--gt")
    if pred_dir and len(pred_dir) != len(pred_json):
        raise typer.BadParameter("give one --pred-dir per --pred-json, or none", param_hint="--pred-dir")
    if not pred and not pred_json:
        raise typer.BadParameter("name at least one prediction set with --pred (or --pred-json)",
                                 param_hint="--pred")
    if name and len(name) != len(pred) + len(pred_json):
        raise typer.BadParameter("give one --name per prediction set, or none", param_hint="--name")
    gt_set = load_set(gt) if gt is not None else load_set(json_path=gt_json, png_dir=gt_dir)
    pred_sets = [load_set(p, need_categories=False) for p in pred]
    pred_sets += [load_set(json_path=j, png_dir=pred_dir[k] if pred_dir else None, need_categories=False)
                  for k, j in enumerate(pred_json)]
    options = EvalOptions(gt_area=gt_area.value, crowd=crowd.value, allow_duplicate_ids=allow_duplicate_ids,
                          sum_chunks=sum_chunks)
    with progress("evaluating") as update:
        report = evaluate(gt_set, pred_sets, options=options, workers=workers, names=name or None,
                          per_image=per_image, progress=update)
    show_report(report, per_class=per_class, json_out=json_out, image_rows=image_rows if per_image else None)
