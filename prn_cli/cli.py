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
# synth


@app.command("synth", epilog=EPILOG)
def synth_command(
    out: Path = typer.Option(..., "--out", "-o", help="Dataset root to write (images/, annotations/)."),
    n: int = typer.Option(16, "--n", min=1, help="Number of images."),
    size: str = typer.Option("320x240", "--size", help="Image size WxH."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same arguments give byte-identical files."),
    split: str = typer.Option("train", "--split", help="Split name (files go to images/<split>/ and "
                              "annotations/panoptic_<split>.json)."),
    difficulty: float = typer.Option(0.5, "--difficulty", min=0.0, max=1.0,
                                     help="0 = clean and easy, 1 = noisy textures, heavy occlusion, small objects."),
    min_things: int = typer.Option(3, "--min-things", min=0, help="Fewest thing instances per image."),
    max_things: int = typer.Option(10, "--max-things", min=0, help="Most thing instances per image."),
    crowd_prob: float = typer.Option(0.15, "--crowd-prob", min=0.0, max=1.0,
                                     help="Probability that an image has a crowd region."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing set of the same split."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Write a deterministic synthetic panoptic dataset in COCO panoptic layout.

    Example: prn synth --out data/ --n 200 --size 320x240 --seed 0 --split train
    """
    import json

    from .console import progress, stdout
    from .synth import SynthConfig, write_dataset

    width, height = _parse_size(size)
    try:
        config = SynthConfig(n=n, width=width, height=height, seed=seed, split=split, difficulty=difficulty,
                             min_things=min_things, max_things=max_things, crowd_prob=crowd_prob)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    with progress(f"synth {split}") as update:
        summary = write_dataset(out, config, overwrite=overwrite, progress=update)
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
    else:
        stdout.print(f"wrote {summary['images']} images ({summary['things']} things, {summary['stuff']} stuff "
                     f"segments, {summary['crowd']} crowd) to {summary['json']}", highlight=False)


# --------------------------------------------------------------------------------------------------------------
# viz


class ColorBy(str, Enum):
    instance = "instance"
    category = "category"


@app.command("viz", epilog=EPILOG)
def viz_command(
    sets: List[Path] = typer.Argument(..., help="Panoptic sets (JSON or folder), drawn left to right; the first "
                                      "decides which images are drawn."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of the photos; without it segments are "
                                          "drawn on a neutral background."),
    title: List[str] = typer.Option([], "--title", help="Title of each set, in order (default: the set names)."),
    color_by: ColorBy = typer.Option(ColorBy.instance, "--color-by", help="Colour per instance (stable per "
                                     "segment id) or per category (the categories' color)."),
    alpha: float = typer.Option(0.55, "--alpha", min=0.0, max=1.0, help="Opacity of the segment colours."),
    boundaries: bool = typer.Option(True, "--boundaries/--no-boundaries", help="Draw segment boundaries."),
    labels: bool = typer.Option(False, "--labels", help="Write class names on segments."),
    area_threshold: int = typer.Option(100, "--area-threshold", min=0, help="Label only segments at least this "
                                       "many pixels large."),
    image_id: List[str] = typer.Option([], "--image-id", help="Draw only these image ids (repeatable)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Draw at most this many images."),
    html: bool = typer.Option(False, "--html", help="Also write index.html, a gallery of the panels."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace earlier prn viz output in --out."),
) -> None:
    """Draw overlays of panoptic sets, and side-by-side panels (image | base | refined | GT) of several.

    Example: prn viz base/ refined/ data/ --images data/images/val --out viz/ --html
    """
    from .console import progress, stdout
    from .panoptic import load_set
    from .visualize import VizOptions, visualize

    if title and len(title) != len(sets):
        raise typer.BadParameter("give one --title per set, or none", param_hint="--title")
    loaded = [load_set(s, need_categories=False) for s in sets]
    titles = list(title) or _unique_titles([s.name for s in loaded])
    ids = [int(i) if i.lstrip("-").isdigit() else i for i in image_id] or None
    options = VizOptions(color_by=color_by.value, alpha=alpha, boundaries=boundaries, labels=labels,
                         area_threshold=area_threshold)
    with progress("drawing") as update:
        summary = visualize(list(zip(titles, loaded)), out, images_dir=images, options=options, image_ids=ids,
                            limit=limit, html=html, overwrite=overwrite, progress=update)
    stdout.print(f"drew {summary['images']} image(s) into {summary['out_dir']}"
                 + (f"; gallery: {Path(summary['out_dir']) / 'index.html'}" if html else ""), highlight=False)


def _unique_titles(names: list[str]) -> list[str]:
    return names if len(set(names)) == len(names) else [f"{n} ({k + 1})" for k, n in enumerate(names)]


# --------------------------------------------------------------------------------------------------------------
# demo


@app.command("demo", epilog=EPILOG)
def demo_command(
    out: Path = typer.Option(Path("prn-demo"), "--out", "-o", help="Folder for everything the demo writes."),
    n: int = typer.Option(8, "--n", min=1, help="Number of synthetic images."),
    size: str = typer.Option("320x240", "--size", help="Image size WxH."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=0, help="Evaluation worker processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier demo in --out."),
) -> None:
    """Run the whole loop on fresh synthetic data: synth -> base prediction -> eval -> viz.

    Example: prn demo --out prn-demo --overwrite
    """
    from .console import progress, stdout
    from .demo import run_demo
    from .reporting import show_report

    width, height = _parse_size(size)
    result = run_demo(out, n=n, width=width, height=height, seed=seed, overwrite=overwrite, workers=workers,
                      progress=progress)
    show_report(result.report)
    stdout.print(f"data:   {result.gt_json}\nbase:   {result.base_json}\nreport: {result.report_json}\n"
                 f"panels: {result.viz_dir} (open {result.gallery})", highlight=False)


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
