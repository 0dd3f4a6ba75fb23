"""What every command shares: option aliases (one name, help and metavar per concept), enums, and small
torch-free checks that run before any heavy import."""

from __future__ import annotations

import functools
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, List, Optional

import typer

from ..errors import PrnError

EPILOG = ("Exit codes: 0 ok, 1 runtime error, 2 usage error or existing output, 3 invalid input data, "
          "130 interrupted. Data goes to stdout; progress, warnings and errors to stderr.")
CONTEXT = {"help_option_names": ["-h", "--help"]}


#: What Ctrl-C says in every command that can continue where it stopped (README, "exit codes").
RESUME_HINT = "rerun with --resume to continue"


class Interrupted(PrnError):
    """Ctrl-C: say so on stderr (and how to continue), exit 130 as shells expect."""

    exit_code = 130


def command(app: typer.Typer, name: str, *, resume_hint: str | None = None, **kwargs) -> Callable:
    """Register ``fn`` as command ``name`` of ``app``; Ctrl-C inside it ends as one line and exit 130."""
    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kw):
            try:
                return fn(*args, **kw)
            except KeyboardInterrupt:
                hint = f"; {resume_hint}" if resume_hint else ""
                raise Interrupted(f"interrupted{hint}") from None

        app.command(name, epilog=EPILOG, **kwargs)(run)
        return fn

    return register


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Amp(str, Enum):
    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"


class BaseArch(str, Enum):
    tiny = "tiny"
    r18 = "r18"
    r34 = "r34"
    r50 = "r50"
    r101 = "r101"


class PRNArch(str, Enum):
    tiny = "tiny"
    r18 = "r18"
    r50 = "r50"


class RestoreChoice(str, Enum):
    none = "none"
    things = "things"
    all = "all"


class ForegroundSource(str, Enum):
    foreground = "foreground"
    semantic = "semantic"


def _path(*names: str, help: str, metavar: str = "PATH", **kw):
    return typer.Option(*names, help=help, metavar=metavar, **kw)


# --- shared option aliases ------------------------------------------------------------------------------------
Out = Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", metavar="", help="Replace an earlier result in --out.")]
JsonOut = Annotated[Optional[str], typer.Option("--json", metavar="PATH|-", help="Also write the result as JSON "
                                                "to PATH, or to stdout with '-' (the tables then go to stderr).")]
DeviceOpt = Annotated[Device, typer.Option("--device", metavar="auto|cpu|cuda",
                                           help="Where to run: CUDA when available (auto), the CPU, or CUDA.")]
Threads = Annotated[Optional[int], typer.Option("--threads", min=1, metavar="N", help="CPU intra-op threads "
                                                "(default: torch's; 1 is often fastest on small shared CPUs).")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, metavar="N", help="Images per forward pass.")]
MinSize = Annotated[int, typer.Option("--min-size", min=32, metavar="PX", help="Processing size, shorter side: a "
                                      "larger photo is shrunk to this for the network (detectron2's "
                                      "MIN_SIZE_TEST); never enlarged. The PNG is written at the photo's size.")]
MaxSize = Annotated[int, typer.Option("--max-size", min=32, metavar="PX", help="Processing size, longer side: at "
                                      "most this (detectron2's MAX_SIZE_TEST).")]
Images = Annotated[List[Path], typer.Option("--images", "-i", metavar="PATH", help="Image files or folders of "
                                            "images (repeatable).")]
Weights = Annotated[Optional[Path], typer.Option("--weights", "-w", metavar="FILE", help="Checkpoint; default: "
                                                 "the shipped tiny model trained on synthetic data.")]
EvalWorkers = Annotated[Optional[int], typer.Option("--workers", "-j", min=0, metavar="N", help="Evaluation "
                                                    "worker processes (default: one per core, at most 8; 0 = "
                                                    "none).")]
Runtime = Annotated[str, typer.Option("--runtime", metavar="torch|onnxruntime", help="torch runs a checkpoint; "
                                      "onnxruntime runs a file written by prn export (CPU; the onnx extra).")]
Resume = Annotated[bool, typer.Option("--resume", metavar="", help="Continue the interrupted run in --out.")]

# training: names are the engine's TrainConfig fields
Iters = Annotated[int, typer.Option("--iters", min=1, metavar="N", help="Optimizer steps.")]
TrainBatchSize = Annotated[int, typer.Option("--batch-size", min=1, metavar="N",
                                             help="Images per step (over all processes).")]
Lr = Annotated[float, typer.Option("--lr", min=0.0, metavar="X", help="Peak learning rate (AdamW).")]
WarmupIters = Annotated[int, typer.Option("--warmup-iters", min=0, metavar="N", help="Linear warmup steps.")]
Crop = Annotated[int, typer.Option("--crop", min=32, metavar="PX", help="Square training crop after scale "
                                   "jitter.")]
BackboneWeights = Annotated[Optional[Path], typer.Option("--backbone-weights", metavar="FILE", help="Local "
                                                         "torchvision ResNet state_dict (ImageNet) or a prn base "
                                                         "checkpoint; nothing is downloaded.")]
CheckpointEvery = Annotated[int, typer.Option("--checkpoint-every", min=0, metavar="N", help="Steps between "
                                              "checkpoints (an interrupted run resumes from the last one).")]
ValEvery = Annotated[int, typer.Option("--val-every", min=0, metavar="N", help="Steps between val PQ runs (0: "
                                       "only at the end).")]
ValLimit = Annotated[int, typer.Option("--val-limit", min=0, metavar="N", help="Evaluate on the first N val "
                                       "images (0: all).")]
AmpOpt = Annotated[Amp, typer.Option("--amp", metavar="off|bf16|fp16", help="Mixed precision on CUDA.")]
NumWorkers = Annotated[int, typer.Option("--num-workers", min=0, metavar="N", help="DataLoader worker "
                                         "processes.")]
Seed = Annotated[int, typer.Option("--seed", metavar="N", help="Seed for initialisation, data order and "
                                   "augmentation.")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", metavar="FILE", help="JSON of model config fields "
                                                    "overriding the preset, e.g. {\"loss\": {\"mask\": 2.0}}.")]
PRNArchOpt = Annotated[PRNArch, typer.Option("--arch", metavar="tiny|r18|r50", help="PRN encoder preset (tiny = "
                                             "ResNet-18 at 1/4 width).")]
BaseMix = Annotated[float, typer.Option("--base-mix", min=0.0, max=1.0, metavar="X", help="Share of training "
                                        "samples that use --base (the rest: GT corrupted the way base models "
                                        "fail).")]
StrengthRange = Annotated[str, typer.Option("--strength-range", metavar="LOW,HIGH", help="Corruption strength "
                                            "range (0 = GT, 1 = a poor base).")]

# PRN post-processing: names are PostProcessConfig's fields
ForegroundSourceOpt = Annotated[Optional[ForegroundSource], typer.Option(
    "--foreground-source", metavar="foreground|semantic", help="Foreground mask from the foreground branch or "
    "from semantics (Table 1: Foreground / ForegroundSem).")]
UsePredBbox = Annotated[Optional[bool], typer.Option("--use-pred-bbox/--no-use-pred-bbox", metavar="",
                                                     help="Group pixels with the predicted boxes (Table 1: "
                                                     "PredBbox; needs the box branch).")]
CenterThreshold = Annotated[Optional[float], typer.Option("--center-threshold", metavar="X",
                                                          help="Centre heatmap threshold.")]
NmsKernel = Annotated[Optional[int], typer.Option("--nms-kernel", metavar="N", help="Centre max-pool NMS kernel "
                                                  "(odd).")]
TopK = Annotated[Optional[int], typer.Option("--top-k", metavar="N", help="Most centres kept per image.")]
ForegroundThreshold = Annotated[Optional[float], typer.Option("--foreground-threshold", metavar="X",
                                                              help="Foreground branch probability threshold.")]
PostStuffArea = Annotated[Optional[int], typer.Option("--stuff-area", metavar="PX", help="Smallest stuff segment "
                                                      "(pixels at 640x480, scaled with the image area).")]
BoxIouThreshold = Annotated[Optional[float], typer.Option("--box-iou-threshold", metavar="X", help="PredBbox: "
                                                          "IoU at which a pixel's box agrees with a centre's.")]
BaseSnapConfidence = Annotated[Optional[float], typer.Option("--base-snap-confidence", metavar="X", help="Do no "
                                                             "harm: where PRN's confidence is below X, keep the "
                                                             "base's boundaries (0 = off).")]
RestoreBaseSegments = Annotated[Optional[RestoreChoice], typer.Option(
    "--restore-base-segments", metavar="none|things|all", help="Do no harm: put back the base's segments that PRN "
    "dropped: things (on pixels it left to stuff or void), or all (stuff too, on pixels it left void).")]


ReclaimOtherClasses = Annotated[Optional[bool], typer.Option(
    "--reclaim-other-classes/--no-reclaim-other-classes", metavar="", help="Do no harm, with "
    "--restore-base-segments: a base thing that PRN swallowed into a thing of another class takes its pixels back.")]


MinJoinContact = Annotated[Optional[float], typer.Option(
    "--min-join-contact", metavar="X", help="Do no harm: base things that PRN joined are separated again "
    "unless they are of one class and share a boundary of at least X x sqrt(the smaller one's area) pixels "
    "(0 = off).")]
KeepBaseThingClass = Annotated[Optional[bool], typer.Option(
    "--keep-base-thing-class/--no-keep-base-thing-class", metavar="", help="Do no harm: a refined thing that "
    "matches a base thing keeps the base thing's class.")]


BoundaryRadius = Annotated[Optional[int], typer.Option(
    "--boundary-radius", metavar="PX", help="Re-cut every thing's boundary within PX pixels by PRN's boundary "
    "refiner (checkpoints that have one; 0 = off).")]


BoundaryConfidence = Annotated[Optional[float], typer.Option(
    "--boundary-confidence", metavar="X", help="With --boundary-radius: move a pixel only where the boundary "
    "refiner's probability is above X (joining a thing) or below 1 - X (leaving one); 0.5 to 1.")]


BoundaryMinArea = Annotated[Optional[int], typer.Option(
    "--boundary-min-area", metavar="PX", help="With --boundary-radius: things with fewer pixels keep the base's "
    "mask (0 = re-cut every thing).")]


BoundaryMinGain = Annotated[Optional[float], typer.Option(
    "--boundary-min-gain", metavar="X", help="With --boundary-radius: keep a thing's re-cut only when the refiner "
    "expects it to set right at least X x the thing's area more pixels than it sets wrong (0 to 1; 0 = always).")]


BoundaryMinCoverage = Annotated[Optional[float], typer.Option(
    "--boundary-min-coverage", metavar="X", help="With --boundary-radius: keep a thing's re-cut only when the "
    "pixels it moves lie along at least X of the thing's boundary (0 to 1; 0 = always).")]


ClassifierConfidence = Annotated[Optional[float], typer.Option(
    "--classifier-confidence", metavar="X", help="Relabel a thing where PRN's thing classifier (checkpoints that "
    "have one) gives another thing class a probability above X (0 = off).")]


ClassifierSmallArea = Annotated[Optional[int], typer.Option(
    "--classifier-small-area", metavar="PX", help="With --classifier-confidence: a thing of fewer pixels (at the "
    "processing size) is relabelled only above --classifier-small-confidence (0 = one threshold for all).")]


ClassifierSmallConfidence = Annotated[Optional[float], typer.Option(
    "--classifier-small-confidence", metavar="X", help="With --classifier-small-area: the classifier's probability "
    "a small thing's new class needs (the larger of this and --classifier-confidence counts).")]


ClassifierRemoveConfidence = Annotated[Optional[float], typer.Option(
    "--classifier-remove-confidence", metavar="X", help="Remove a thing (its pixels become void) where PRN's thing "
    "classifier, trained with a 'no thing' class, gives that class a probability above X: a false detection, or "
    "a split's smaller half for a classifier that learnt from every unmatched thing (0 = off).")]


ClassifierJoinShare = Annotated[Optional[float], typer.Option(
    "--classifier-join-share", metavar="F", help="With --classifier-remove-confidence: a removed thing that shares "
    "at least this fraction of its boundary with a kept thing of its category joins it instead of turning void "
    "(a split's smaller half; 0 = off).")]


ClassifierSplitConfidence = Annotated[Optional[float], typer.Option(
    "--classifier-split-confidence", metavar="X", help="Cut a thing that holds two objects (a base's merge) in two "
    "where PRN's thing classifier reads both parts of the better of two cuts as things with a probability above X and "
    "above the whole's (0 = off).")]


VoidThingConfidence = Annotated[Optional[float], typer.Option(
    "--void-thing-confidence", metavar="X", help="Find things left void: a region that the refined map leaves void "
    "and PRN reads as a thing becomes one where PRN's thing classifier gives a class a probability above X "
    "(0 = off).")]


VoidThingMinArea = Annotated[Optional[int], typer.Option(
    "--void-thing-min-area", metavar="PX", help="With --void-thing-confidence: smaller regions (pixels at the "
    "processing size) stay void.")]


def post_overrides(*, foreground_source=None, use_pred_bbox=None, center_threshold=None, nms_kernel=None,
                   top_k=None, foreground_threshold=None, stuff_area=None, box_iou_threshold=None,
                   restore_base_segments=None, reclaim_other_classes=None, base_snap_confidence=None,
                   min_join_contact=None, keep_base_thing_class=None, boundary_radius=None,
                   boundary_confidence=None, boundary_min_area=None, boundary_min_gain=None,
                   boundary_min_coverage=None,
                   classifier_confidence=None, classifier_small_area=None, classifier_small_confidence=None,
                   classifier_remove_confidence=None, classifier_join_share=None, classifier_split_confidence=None,
                   void_thing_confidence=None,
                   void_thing_min_area=None):
    """The PRN post-processing overrides given on the command line (validated: a bad value is exit 2)."""
    from ..options import PostProcessOverrides

    return PostProcessOverrides(
        foreground_source=foreground_source.value if isinstance(foreground_source, Enum) else foreground_source,
        use_pred_bbox=use_pred_bbox, center_threshold=center_threshold, nms_kernel=nms_kernel, top_k=top_k,
        foreground_threshold=foreground_threshold, stuff_area=stuff_area, box_iou_threshold=box_iou_threshold,
        restore_base_segments=restore_base_segments.value if isinstance(restore_base_segments, Enum)
        else restore_base_segments, reclaim_other_classes=reclaim_other_classes,
        base_snap_confidence=base_snap_confidence, min_join_contact=min_join_contact,
        keep_base_thing_class=keep_base_thing_class, boundary_radius=boundary_radius,
        boundary_confidence=boundary_confidence, boundary_min_area=boundary_min_area,
        boundary_min_gain=boundary_min_gain, boundary_min_coverage=boundary_min_coverage,
        classifier_confidence=classifier_confidence,
        classifier_small_area=classifier_small_area, classifier_small_confidence=classifier_small_confidence,
        classifier_remove_confidence=classifier_remove_confidence, classifier_join_share=classifier_join_share,
        classifier_split_confidence=classifier_split_confidence,
        void_thing_confidence=void_thing_confidence,
        void_thing_min_area=void_thing_min_area)


# --- torch-free checks, run before the heavy imports -------------------------------------------------------------
def check_file(path: Path | None, what: str, fix: str) -> None:
    """A one-line error if ``path`` (when given) is not an existing file."""
    from ..errors import fail

    if path is None:
        return
    if not path.exists():
        raise fail(path, f"{what} does not exist", fix)
    if path.is_dir():
        raise fail(path, f"is a folder, not a {what}", fix)


def check_weights(path: Path | None, kind: str) -> None:
    fix = f"pass the model_final.pt of a `prn train {kind}` run, or leave out the option for the shipped model"
    check_file(path, "checkpoint file", fix)


def check_out_dir(out: Path) -> None:
    """``--out`` must be a folder (or not exist yet)."""
    from ..errors import fail

    if out.exists() and not out.is_dir():
        raise fail(out, "exists and is a file", "choose a folder for --out")


def check_set_output(out: Path, overwrite: bool, *, resume: bool = False) -> None:
    """``--out`` would receive a panoptic set: refuse early (before torch loads) when one is already there."""
    from ..errors import OutputExistsError
    from ..panoptic import set_paths

    check_out_dir(out)
    json_path, _ = set_paths(out)
    if json_path.exists() and not overwrite and not resume:
        raise OutputExistsError(f"{out} already holds a panoptic set ({json_path.name}); pass --overwrite to "
                                "replace it or choose another --out")


def shipped_or(weights: Path | None, kind: str) -> Path:
    """``weights``, or the shipped checkpoint of ``kind`` (said on stderr)."""
    if weights is not None:
        return weights
    from ..console import info
    from ..shipped import describe, shipped_weights

    path = shipped_weights(kind)
    info(describe(kind, path))
    return path


# --- reading other frameworks' predictions (prn convert, prn refine --base-format) --------------------------------
Categories = Annotated[Optional[Path], typer.Option("--categories", metavar="CATS", help="JSON with the categories "
                                                    "to convert into: a panoptic JSON (e.g. the ground truth), a "
                                                    "bare list of {id, name, isthing}, or 'cityscapes'.")]
ImagesJson = Annotated[Optional[Path], typer.Option("--images-json", metavar="FILE", help="COCO JSON whose images "
                                                    "records give image ids, file names and sizes (e.g. the ground "
                                                    "truth, for prn eval).")]
Id2Label = Annotated[Optional[Path], typer.Option("--id2label", metavar="FILE", help="The model's label names: its "
                                                  "config.json, a {\"0\": \"name\"} JSON or a JSON list (for "
                                                  "--label-map name).")]
LabelMapOpt = Annotated[Optional[str], typer.Option("--label-map", metavar="index|id|name|separated", help="Label "
                                                    "-> category: i-th category in id order, the category id, by "
                                                    "name through --id2label, or detectron2's separated thing/stuff "
                                                    "labels (default: the format's).")]
LabelDivisor = Annotated[int, typer.Option("--label-divisor", min=1, metavar="D", help="D of category * D + "
                                           "instance (divisor, detectron2's Panoptic-DeepLab form).")]
VoidLabel = Annotated[Optional[int], typer.Option("--void", metavar="V", help="Class label meaning void (divisor: "
                                                  "none, 2ch: 0, mmdet arrays: the number of categories; negative "
                                                  "values are always void).")]


def convert_options(*, label_map=None, id2label=None, label_divisor=1000, void=None, images_json=None):
    """The conversion options given on the command line (a bad value is exit 2)."""
    from ..convert.options import ConvertOptions

    check_file(id2label, "id2label JSON", "pass the model's config.json or a {\"0\": \"name\"} JSON")
    check_file(images_json, "images JSON", "pass the dataset JSON whose 'images' list the predicted images")
    return ConvertOptions(label_map=label_map, id2label=str(id2label) if id2label else None,
                          label_divisor=label_divisor, void=void,
                          images_json=str(images_json) if images_json else None)
