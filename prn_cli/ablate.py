"""``prn ablate``: reproduce the paper's Table 1 on any dataset (docs/design.md, "Table 1 and prn ablate").

Every row of :data:`TABLE1_ROWS` is one PRN configuration (Table 1's switches: the foreground branch or the
semantic foreground, CoordConv in the decoders, CoordConv in the encoder, the box branch with PredBbox
grouping); row 1 is the base itself. For each PRN row the ablation trains PRN on the training set (same seed,
same data, same schedule for every row), refines the val base predictions and evaluates them against the val
ground truth; the base row evaluates the val base as it is. The table (Markdown and JSON) gives PQ / PQth /
PQst of every row and its PQ gain over the base, beside the paper's COCO figures.

Run folder ``RUN``::

    RUN/ablation.json             the options that decide the results (a re-run must use the same ones)
    RUN/base_val/                 the val base, when it is made here (segmented with --base-weights, or the
                                  first --val-images of a given --val-base)
    RUN/rows/<slug>/              one row: last.pt, model_final.pt, metrics.jsonl (the training run),
                                  refined/ (its refined val set) and result.json (its PQ, written last)
    RUN/table.md, RUN/table.json  the table, rewritten (atomically) after every row; it holds every row of
                                  the folder that has a result, also rows left out by --rows in this call

Resuming: a row with ``result.json`` is done and reused; one with ``model_final.pt`` is only refined and
evaluated; one with ``last.pt`` alone continues its training exactly where it stopped (the engine's exact
resume); any other row is trained from the start. So an interrupted ablation is simply run again.

With ``torchrun`` every process trains each row together (DistributedDataParallel); refining, evaluating and
every file the ablation writes are the job of rank 0, which does them after all rows are trained (the other
processes then exit), so no process waits for another's evaluation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .errors import InvalidInputError, OutputExistsError, PrnError, fail

#: ``progress(stage, done, total)``: called (on rank 0) as the ablation moves; ``stage`` reads like
#: ``"[3/8] fg-ccdec: train"``.
ProgressFn = Callable[[str, int, int], None]

OPTIONS_NAME = "ablation.json"
RESULT_NAME = "result.json"
TABLE_MD = "table.md"
TABLE_JSON = "table.json"
BASE_VAL_DIR = "base_val"
ROWS_DIR = "rows"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------------------------
# the rows of Table 1


@dataclass(frozen=True)
class AblationRow:
    """One row of Table 1: the PRN switches, the post-processing, and the paper's COCO val figures (percent)."""

    index: int                      # 1-based row number in docs/design.md, "Table 1 and prn ablate"
    slug: str                       # folder name under RUN/rows/ and the name --rows takes
    method: str                     # as in the paper's table
    prn: bool                       # False for row 1 (the base, no PRN)
    foreground_head: bool = False
    coordconv_decoder: bool = False
    coordconv_encoder: bool = False
    box_head: bool = False
    foreground_source: str = "foreground"
    use_pred_bbox: bool = False
    paper_pq: float = 0.0
    paper_pq_th: float = 0.0
    paper_pq_st: float = 0.0

    @property
    def marks(self) -> dict[str, bool]:
        """The ticks of the paper's table columns."""
        return {"Foreground": self.prn and self.foreground_head and self.foreground_source == "foreground",
                "ForegroundSem": self.prn and self.foreground_source == "semantic",
                "CoordConvDec": self.coordconv_decoder, "CoordConvEnc": self.coordconv_encoder,
                "PredBbox": self.use_pred_bbox}

    @property
    def postprocess(self) -> dict:
        return {"foreground_source": self.foreground_source, "use_pred_bbox": self.use_pred_bbox}

    @property
    def switches(self) -> dict:
        return {"foreground_head": self.foreground_head, "coordconv_decoder": self.coordconv_decoder,
                "coordconv_encoder": self.coordconv_encoder, "box_head": self.box_head}


def _prn(index, slug, *, fg=True, sem=False, dec=False, enc=False, bbox=False, paper=(0.0, 0.0, 0.0)):
    return AblationRow(index, slug, "PRN", True, foreground_head=fg, coordconv_decoder=dec, coordconv_encoder=enc,
                       box_head=bbox, foreground_source="semantic" if sem else "foreground", use_pred_bbox=bbox,
                       paper_pq=paper[0], paper_pq_th=paper[1], paper_pq_st=paper[2])


#: docs/design.md, "Table 1 and prn ablate", in order. Row 1 is the base; ForegroundSem is a PRN without the
#: foreground branch, whose post-processing takes the foreground from the semantic branch.
TABLE1_ROWS: tuple[AblationRow, ...] = (
    AblationRow(1, "base", "MS-PFPN", False, foreground_source="foreground", paper_pq=40.6, paper_pq_th=46.6,
                paper_pq_st=31.6),
    _prn(2, "fgsem", fg=False, sem=True, paper=(41.4, 47.3, 32.6)),
    _prn(3, "fg", paper=(41.9, 47.9, 33.1)),
    _prn(4, "fg-ccdec", dec=True, paper=(42.2, 48.1, 33.2)),
    _prn(5, "fg-ccenc", enc=True, paper=(42.0, 47.8, 33.0)),
    _prn(6, "fg-ccdec-ccenc", dec=True, enc=True, paper=(42.5, 48.5, 33.5)),
    _prn(7, "fg-bbox", bbox=True, paper=(43.1, 48.9, 33.2)),
    _prn(8, "fg-ccdec-ccenc-bbox", dec=True, enc=True, bbox=True, paper=(44.4, 50.9, 34.4)),
)

ROW_SLUGS = tuple(r.slug for r in TABLE1_ROWS)


def select_rows(names: Sequence[str | int] | None) -> list[AblationRow]:
    """The rows named by slug or 1-based number (``None``/empty: all), in table order; the base row is always
    included (every delta is taken against it)."""
    if not names:
        return list(TABLE1_ROWS)
    wanted = {1}
    for name in names:
        text = str(name).strip()
        if text.isdigit() and 1 <= int(text) <= len(TABLE1_ROWS):
            wanted.add(int(text))
            continue
        match = [r.index for r in TABLE1_ROWS if r.slug == text.lower()]
        if not match:
            raise InvalidInputError(f"unknown ablation row {text!r}; use a row number 1-{len(TABLE1_ROWS)} or one "
                                    f"of {', '.join(ROW_SLUGS)}")
        wanted.add(match[0])
    return [r for r in TABLE1_ROWS if r.index in wanted]


# --------------------------------------------------------------------------------------------------------------
# options and results


@dataclass
class AblationOptions:
    """What an ablation trains on and evaluates. Give the val base as a set (``val_base``) or as a base-model
    checkpoint (``base_weights``) that segments the val images once into ``RUN/base_val``."""

    data: str                                #: training GT (panoptic JSON or prn synth root)
    val: str                                 #: val GT
    val_base: str | None = None              #: base predictions on the val images (a panoptic set)
    base_weights: str | None = None          #: or: a base-model checkpoint (prn train base) to segment them
    train_base: str | None = None            #: optional base predictions on the training images
    val_images_dir: str | None = None        #: the val images (default: from the GT's COCO / prn synth layout)
    val_images: int = 0                      #: use the first N val images (0 = all)
    arch: str = "tiny"                       #: PRN preset (train.PRN_ARCHS)
    config_file: str | None = None           #: JSON of PRNConfig fields over the preset (switches still per row)
    backbone_weights: str | None = None      #: local torchvision ResNet state_dict for the PRN encoder
    iters: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    warmup: int = 100
    crop: int = 256
    base_mix: float = 0.5                    #: share of samples from train_base (when given)
    seed: int = 0
    checkpoint_every: int = 200
    amp: str = "off"
    #: which rows to run (slugs or numbers; None = all 8; the base row always runs)
    rows: tuple[str, ...] | None = None
    # --- how, not what: these may change between runs of one folder
    device: str = "auto"
    workers: int = 2                         #: DataLoader (and evaluation) worker processes
    threads: int | None = None               #: CPU intra-op threads
    refine_batch_size: int = 1
    #: PostProcessConfig overrides for every PRN row (e.g. ``{"stuff_area": 16384}``); each row still sets its
    #: Table 1 post-processing (foreground source, PredBbox). A change only re-refines: trained rows are reused.
    postprocess: dict = field(default_factory=dict)

    def __post_init__(self):
        clash = {"foreground_source", "use_pred_bbox"} & set(self.postprocess)
        if clash:
            raise ValueError(f"post-processing override(s) {sorted(clash)} are set by each Table 1 row")

    def row_postprocess(self, row: "AblationRow") -> dict:
        """The post-processing ``row`` refines with: the overrides, then the row's own switches."""
        return {**self.postprocess, **row.postprocess}

    #: options that do not change the results, so a run folder accepts new values of them
    HOW = ("rows", "device", "workers", "threads", "refine_batch_size", "checkpoint_every")


@dataclass
class AblationResult:
    run_dir: Path
    rows: list[dict]                      # the rows of table.json (empty on ranks other than 0)
    table: dict | None                    # table.json's content (None on ranks other than 0)
    table_md: Path | None
    table_json: Path | None
    trained: list[str] = field(default_factory=list)    # rows trained from scratch in this call
    resumed: list[str] = field(default_factory=list)    # rows whose interrupted training was continued
    evaluated: list[str] = field(default_factory=list)  # rows refined and evaluated in this call
    reused: list[str] = field(default_factory=list)     # rows whose cached result.json was used
    main: bool = True                                   # False on torchrun ranks other than 0


# --------------------------------------------------------------------------------------------------------------
# the run folder's identity


def _abs(path: str | os.PathLike | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _file_digest(path: str | os.PathLike | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def options_record(options: AblationOptions) -> dict:
    """The options that decide an ablation's results, as stored in ``RUN/ablation.json``: paths absolute, the
    model config file by content; :attr:`AblationOptions.HOW` left out (they may change between runs)."""
    record = {}
    for f in dataclasses.fields(options):
        if f.name in AblationOptions.HOW:
            continue
        value = getattr(options, f.name)
        if f.name in ("data", "val", "val_base", "base_weights", "train_base", "val_images_dir", "config_file",
                      "backbone_weights"):
            value = _abs(value)
        record[f.name] = value
    record["config_file_sha256"] = _file_digest(options.config_file)
    return record


def _only_postprocess_differs(old: dict, new: dict) -> bool:
    return {k: v for k, v in old.items() if k != "postprocess"} == {k: v for k, v in new.items() if k != "postprocess"}


def _forget_results(run: Path) -> None:
    """New post-processing: every PRN row is refined and evaluated again; trained weights stay (and the base row,
    which is not post-processed, keeps its result)."""
    base_row = _row_dir(run, TABLE1_ROWS[0])
    results = [p for p in (run / ROWS_DIR).glob(f"*/{RESULT_NAME}") if p.parent != base_row]
    for path in [run / TABLE_MD, run / TABLE_JSON, *results]:
        path.unlink(missing_ok=True)
    for refined in (run / ROWS_DIR).glob("*/refined"):
        shutil.rmtree(refined, ignore_errors=True)


def _describe_difference(old: dict, new: dict) -> str:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key} {old.get(key)!r} there, {new.get(key)!r} now"
    return "no difference"


def _prepare_folder(run: Path, options: AblationOptions, overwrite: bool) -> None:
    """Check (or write) RUN/ablation.json; with ``overwrite`` remove everything an earlier ablation wrote."""
    from .io import write_json_atomic
    from .panoptic import read_json

    record = {"format": FORMAT_VERSION, "options": options_record(options)}
    marker = run / OPTIONS_NAME
    ours = [run / ROWS_DIR, run / BASE_VAL_DIR, run / TABLE_MD, run / TABLE_JSON]
    if marker.exists() and not overwrite:
        try:
            old = read_json(marker, what="ablation options")
            old_options = old.get("options") if isinstance(old, dict) else None
        except InvalidInputError:
            old_options = None
        if old_options is None:
            raise OutputExistsError(f"{marker}: unreadable record of an earlier ablation; pass --overwrite to start "
                                    "again or choose another run folder")
        old_options = {"postprocess": {}, **old_options}  # folders from before the option existed
        if old_options != record["options"] and _only_postprocess_differs(old_options, record["options"]):
            _forget_results(run)
            write_json_atomic(marker, record)
            return
        if old_options != record["options"]:
            raise OutputExistsError(f"{run} holds an ablation run with other options "
                                    f"({_describe_difference(old_options, record['options'])}); rerun with the same "
                                    "options to resume it, pass --overwrite to replace it, or choose another folder")
        return
    if not marker.exists() and not overwrite and (run / ROWS_DIR).exists():
        raise OutputExistsError(f"{run / ROWS_DIR} exists but {marker} does not, so it is not a prn ablation run "
                                "folder; pass --overwrite to replace it or choose another folder")
    if overwrite:
        for path in ours + [marker]:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    run.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, record)


# --------------------------------------------------------------------------------------------------------------
# inputs


@dataclass
class _Inputs:
    gt: Any                  # PanopticSet: the val GT subset that is evaluated
    images: list[Path]       # its image files, in GT order
    base_path: Path | None   # the val base to use as it is (None: RUN/base_val is made)


def _check_inputs(options: AblationOptions) -> _Inputs:
    """Read and check everything the ablation needs before anything is trained (cheap: JSON files only)."""
    from .checkpoint import load_checkpoint
    from .data import default_images_dir
    from .panoptic import PanopticSet, load_set, safe_join
    from .train import PRN_ARCHS

    if (options.val_base is None) == (options.base_weights is None):
        raise InvalidInputError("give the val base either as a set (--val-base DIR) or as a base-model checkpoint "
                                "(--base-weights FILE), exactly one of them")
    if options.arch not in PRN_ARCHS:
        raise InvalidInputError(f"unknown PRN architecture {options.arch!r}; choose one of {', '.join(PRN_ARCHS)}")
    if options.val_images < 0:
        raise InvalidInputError(f"--val-images must be >= 0 (0 = all), got {options.val_images}")
    for name in ("config_file", "backbone_weights"):
        value = getattr(options, name)
        if value and not Path(value).is_file():
            raise fail(value, f"{name.replace('_', ' ')} is missing", "check the path")
    load_set(options.data)
    if options.train_base:
        load_set(options.train_base, need_categories=False)
    gt = load_set(options.val)
    images_dir = Path(options.val_images_dir) if options.val_images_dir else default_images_dir(gt.json_path)
    if images_dir is None:
        raise fail(gt.json_path, "cannot tell where the val images are", "pass --val-images-dir or use a prn "
                   "synth root or the COCO layout (annotations/panoptic_<split>.json beside images/<split>/)")
    if not images_dir.is_dir():
        raise fail(images_dir, "val images folder does not exist", "pass --val-images-dir")
    keep = gt.annotations[: options.val_images or None]
    if not keep:
        raise fail(gt.json_path, "the val ground truth holds no annotation", "use a non-empty val set")
    infos = gt.images_by_id
    missing = [a["image_id"] for a in keep if a["image_id"] not in infos]
    if missing:
        raise fail(gt.json_path, f"annotation of image_id {missing[0]} has no image record", "fix the val JSON")
    subset = PanopticSet(gt.json_path, gt.png_dir, gt.categories, [infos[a["image_id"]] for a in keep], keep,
                         gt.extra)
    images = [safe_join(images_dir, infos[a["image_id"]]["file_name"], gt.json_path, "image file_name")
              for a in keep]
    absent = [p for p in images if not p.is_file()]
    if absent:
        raise fail(absent[0], "val image is missing", "pass the folder of the val images with --val-images-dir")
    base_path = None
    if options.val_base is not None:
        base = load_set(options.val_base, need_categories=False)
        have = {a["image_id"] for a in base.annotations}
        lacking = [a["image_id"] for a in keep if a["image_id"] not in have]
        if lacking:
            raise fail(base.json_path, f"has no prediction for val image_id {lacking[0]} ({len(lacking)} missing)",
                       "predict the base on every val image (or lower --val-images)")
        if not options.val_images or len(keep) == len(gt.annotations):
            base_path = base.json_path
    else:
        load_checkpoint(options.base_weights, kind="base")
    return _Inputs(subset, images, base_path)


def _make_base_val(run: Path, options: AblationOptions, inputs: _Inputs, progress: ProgressFn,
                   stage: str = "base") -> Path:
    """The val base to refine: the given set, else RUN/base_val (made once: segmented, or a subset copy)."""
    from .panoptic import PanopticWriter, load_set, set_paths
    from .segment import PROGRESS_NAME, SegmentOptions, segment

    if inputs.base_path is not None:
        return inputs.base_path
    out = run / BASE_VAL_DIR
    json_path, png_dir = set_paths(out)
    pending = out / PROGRESS_NAME
    if json_path.exists() and not pending.exists():
        return json_path
    stage = f"{stage}: " + ("segment val images" if options.base_weights else "copy the val subset")
    if options.base_weights:
        seg_options = SegmentOptions(device=options.device, images_json=str(inputs.gt.json_path))
        segment(inputs.images, options.base_weights, out, options=seg_options, resume=pending.exists(),
                overwrite=True, progress=lambda d, t: progress(stage, d, t))
        return json_path
    base = load_set(options.val_base, need_categories=False)
    by_image = base.annotations_by_image()
    records = base.images_by_id
    keep = [by_image[a["image_id"]] for a in inputs.gt.annotations]
    with PanopticWriter(json_path, png_dir, base.categories, overwrite=True,
                        info={"description": "prn ablate: the first val images of the base",
                              "source": str(base.json_path)}) as writer:
        for k, ann in enumerate(keep):
            target = png_dir / ann["file_name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            source = base.png_path(ann)
            if not source.is_file():
                raise fail(source, "base PNG is missing", f"regenerate the val base {base.json_path}")
            shutil.copyfile(source, target)
            image = records.get(ann["image_id"]) or {"id": ann["image_id"], "file_name": ann["file_name"]}
            writer.adopt(image, ann)
            progress(stage, k + 1, len(keep))
    return json_path


# --------------------------------------------------------------------------------------------------------------
# one row


def _row_dir(run: Path, row: AblationRow) -> Path:
    return run / ROWS_DIR / row.slug


def _row_state(run: Path, row: AblationRow) -> str:
    """"done" (result.json), "trained" (model_final.pt), "resume" (last.pt only) or "train" (nothing yet)."""
    from .engine import FINAL_NAME, LAST_NAME

    d = _row_dir(run, row)
    if (d / RESULT_NAME).is_file():
        return "done"
    if not row.prn:
        return "trained"
    if (d / FINAL_NAME).is_file():
        return "trained"
    if (d / LAST_NAME).is_file():
        return "resume"
    return "train"


def _train_row(run: Path, row: AblationRow, options: AblationOptions, resume: bool, stage: str,
               progress: ProgressFn) -> dict:
    from .engine import TrainConfig
    from .train import PRNTrainingOptions, train_prn

    out = _row_dir(run, row)
    try:
        cfg = TrainConfig(out_dir=str(out), iters=options.iters, batch_size=options.batch_size, lr=options.lr,
                          warmup_iters=options.warmup, checkpoint_every=options.checkpoint_every, val_every=0,
                          device=options.device, amp=options.amp, num_workers=options.workers, seed=options.seed,
                          resume=resume, channels_last=options.device != "cpu")
        train_options = PRNTrainingOptions(arch=options.arch, config_file=options.config_file, crop=options.crop,
                                           base_mix=options.base_mix, backbone_weights=options.backbone_weights,
                                           val_images=0, postprocess=options.row_postprocess(row),
                                           **row.switches)
    except ValueError as exc:
        raise InvalidInputError(f"ablation options: {exc}") from None
    return train_prn(options.data, cfg, train_options, base=options.train_base,
                     progress=lambda step, total, losses: progress(stage, step, total))


def _scores(groups: dict) -> dict:
    return {"pq": groups["All"]["pq"], "sq": groups["All"]["sq"], "rq": groups["All"]["rq"],
            "pq_th": groups["Things"]["pq"], "sq_th": groups["Things"]["sq"], "rq_th": groups["Things"]["rq"],
            "pq_st": groups["Stuff"]["pq"], "sq_st": groups["Stuff"]["sq"], "rq_st": groups["Stuff"]["rq"]}


def _finish_row(run: Path, row: AblationRow, options: AblationOptions, inputs: _Inputs, base_val: Path,
                train_summary: dict | None, stage: str, progress: ProgressFn) -> dict:
    """Refine the val base with the row's PRN (the base row: nothing), evaluate, write result.json."""
    from .engine import FINAL_NAME
    from .evaluate import evaluate
    from .io import write_json_atomic
    from .refine import RefineOptions, refine

    d = _row_dir(run, row)
    d.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    refine_info = None
    pred = base_val
    if row.prn:
        progress(f"{stage}: refine", 0, len(inputs.images))
        refined = refine(base_val, inputs.images, d / FINAL_NAME, d / "refined", overwrite=True,
                         options=RefineOptions(device=options.device, batch_size=options.refine_batch_size,
                                               postprocess=options.row_postprocess(row)),
                         progress=lambda done, total: progress(f"{stage}: refine", done, total))
        if refined.failed:
            path, why = refined.failed[0]
            raise InvalidInputError(f"row {row.slug}: {len(refined.failed)} val base image(s) could not be refined, "
                                    f"first {path}: {why}")
        refine_info = {"written": refined.written, "changes": refined.changes}
        pred = refined.json_path
    progress(f"{stage}: evaluate", 0, len(inputs.gt.annotations))
    report = evaluate(inputs.gt, [pred], workers=options.workers,
                      progress=lambda done, total: progress(f"{stage}: evaluate", done, total))
    result = {"format": FORMAT_VERSION, "row": row.index, "slug": row.slug, **_scores(report.results[0].groups),
              "images": report.results[0].num_images, "prediction": str(pred),
              "warnings": report.warnings + report.results[0].warnings, "refine": refine_info,
              "train": ({k: getattr(train_summary, k) for k in ("steps", "start_step", "seconds", "world_size", "device")}
                        if train_summary else None),
              "eval_seconds": time.perf_counter() - started}
    write_json_atomic(d / RESULT_NAME, result)
    return result


# --------------------------------------------------------------------------------------------------------------
# the table


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def build_table(rows: Sequence[AblationRow], results: dict[str, dict], options: AblationOptions,
                val_images: int) -> dict:
    """table.json's content: one entry per row that has a result, deltas against the base row."""
    base = results.get("base") or {}
    base_paper = TABLE1_ROWS[0]
    entries = []
    for row in rows:
        r = results.get(row.slug)
        if r is None:
            continue
        entries.append({
            "row": row.index, "slug": row.slug, "method": "PRN" if row.prn else "Base", "prn": row.prn,
            **row.switches, **row.postprocess, "marks": row.marks,
            **{k: r.get(k) for k in ("pq", "pq_th", "pq_st", "sq", "rq")},
            "delta_pq": _delta(r.get("pq"), base.get("pq")), "delta_pq_th": _delta(r.get("pq_th"), base.get("pq_th")),
            "delta_pq_st": _delta(r.get("pq_st"), base.get("pq_st")),
            "paper": {"method": row.method, "pq": row.paper_pq / 100, "pq_th": row.paper_pq_th / 100,
                      "pq_st": row.paper_pq_st / 100, "delta_pq": round(row.paper_pq - base_paper.paper_pq, 1) / 100},
            "train_steps": (r.get("train") or {}).get("steps"),
        })
    return {"format": FORMAT_VERSION, "table": "Table 1 of the PRN supplementary (docs/design.md)",
            "units": "PQ, SQ, RQ and deltas as fractions (0-1); the paper's figures are COCO val",
            "val": _abs(options.val), "val_images": val_images,
            "base": _abs(options.val_base) if options.val_base else {"weights": _abs(options.base_weights)},
            "options": options_record(options), "rows": entries}


MD_COLUMNS = ("Method", "Foreground", "ForegroundSem", "CoordConvDec", "CoordConvEnc", "PredBbox", "PQ", "PQth",
              "PQst", "ΔPQ vs base", "Paper PQ (COCO)")


def table_markdown(table: dict) -> str:
    lines = [f"PRN ablation (Table 1, docs/design.md) on {table['val']} ({table['val_images']} images); "
             "PQ in percent, the paper's COCO val PQ (and its gain over MS-PFPN) for reference.", "",
             "| " + " | ".join(MD_COLUMNS) + " |", "|" + "---|" * len(MD_COLUMNS)]
    for e in table["rows"]:
        marks = ["✓" if e["marks"][c] else "" for c in MD_COLUMNS[1:6]]
        paper = e["paper"]
        paper_text = f"{100 * paper['pq']:.1f}" + (f" ({100 * paper['delta_pq']:+.1f})" if e["prn"] else "")
        cells = [e["method"], *marks, _fmt(e["pq"]), _fmt(e["pq_th"]), _fmt(e["pq_st"]),
                 _fmt(e["delta_pq"], True) if e["prn"] else "", paper_text]
        lines.append("| " + " | ".join(cells) + " |")
    o = table["options"]
    lines += ["", f"PRN {o['arch']}, {o['iters']} iterations, batch {o['batch_size']}, lr {o['lr']}, crop {o['crop']}, "
              f"seed {o['seed']}; training data {o['data']}"
              + (f"; post-processing {_plain_overrides(o.get('postprocess'))}" if o.get("postprocess") else "") + "."]
    return "\n".join(lines) + "\n"


def _plain_overrides(overrides: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(overrides.items()))


def _write_table(run: Path, table: dict) -> tuple[Path, Path]:
    from .io import atomic_output, write_json_atomic

    md, js = run / TABLE_MD, run / TABLE_JSON
    with atomic_output(md) as f:
        f.write(table_markdown(table))
    write_json_atomic(js, table)
    return md, js


def ablation_table(table: dict):
    """A Rich table of table.json's rows: the switches, PQ / PQth / PQst and the gain over the base (green up,
    red down), and the paper's COCO PQ; narrow enough for an 80-column terminal."""
    from rich import box
    from rich.table import Table

    def delta(value):
        if value is None:
            return "-"
        text = _fmt(value, True)
        if abs(value) < 5e-4:
            return text
        return f"[{'green' if value > 0 else 'red'}]{text}[/]"

    t = Table(title=f"PRN ablation (Table 1), {table['val_images']} val image(s)", title_justify="left",
              box=box.SIMPLE_HEAD, caption="Fg Foreground, Sem ForegroundSem, Dec/Enc CoordConv in the decoder/"
              "encoder, Box PredBbox; ΔPQ against the base; paper: COCO PQ", caption_justify="left")
    for name, justify in (("#", "right"), ("Method", "left"), ("Fg", "center"), ("Sem", "center"),
                          ("Dec", "center"), ("Enc", "center"), ("Box", "center"), ("PQ", "right"),
                          ("PQth", "right"), ("PQst", "right"), ("ΔPQ", "right"), ("paper", "right")):
        t.add_column(name, justify=justify, no_wrap=True)
    for e in table["rows"]:
        marks = ["✓" if e["marks"][c] else "" for c in MD_COLUMNS[1:6]]
        t.add_row(str(e["row"]), e["method"], *marks, _fmt(e["pq"]), _fmt(e["pq_th"]), _fmt(e["pq_st"]),
                  delta(e["delta_pq"]) if e["prn"] else "", f"{100 * e['paper']['pq']:.1f}",
                  end_section=not e["prn"])
    return t


@contextmanager
def console_progress() -> Iterator[ProgressFn]:
    """A ``progress(stage, done, total)`` for the terminal: a Rich bar on stderr, or one line per stage when
    stderr is not a terminal (logs)."""
    from .console import stderr

    if not stderr.is_terminal:
        seen = {"stage": None}

        def line(stage: str, done: int, total: int) -> None:
            if stage != seen["stage"]:
                seen["stage"] = stage
                stderr.print(f"ablate {stage}", highlight=False, markup=False)

        yield line
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=stderr, transient=True) as bar:
        task = bar.add_task("ablate", total=None)
        state = {"stage": None}

        def update(stage: str, done: int, total: int) -> None:
            if stage != state["stage"]:
                if state["stage"] is not None:
                    bar.console.print(f"done: {state['stage']}", highlight=False, markup=False)
                state["stage"] = stage
                bar.reset(task, total=total, description=stage)
            bar.update(task, completed=done, total=total)

        yield update
        if state["stage"] is not None:
            bar.console.print(f"done: {state['stage']}", highlight=False, markup=False)


# --------------------------------------------------------------------------------------------------------------
# the ablation


def _broadcast(obj, world_size: int):
    """Rank 0's ``obj`` on every rank."""
    if world_size <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_ablation(run_dir: str | os.PathLike, options: AblationOptions, progress: ProgressFn | None = None, *,
                 overwrite: bool = False) -> AblationResult:
    """Run (or resume) the ablation of ``options.rows`` (default: all of Table 1) in ``run_dir``; see the module
    docstring. Returns the table (on rank 0; other torchrun ranks only train and get an empty result)."""
    run = Path(run_dir)
    report: ProgressFn = progress or (lambda stage, done, total: None)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    main = rank == 0
    if options.threads:
        import torch

        torch.set_num_threads(int(options.threads))
    rows = select_rows(options.rows)
    inputs = _check_inputs(options)

    dist_state = None
    if world > 1:
        from .engine import _init_distributed, _resolve_device

        dist_state = _init_distributed(_resolve_device(options.device, int(os.environ.get("LOCAL_RANK", "0"))))
    try:
        # rank 0 checks the folder and decides what each row needs; every rank follows that plan
        plan: dict | None = None
        error: tuple[str, str] | None = None
        if main:
            try:
                _prepare_folder(run, options, overwrite)
                plan = {r.slug: _row_state(run, r) for r in rows}
            except PrnError as exc:
                error = (type(exc).__name__, exc.message)
        plan, error = _broadcast((plan, error), world)
        if error is not None:
            kinds = {"OutputExistsError": OutputExistsError, "InvalidInputError": InvalidInputError}
            raise kinds.get(error[0], PrnError)(error[1])

        result = AblationResult(run, [], None, None, None, main=main)
        results: dict[str, dict] = {}
        summaries: dict[str, dict] = {}
        n = len(rows)
        base_val: Path | None = None
        interleave = world == 1   # one process: finish each row at once, so the table grows row by row

        def finish(k: int, row: AblationRow) -> None:
            nonlocal base_val
            stage = f"[{k}/{n}] {row.slug}"
            if base_val is None:
                base_val = _make_base_val(run, options, inputs, report, f"[1/{n}] base")
            results[row.slug] = _finish_row(run, row, options, inputs, base_val, summaries.get(row.slug), stage,
                                            report)
            result.evaluated.append(row.slug)
            publish()

        def publish() -> None:
            table = build_table(TABLE1_ROWS, results, options, len(inputs.gt.annotations))
            result.table_md, result.table_json = _write_table(run, table)
            result.table, result.rows = table, table["rows"]

        from .panoptic import read_json

        if main:   # rows left out of this call keep their earlier results in the table
            for row in TABLE1_ROWS:
                if row not in rows and (_row_dir(run, row) / RESULT_NAME).is_file():
                    results[row.slug] = read_json(_row_dir(run, row) / RESULT_NAME, what="ablation row result")
        for k, row in enumerate(rows, start=1):
            state = plan[row.slug]
            stage = f"[{k}/{n}] {row.slug}"
            if state == "done":
                if main:
                    results[row.slug] = read_json(_row_dir(run, row) / RESULT_NAME, what="ablation row result")
                    result.reused.append(row.slug)
                    report(f"{stage}: cached result", 1, 1)
                continue
            if state in ("train", "resume"):
                summaries[row.slug] = _train_row(run, row, options, state == "resume", f"{stage}: train", report)
                (result.resumed if state == "resume" else result.trained).append(row.slug)
            if main and interleave:
                finish(k, row)
        if main:
            for k, row in enumerate(rows, start=1):
                if row.slug not in results:
                    finish(k, row)
            publish()
        return result
    finally:
        if dist_state is not None and dist_state.started_here:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
