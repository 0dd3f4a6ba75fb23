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
    class_colour: float = typer.Option(0.0, "--class-colour", min=0.0, max=1.0,
                                       help="Probability that a thing is painted in its class's colour (0 = "
                                       "colour independent of class, so only shape tells the class)."),
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
                             min_things=min_things, max_things=max_things, crowd_prob=crowd_prob,
                             class_colour=class_colour)
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
    panoptic = "panoptic"


@app.command("viz", epilog=EPILOG)
def viz_command(
    sets: List[Path] = typer.Argument(..., help="Panoptic sets (JSON or folder), drawn left to right; the first "
                                      "decides which images are drawn."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of the photos; without it segments are "
                                          "drawn on a neutral background."),
    title: List[str] = typer.Option([], "--title", help="Title of each set, in order (default: the set names)."),
    color_by: ColorBy = typer.Option(ColorBy.instance, "--color-by", help="Colour per instance (stable per "
                                     "segment id), per category (the categories' color), or panoptic (stuff by "
                                     "category, things by instance)."),
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
# train


train_app = typer.Typer(help="Train a network: the base model (MS-PanopticFPN) or the refiner (PRN).",
                        no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(train_app, name="train")


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Amp(str, Enum):
    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"


class Arch(str, Enum):
    tiny = "tiny"
    r18 = "r18"
    r34 = "r34"
    r50 = "r50"
    r101 = "r101"


# options every training command takes
TRAIN_ITERS = typer.Option(2000, "--iters", min=1, help="Optimizer steps.")
TRAIN_BATCH_SIZE = typer.Option(8, "--batch-size", min=1, help="Images per step (over all processes).")
TRAIN_LR = typer.Option(1e-3, "--lr", min=0.0, help="Peak learning rate (AdamW).")
TRAIN_WARMUP = typer.Option(100, "--warmup", min=0, help="Linear warmup steps.")
TRAIN_CROP = typer.Option(256, "--crop", min=32, help="Square training crop after scale jitter.")
TRAIN_BACKBONE_WEIGHTS = typer.Option(None, "--backbone-weights", help="Local torchvision ResNet state_dict "
                                      "(ImageNet); nothing is downloaded.")
TRAIN_CHECKPOINT_EVERY = typer.Option(200, "--checkpoint-every", min=0, help="Steps between checkpoints.")
TRAIN_VAL_EVERY = typer.Option(0, "--val-every", min=0, help="Steps between val PQ runs (0: only at the end).")
TRAIN_VAL_IMAGES = typer.Option(50, "--val-images", min=0, help="Val images used for PQ (0: all).")
TRAIN_DEVICE = typer.Option(Device.auto, "--device", help="Where to train.")
TRAIN_AMP = typer.Option(Amp.off, "--amp", help="Mixed precision on CUDA.")
TRAIN_WORKERS = typer.Option(2, "--workers", min=0, help="DataLoader worker processes.")
TRAIN_RESUME = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped.")


@train_app.command("base", epilog=EPILOG)
def train_base_command(
    data: Path = typer.Option(..., "--data", help="Training set: a panoptic JSON or a prn synth root "
                              "(images found from the JSON's images records)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, metrics.jsonl, model_final.pt."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation set for periodic PQ."),
    arch: Arch = typer.Option(Arch.tiny, "--arch", help="Backbone preset (tiny = ResNet-18 at 1/4 width)."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON of MSPanopticFPNConfig fields overriding "
                                          "the preset, e.g. {\"loss\": {\"mask\": 2.0}}."),
    iters: int = TRAIN_ITERS,
    batch_size: int = TRAIN_BATCH_SIZE,
    lr: float = TRAIN_LR,
    warmup: int = TRAIN_WARMUP,
    crop: int = TRAIN_CROP,
    backbone_weights: Optional[Path] = TRAIN_BACKBONE_WEIGHTS,
    checkpoint_every: int = TRAIN_CHECKPOINT_EVERY,
    val_every: int = TRAIN_VAL_EVERY,
    val_images: int = TRAIN_VAL_IMAGES,
    device: Device = TRAIN_DEVICE,
    amp: Amp = TRAIN_AMP,
    workers: int = TRAIN_WORKERS,
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, data order and augmentation."),
    resume: bool = TRAIN_RESUME,
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU intra-op threads (default: torch's; "
                                          "1 is often fastest on small shared CPUs)."),
) -> None:
    """Train MS-PanopticFPN (the base network). Multi-GPU or multi-process: torchrun --nproc_per_node N -m prn_cli
    train base ...

    Example: prn train base --data data/ --val data/annotations/panoptic_val.json --out runs/base --iters 3000
    """
    from .console import stdout
    from .engine import TrainConfig
    from .train import BaseTrainingOptions, train_base

    _set_threads(threads)
    train_cfg = TrainConfig(out_dir=str(out), iters=iters, batch_size=batch_size, lr=lr, warmup_iters=warmup,
                            checkpoint_every=checkpoint_every, val_every=val_every, device=device.value,
                            amp=amp.value, num_workers=workers, seed=seed, resume=resume,
                            channels_last=device.value != "cpu")
    options = BaseTrainingOptions(arch=arch.value, config_file=str(config) if config else None, crop=crop,
                                  backbone_weights=str(backbone_weights) if backbone_weights else None,
                                  val_images=val_images)
    with _training_progress(iters) as update:
        summary = train_base(data, train_cfg, options, val=val, progress=update)
    if summary:
        stdout.print(f"trained {summary.get('steps', iters)} steps; final weights: {summary.get('final', out)}",
                     highlight=False)
        if summary.get("val"):
            stdout.print("val: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in summary["val"].items()), highlight=False)


class PRNArch(str, Enum):
    tiny = "tiny"
    r18 = "r18"
    r50 = "r50"


class ForegroundSource(str, Enum):
    foreground = "foreground"
    semantic = "semantic"


def _parse_range(text: str, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{name} must be two numbers LOW,HIGH, got {text!r}") from None
    return lo, hi


# PRN post-processing tuning, shared by refine, train prn (stored in the checkpoint) and ablate (every row)
POST_CENTER_THRESHOLD = typer.Option(None, "--center-threshold", help="Centre heatmap threshold.")
POST_NMS_KERNEL = typer.Option(None, "--nms-kernel", help="Centre max-pool NMS kernel (odd).")
POST_TOP_K = typer.Option(None, "--top-k", help="Most centres kept per image.")
POST_FOREGROUND_THRESHOLD = typer.Option(None, "--foreground-threshold",
                                         help="Foreground branch probability threshold.")
POST_STUFF_AREA = typer.Option(None, "--stuff-area", help="Smallest stuff segment (pixels; at 640x480 and scaled "
                               "with the image area for prn-trained checkpoints).")
POST_BOX_IOU = typer.Option(None, "--box-iou", help="PredBbox: IoU at which a pixel's box agrees with a centre's.")


def _tuning(center_threshold, nms_kernel, top_k, foreground_threshold, stuff_area, box_iou) -> dict:
    """The PostProcessConfig overrides given on the command line (None = keep the checkpoint's)."""
    given = {"center_threshold": center_threshold, "nms_kernel": nms_kernel, "top_k": top_k,
             "foreground_threshold": foreground_threshold, "stuff_area": stuff_area, "box_iou_threshold": box_iou}
    return {k: v for k, v in given.items() if v is not None}


@train_app.command("prn", epilog=EPILOG)
def train_prn_command(
    data: Path = typer.Option(..., "--data", help="Training GT: a panoptic JSON or a prn synth root."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, metrics.jsonl, model_final.pt."),
    base: Optional[Path] = typer.Option(None, "--base", help="Base predictions on the training images (e.g. prn "
                                        "segment output), mixed with corrupted GT by --base-mix."),
    base_mix: float = typer.Option(0.5, "--base-mix", min=0.0, max=1.0, help="Share of samples that use --base "
                                   "(the rest use GT corrupted the way base models fail)."),
    strength: str = typer.Option("0.3,0.8", "--strength", help="Corruption strength range LOW,HIGH (0 = GT, "
                                 "1 = a poor base)."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation GT for periodic PQ."),
    val_base: Optional[Path] = typer.Option(None, "--val-base", help="Base predictions on the val images "
                                            "(default: the val GT corrupted with seed 0)."),
    arch: PRNArch = typer.Option(PRNArch.tiny, "--arch", help="Encoder preset (tiny = ResNet-18 at 1/4 width)."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON of PRNConfig fields overriding the preset."),
    foreground_head: Optional[bool] = typer.Option(None, "--foreground/--no-foreground", help="Table 1: the "
                                                   "foreground branch (default: on)."),
    coordconv_decoder: Optional[bool] = typer.Option(None, "--coordconv-dec/--no-coordconv-dec",
                                                     help="Table 1: CoordConv in the decoders and heads."),
    coordconv_encoder: Optional[bool] = typer.Option(None, "--coordconv-enc/--no-coordconv-enc",
                                                     help="Table 1: CoordConv at the encoder input and ASPP."),
    box_head: Optional[bool] = typer.Option(None, "--pred-bbox/--no-pred-bbox", help="Table 1: the per-pixel "
                                            "box branch, used to group pixels (PredBbox)."),
    iters: int = TRAIN_ITERS,
    batch_size: int = TRAIN_BATCH_SIZE,
    lr: float = TRAIN_LR,
    warmup: int = TRAIN_WARMUP,
    crop: int = TRAIN_CROP,
    backbone_weights: Optional[Path] = TRAIN_BACKBONE_WEIGHTS,
    checkpoint_every: int = TRAIN_CHECKPOINT_EVERY,
    val_every: int = TRAIN_VAL_EVERY,
    val_images: int = TRAIN_VAL_IMAGES,
    device: Device = TRAIN_DEVICE,
    amp: Amp = TRAIN_AMP,
    workers: int = TRAIN_WORKERS,
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, data order, augmentation, corruption."),
    foreground_source: Optional[ForegroundSource] = typer.Option(None, "--foreground-source", help="Stored "
                                                                 "post-processing: foreground mask from the "
                                                                 "foreground branch or from semantics (default: the "
                                                                 "branch when the PRN has one)."),
    center_threshold: Optional[float] = POST_CENTER_THRESHOLD,
    nms_kernel: Optional[int] = POST_NMS_KERNEL,
    top_k: Optional[int] = POST_TOP_K,
    foreground_threshold: Optional[float] = POST_FOREGROUND_THRESHOLD,
    stuff_area: Optional[int] = POST_STUFF_AREA,
    box_iou: Optional[float] = POST_BOX_IOU,
    resume: bool = TRAIN_RESUME,
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU intra-op threads."),
) -> None:
    """Train PRN (the refiner) on (image, base, GT) triplets. Multi-GPU: torchrun --nproc_per_node N -m prn_cli
    train prn ...

    Example: prn train prn --data data/ --val data/annotations/panoptic_val.json --out runs/prn --iters 2000
    """
    from .console import stdout
    from .engine import TrainConfig
    from .train import PRNTrainingOptions, train_prn

    _set_threads(threads)
    try:
        options = PRNTrainingOptions(arch=arch.value, config_file=str(config) if config else None,
                                     foreground_head=foreground_head, box_head=box_head,
                                     coordconv_encoder=coordconv_encoder, coordconv_decoder=coordconv_decoder,
                                     crop=crop, base_mix=base_mix, strength_range=_parse_range(strength, "--strength"),
                                     backbone_weights=str(backbone_weights) if backbone_weights else None,
                                     val_images=val_images,
                                     postprocess={**_tuning(center_threshold, nms_kernel, top_k,
                                                            foreground_threshold, stuff_area, box_iou),
                                                  **({"foreground_source": foreground_source.value}
                                                     if foreground_source else {})} or None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    train_cfg = TrainConfig(out_dir=str(out), iters=iters, batch_size=batch_size, lr=lr, warmup_iters=warmup,
                            checkpoint_every=checkpoint_every, val_every=val_every, device=device.value,
                            amp=amp.value, num_workers=workers, seed=seed, resume=resume,
                            channels_last=device.value != "cpu")
    with _training_progress(iters) as update:
        summary = train_prn(data, train_cfg, options, base=base, val=val, val_base=val_base, progress=update)
    if summary:
        stdout.print(f"trained {summary.get('steps', iters)} steps; final weights: {summary.get('final', out)}",
                     highlight=False)
        if summary.get("val"):
            stdout.print("val: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in summary["val"].items()), highlight=False)


def _weights_or_shipped(weights: Path | None, kind: str) -> Path:
    """``weights``, or the shipped checkpoint of ``kind`` (said on stderr)."""
    if weights is not None:
        return weights
    from .console import stderr
    from .shipped import describe, shipped_weights

    path = shipped_weights(kind)
    stderr.print(describe(kind, path), highlight=False)
    return path


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _training_progress(total: int):
    """A Rich bar with the latest loss terms, fed by the engine's ``progress(step, total, losses)``."""
    from contextlib import contextmanager

    from .console import stderr

    @contextmanager
    def bar():
        if not stderr.is_terminal:
            yield None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        with Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), TextColumn("{task.fields[losses]}"), console=stderr) as p:
            task = p.add_task("train", total=total, losses="")

            def update(step: int, total_steps: int, losses: dict) -> None:
                text = " ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in losses.items()
                                if isinstance(v, float))
                p.update(task, completed=step, total=total_steps, losses=text)

            yield update

    return bar()


# --------------------------------------------------------------------------------------------------------------
# segment


@app.command("segment", epilog=EPILOG)
def segment_command(
    images: List[Path] = typer.Argument(..., help="Image files or folders of images."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Base-model checkpoint (prn train base); "
                                           "default: the shipped tiny model trained on synthetic data."),
    out: Path = typer.Option(..., "--out", "-o", help="Output set folder (panoptic.json + panoptic/)."),
    device: Device = typer.Option(Device.auto, "--device", help="Where to run."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images per forward pass."),
    max_size: Optional[int] = typer.Option(None, "--max-size", min=32, help="Resize so the long side is at most "
                                           "this for the network; output stays at the image size."),
    images_json: Optional[Path] = typer.Option(None, "--images-json", help="COCO JSON whose images records give "
                                               "the image ids (e.g. the ground truth, for prn eval)."),
    score_threshold: Optional[float] = typer.Option(None, "--score-threshold", help="Detection score threshold."),
    instance_threshold: Optional[float] = typer.Option(None, "--instance-threshold",
                                                       help="Fusion: keep instances scoring at least this."),
    overlap_threshold: Optional[float] = typer.Option(None, "--overlap-threshold",
                                                      help="Fusion: drop an instance more than this covered."),
    stuff_area: Optional[int] = typer.Option(None, "--stuff-area", help="Fusion: minimum stuff area at 640x480 "
                                             "(scaled with the image area)."),
    nms_iou: Optional[float] = typer.Option(None, "--nms-iou", help="Class-aware NMS IoU."),
    resume: bool = typer.Option(False, "--resume", help="Finish an interrupted run, skipping finished images."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing set in --out."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU intra-op threads."),
) -> None:
    """Segment images with MS-PanopticFPN into a COCO panoptic set. Unreadable images are reported and skipped;
    the exit code is 3 if any were.

    Example: prn segment data/images/val --weights models/base_tiny.pt --out base/
    """
    from .console import error_line, progress, stdout
    from .segment import SegmentOptions, segment

    _set_threads(threads)
    weights = _weights_or_shipped(weights, "base")
    thresholds = {"score_threshold": score_threshold, "instance_score_threshold": instance_threshold,
                  "overlap_threshold": overlap_threshold, "stuff_area": stuff_area, "nms_iou": nms_iou}
    options = SegmentOptions(device=device.value, batch_size=batch_size, max_size=max_size,
                             images_json=str(images_json) if images_json else None, thresholds=thresholds)
    with progress("segmenting") as update:
        result = segment(images, weights, out, options=options, resume=resume, overwrite=overwrite,
                         progress=update, on_failure=lambda f, why: error_line(f"skipped {f}: {why}"))
    stdout.print(f"wrote {result.written} image(s)" + (f" (+{result.adopted} from the interrupted run)"
                                                        if result.adopted else "") + f" to {result.json_path}",
                 highlight=False)
    if result.failed:
        error_line(f"{len(result.failed)} image(s) could not be read and were skipped (listed above)")
        raise typer.Exit(EXIT_INVALID_INPUT)


# --------------------------------------------------------------------------------------------------------------
# demo


@app.command("refine", epilog=EPILOG)
def refine_command(
    base: Path = typer.Option(..., "--base", "-b", help="Base panoptic set from any model (folder with "
                              "panoptic.json + panoptic/, or a JSON whose PNG folder is beside it)."),
    images: List[Path] = typer.Option(..., "--images", "-i", help="The images the base was predicted on (folder "
                                      "or files; repeatable)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="PRN checkpoint (prn train prn); "
                                           "default: the shipped tiny PRN trained on synthetic data."),
    out: Path = typer.Option(..., "--out", "-o", help="Output set folder (panoptic.json + panoptic/)."),
    device: Device = typer.Option(Device.auto, "--device", help="Where to run."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images per forward pass."),
    foreground_source: Optional[ForegroundSource] = typer.Option(None, "--foreground-source", help="Foreground "
                                                                 "mask from the foreground branch or from semantics "
                                                                 "(Table 1: Foreground / ForegroundSem)."),
    pred_bbox: Optional[bool] = typer.Option(None, "--pred-bbox/--no-pred-bbox", help="Group pixels with the "
                                             "predicted boxes (Table 1: PredBbox)."),
    center_threshold: Optional[float] = POST_CENTER_THRESHOLD,
    nms_kernel: Optional[int] = POST_NMS_KERNEL,
    top_k: Optional[int] = POST_TOP_K,
    foreground_threshold: Optional[float] = POST_FOREGROUND_THRESHOLD,
    stuff_area: Optional[int] = POST_STUFF_AREA,
    box_iou: Optional[float] = POST_BOX_IOU,
    category_map: Optional[Path] = typer.Option(None, "--category-map", help="JSON {\"<base id>\": <checkpoint "
                                                "id>} when the base's categories differ from the checkpoint's."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing set in --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the change summary as JSON on stdout."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU intra-op threads."),
) -> None:
    """Refine any base panoptic segmentation with PRN. Reports what changed; unreadable base images are reported
    and skipped (exit code 3 if any were).

    Example: prn refine --base base/ --images data/images/val --weights models/prn_tiny.pt --out refined/
    """
    import json

    from .console import error_line, progress, stdout
    from .refine import RefineOptions, refine
    from .reporting import show_changes

    _set_threads(threads)
    weights = _weights_or_shipped(weights, "prn")
    post = {"foreground_source": foreground_source.value if foreground_source else None, "use_pred_bbox": pred_bbox,
            **_tuning(center_threshold, nms_kernel, top_k, foreground_threshold, stuff_area, box_iou)}
    options = RefineOptions(device=device.value, batch_size=batch_size, postprocess=post,
                            category_map=str(category_map) if category_map else None)
    with progress("refining") as update:
        result = refine(base, images, weights, out, options=options, overwrite=overwrite, progress=update,
                        on_failure=lambda f, why: error_line(f"skipped {f}: {why}"))
    if json_out:
        print(json.dumps({"json": str(result.json_path), "written": result.written,
                          "failed": [{"file": f, "error": e} for f, e in result.failed], "changes": result.changes,
                          "per_image": result.per_image}, indent=2))
    else:
        show_changes(result.changes, result.written)
        stdout.print(f"wrote {result.written} image(s) to {result.json_path}", highlight=False)
    if result.failed:
        error_line(f"{len(result.failed)} base image(s) could not be used and were skipped (listed above)")
        raise typer.Exit(EXIT_INVALID_INPUT)


@app.command("ablate", epilog=EPILOG)
def ablate_command(
    data: Path = typer.Option(..., "--data", help="Training GT: a panoptic JSON or a prn synth root."),
    val: Path = typer.Option(..., "--val", help="Val GT the rows are evaluated on (its images found from the "
                             "COCO / prn synth layout, or --val-images-dir)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: ablation.json, rows/<row>/ (training run, "
                             "refined set, result.json), table.md, table.json."),
    val_base: Optional[Path] = typer.Option(None, "--val-base", help="Base predictions on the val images (any "
                                            "model's panoptic set); or use --base-weights."),
    base_weights: Optional[Path] = typer.Option(None, "--base-weights", help="Base-model checkpoint (prn train "
                                                "base) that segments the val images once into RUN/base_val."),
    train_base: Optional[Path] = typer.Option(None, "--train-base", help="Base predictions on the training images, "
                                              "mixed with corrupted GT by --base-mix."),
    base_mix: float = typer.Option(0.5, "--base-mix", min=0.0, max=1.0, help="Share of training samples that use "
                                   "--train-base."),
    val_images_dir: Optional[Path] = typer.Option(None, "--val-images-dir", help="Folder of the val images."),
    val_images: int = typer.Option(0, "--val-images", min=0, help="Evaluate on the first N val images (0: all)."),
    rows: Optional[str] = typer.Option(None, "--rows", help="Comma-separated rows to run, by number (1-8) or name "
                                       "(base, fgsem, fg, fg-ccdec, fg-ccenc, fg-ccdec-ccenc, fg-bbox, "
                                       "fg-ccdec-ccenc-bbox); the base row always runs. Default: all."),
    arch: PRNArch = typer.Option(PRNArch.tiny, "--arch", help="PRN encoder preset (tiny = ResNet-18 at 1/4 width)."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON of PRNConfig fields overriding the preset "
                                          "(each row still sets its Table 1 switches)."),
    backbone_weights: Optional[Path] = TRAIN_BACKBONE_WEIGHTS,
    iters: int = typer.Option(2000, "--iters", min=1, help="Optimizer steps per row."),
    batch_size: int = TRAIN_BATCH_SIZE,
    lr: float = TRAIN_LR,
    warmup: int = TRAIN_WARMUP,
    crop: int = TRAIN_CROP,
    checkpoint_every: int = typer.Option(200, "--checkpoint-every", min=0, help="Steps between checkpoints (an "
                                         "interrupted row resumes from the last one)."),
    seed: int = typer.Option(0, "--seed", help="Seed of every row (initialisation, data order, augmentation)."),
    device: Device = typer.Option(Device.auto, "--device", help="Where to train, refine and segment."),
    amp: Amp = TRAIN_AMP,
    workers: int = typer.Option(2, "--workers", min=0, help="DataLoader and evaluation worker processes."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU intra-op threads."),
    center_threshold: Optional[float] = POST_CENTER_THRESHOLD,
    nms_kernel: Optional[int] = POST_NMS_KERNEL,
    top_k: Optional[int] = POST_TOP_K,
    foreground_threshold: Optional[float] = POST_FOREGROUND_THRESHOLD,
    stuff_area: Optional[int] = POST_STUFF_AREA,
    box_iou: Optional[float] = POST_BOX_IOU,
    refine_batch_size: int = typer.Option(1, "--refine-batch-size", min=1, help="Images per PRN forward pass when "
                                          "refining."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again: remove an earlier ablation in --out "
                                   "(needed when its options differ; without it a rerun resumes)."),
    json_out: bool = typer.Option(False, "--json", help="Print table.json on stdout (the table goes to stderr)."),
) -> None:
    """Reproduce the paper's Table 1: train PRN for each ablation row, refine the val base, evaluate, and write
    the table (RUN/table.md, RUN/table.json) with PQ / PQth / PQst and the gain over the base. Rerun the same
    command to resume an interrupted ablation row by row. Multi-GPU: torchrun --nproc_per_node N -m prn_cli
    ablate ... (training is distributed; rank 0 refines and evaluates).

    Example: prn ablate --data data/ --val val/ --base-weights runs/base/model_final.pt --out runs/ablation
    """
    import json

    from .ablate import AblationOptions, ablation_table, console_progress, run_ablation
    from .console import stderr, stdout

    options = AblationOptions(
        data=str(data), val=str(val), val_base=str(val_base) if val_base else None,
        base_weights=str(base_weights) if base_weights else None, train_base=str(train_base) if train_base else None,
        val_images_dir=str(val_images_dir) if val_images_dir else None, val_images=val_images, arch=arch.value,
        config_file=str(config) if config else None,
        backbone_weights=str(backbone_weights) if backbone_weights else None, iters=iters, batch_size=batch_size,
        lr=lr, warmup=warmup, crop=crop, base_mix=base_mix, seed=seed, checkpoint_every=checkpoint_every,
        amp=amp.value, rows=tuple(r for r in rows.split(",") if r.strip()) if rows else None, device=device.value,
        workers=workers, threads=threads, refine_batch_size=refine_batch_size,
        postprocess=_tuning(center_threshold, nms_kernel, top_k, foreground_threshold, stuff_area, box_iou))
    with console_progress() as update:
        result = run_ablation(out, options, update, overwrite=overwrite)
    if not result.main:
        return
    (stderr if json_out else stdout).print(ablation_table(result.table))
    if json_out:
        print(json.dumps(result.table, indent=2, ensure_ascii=False))
    else:
        stdout.print(f"table: {result.table_md} and {result.table_json}", highlight=False)


@app.command("info", epilog=EPILOG)
def info_command(
    checkpoints: Optional[List[Path]] = typer.Argument(None, help="prn checkpoints (default: the shipped ones)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summaries as JSON on stdout."),
) -> None:
    """Describe prn checkpoints: kind, architecture, switches, post-processing and categories.

    Example: prn info runs/prn/model_final.pt
    """
    import json

    from .checkpoint import describe_checkpoint
    from .console import stdout
    from .reporting import checkpoint_table
    from .shipped import SHIPPED, shipped_weights

    paths = list(checkpoints or []) or [shipped_weights(kind) for kind in SHIPPED]
    infos = [describe_checkpoint(p) for p in paths]
    if json_out:
        print(json.dumps(infos, indent=2))
        return
    for info in infos:
        stdout.print(checkpoint_table(info))


@app.command("demo", epilog=EPILOG)
def demo_command(
    out: Path = typer.Option(Path("prn-demo"), "--out", "-o", help="Folder for everything the demo writes."),
    n: int = typer.Option(8, "--n", min=1, help="Number of synthetic images."),
    size: str = typer.Option("256x256", "--size", help="Image size WxH (the shipped models saw 256x256)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the synthetic images."),
    base_weights: Optional[Path] = typer.Option(None, "--base-weights", help="MS-PanopticFPN checkpoint "
                                                "(default: the shipped one)."),
    prn_weights: Optional[Path] = typer.Option(None, "--prn-weights", help="PRN checkpoint (default: the shipped "
                                               "one)."),
    corrupted_base: bool = typer.Option(False, "--corrupted-base", help="Refine corrupted ground truth (a stand-in "
                                        "for another model's output) instead of prn segment's."),
    device: Device = typer.Option(Device.auto, "--device", help="Where to run the networks."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=0, help="Evaluation worker processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier demo in --out."),
) -> None:
    """The whole pipeline on fresh synthetic data with the shipped models: synth -> segment -> refine -> eval
    (base vs refined) -> viz panels (image | base | refined | ground truth).

    Example: prn demo --out prn-demo --overwrite
    """
    from .console import progress, stdout
    from .demo import run_demo
    from .reporting import show_report

    width, height = _parse_size(size)
    result = run_demo(out, n=n, width=width, height=height, seed=seed, overwrite=overwrite, workers=workers,
                      base_weights=base_weights, prn_weights=prn_weights, corrupted_base=corrupted_base,
                      device=device.value, progress=progress)
    show_report(result.report)
    stdout.print(f"data:    {result.gt_json}\nbase:    {result.base_json}\nrefined: {result.refined_json}\n"
                 f"report:  {result.report_json}\npanels:  {result.viz_dir} (open {result.gallery})", highlight=False)


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
