"""The ``prn`` command line. Each command parses its options and calls the core; nothing else lives here.

Heavy modules (numpy, Pillow, and later torch) are imported inside the commands, so ``prn --help`` and
``prn --version`` answer at once.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__
from .errors import EXIT_INVALID_INPUT, EXIT_RUNTIME, PrnError

EPILOG = ("Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 invalid input data. "
          "Data goes to stdout; progress, warnings and errors to stderr.")

app = typer.Typer(
    name="prn",
    help="Panoptic segmentation refinement: make, evaluate and visualize COCO panoptic sets (PNG + JSON).",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": bool(os.environ.get("PRN_DEBUG"))}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"prn {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors (also: PRN_DEBUG=1)."),
) -> None:
    if debug:
        _state["debug"] = True


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
        return w, h
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a size like 320x240") from None


# --------------------------------------------------------------------------------------------------------------
# eval


class GtArea(str, Enum):
    json = "json"
    png = "png"


class Crowd(str, Enum):
    last = "last"
    union = "union"


@app.command("eval", epilog=EPILOG)
def eval_command(
    gt: Optional[Path] = typer.Option(None, "--gt", help="Ground-truth set: a panoptic JSON (PNGs in the folder of "
                                      "the same name) or a folder written by prn."),
    pred: List[Path] = typer.Option([], "--pred", help="Prediction set (JSON or prn folder). Repeat to compare "
                                    "several sets against one GT: one table, with deltas against the first."),
    gt_json: Optional[Path] = typer.Option(None, "--gt-json", help="Ground-truth JSON, for other layouts."),
    gt_dir: Optional[Path] = typer.Option(None, "--gt-dir", help="Ground-truth PNG folder (with --gt-json)."),
    pred_json: List[Path] = typer.Option([], "--pred-json", help="Prediction JSON, for other layouts (repeatable)."),
    pred_dir: List[Path] = typer.Option([], "--pred-dir", help="PNG folder of each --pred-json, in order."),
    name: List[str] = typer.Option([], "--name", help="Display name of each prediction set, in order."),
    per_class: bool = typer.Option(False, "--per-class", help="Also print PQ/SQ/RQ and TP/FP/FN per category."),
    json_out: Optional[str] = typer.Option(None, "--json", metavar="PATH|-",
                                           help="Write the full results as JSON to PATH, or to stdout with '-'."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=0,
                                          help="Worker processes (default: one per core, at most 8; 0 = none)."),
    gt_area: GtArea = typer.Option(GtArea.json, "--gt-area", help="GT segment area from the JSON 'area' field "
                                   "(as the reference) or from the PNG pixel count."),
    crowd: Crowd = typer.Option(Crowd.last, "--crowd", help="Which crowd regions of a category ignore predictions: "
                                "the last one listed (as the reference) or all of them."),
    allow_duplicate_ids: bool = typer.Option(False, "--allow-duplicate-ids", help="Accept segment ids listed twice "
                                             "in one annotation; the last entry wins, as in the reference."),
    sum_chunks: int = typer.Option(1, "--sum-chunks", min=1, help="Sum IoUs as a reference run with N processes "
                                   "does, to reproduce its floats bit for bit."),
) -> None:
    """Panoptic quality (PQ, SQ, RQ) of predictions, identical to the COCO reference evaluator.

    Example: prn eval --gt data/annotations/panoptic_val.json --pred base/ --pred refined/
    """
    from .console import progress
    from .evaluate import EvalOptions, evaluate
    from .panoptic import load_set
    from .reporting import show_report

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
                          progress=update)
    show_report(report, per_class=per_class, json_out=json_out)


# --------------------------------------------------------------------------------------------------------------
# entry point


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: known errors become one line on stderr and a documented exit code."""
    from .console import error_line

    try:
        app(args=argv, prog_name="prn")
    except PrnError as exc:
        if _state["debug"]:
            raise
        error_line(exc.message)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(130)
    except Exception as exc:  # an unexpected failure: say what, keep the traceback behind --debug
        if _state["debug"]:
            raise
        error_line(f"internal error: {exc.__class__.__name__}: {exc} (rerun with --debug for the traceback)")
        sys.exit(EXIT_RUNTIME)


__all__ = ["app", "main", "EXIT_INVALID_INPUT"]
