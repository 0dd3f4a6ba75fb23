"""What an ablation trains on and evaluates: :class:`AblationOptions`, composed of the options of the commands
it runs (``prn train prn``'s :class:`~prn_cli.train.PRNTrainingOptions`, the engine's
:class:`~prn_cli.engine.TrainConfig` as the schedule, ``prn refine``'s :class:`~prn_cli.options.PostProcessOverrides`)
plus its own.

WHAT and HOW: :meth:`AblationOptions.record` holds the options that decide the results, and a run folder only
accepts a rerun with the same record. The others (:data:`HOW`: rows, device, threads, workers, checkpoint
interval, the seeds) may change between runs of one folder. A change of the post-processing alone re-refines
every PRN row without training it again. Each row sets the training options' switches, post-processing, seed
and output folder itself (:data:`SET_PER_ROW`), so those must be left unset here.

This module imports no torch (the default schedule imports the engine when it is made).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..options import PostProcessOverrides
from ..resume import absolute, file_digest
from ..runtime import check_device_name
from ..train import PRN_ARCHS, PRNTrainingOptions
from .rows import AblationRow, select_rows

if TYPE_CHECKING:
    from ..engine import TrainConfig

#: Options that do not change any result, so a run folder accepts new values of them. ``schedule.seed`` and
#: ``seeds`` only choose which seeds the table shows: each seed has its own folder.
HOW = ("rows", "device", "threads", "refine_batch_size", "seeds", "schedule.seed", "schedule.num_workers",
       "schedule.checkpoint_every", "schedule.log_every", "schedule.find_unused_parameters")

#: Fields of the composed options that each row (and seed) sets itself; not part of the record.
SET_PER_ROW = ("training.switches", "training.postprocess", "training.val_limit", "schedule.out_dir",
               "schedule.resume", "schedule.overwrite", "schedule.device", "schedule.val_every",
               "schedule.channels_last")

#: The post-processing that each Table 1 row sets.
ROW_POSTPROCESS = ("foreground_source", "use_pred_bbox")

_PATHS = ("data", "val", "val_base", "base_weights", "base", "val_images", "training.config_file",
          "training.backbone_weights")


def default_schedule() -> "TrainConfig":
    """The ablation's default schedule: 2000 steps of batch 8, lr 1e-3 after 100 warmup steps, a checkpoint every
    200 steps, seed 0 (its ``out_dir``, ``device`` and ``resume`` are set per row)."""
    from ..engine import TrainConfig

    return TrainConfig(out_dir="", iters=2000, batch_size=8, lr=1e-3, warmup_iters=100, checkpoint_every=200)


@dataclass
class AblationOptions:
    """What an ablation trains on and evaluates. Give the val base as a set (``val_base``) or as a base-model
    checkpoint (``base_weights``) that segments the val images once into ``RUN/base_val``."""

    data: str                                #: training GT (panoptic JSON or prn synth root)
    val: str                                 #: val GT
    val_base: str | None = None              #: base predictions on the val images (a panoptic set)
    base_weights: str | None = None          #: or: a base-model checkpoint (prn train base) to segment them
    base: str | None = None                  #: optional base predictions on the training images
    val_images: str | None = None            #: folder of the val images (default: from the GT's layout)
    val_limit: int = 0                       #: evaluate on the first N val images (0 = all)
    #: PRN preset, config file, crop, scale / strength ranges, base mix, backbone weights (switches per row)
    training: PRNTrainingOptions = field(default_factory=PRNTrainingOptions)
    #: the engine's TrainConfig for every row; ``seed`` is the first seed (out_dir, device, resume: per row)
    schedule: "TrainConfig" = field(default_factory=default_schedule)
    #: post-processing for every PRN row, over each row's own foreground source and PredBbox
    postprocess: PostProcessOverrides = field(default_factory=PostProcessOverrides)
    seeds: int = 1                           #: train each PRN row with seeds seed .. seed + seeds - 1
    #: rows to run (slugs or numbers, or one comma-separated string; None = all 8; the base row always runs)
    rows: tuple[str, ...] | None = None
    device: str = "auto"                     #: where to train, refine and segment
    threads: int | None = None               #: CPU intra-op threads
    refine_batch_size: int = 1
    #: a trained PRN whose boundary refiner and thing classifier (with their post-processing) every PRN row
    #: borrows when it refines (ablate/extensions.py); None = the rows as trained
    extensions_from: str | None = None

    def __post_init__(self) -> None:
        if (self.val_base is None) == (self.base_weights is None):
            raise UsageError("give the val base either as a set (--val-base DIR) or as a base-model checkpoint "
                             "(--base-weights FILE), exactly one of them")
        if not isinstance(self.postprocess, PostProcessOverrides):
            raise TypeError("postprocess must be a PostProcessOverrides")
        clash = sorted(set(ROW_POSTPROCESS) & set(self.postprocess.given()))
        if clash:
            raise UsageError(f"post-processing override(s) {clash} are set by each Table 1 row")
        if self.training.switches.given():
            raise UsageError(f"training switches {sorted(self.training.switches.given())} are set by each Table 1 "
                             "row; leave them unset")
        if self.training.postprocess.given():
            raise UsageError("give the ablation's post-processing as AblationOptions.postprocess, not "
                             "training.postprocess")
        if self.training.arch not in PRN_ARCHS:
            raise UsageError(f"--arch {self.training.arch}: unknown PRN architecture; choose one of "
                             f"{', '.join(PRN_ARCHS)}")
        check_device_name(self.device)
        if self.schedule.device not in ("auto", self.device):
            raise UsageError(f"schedule.device {self.schedule.device!r}: set the ablation's device instead "
                             f"({self.device!r} now)")
        for name, value, low in (("--seeds", self.seeds, 1), ("--val-limit", self.val_limit, 0),
                                 ("--refine-batch-size", self.refine_batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"{name} {value}: must be an integer of at least {low}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise UsageError(f"--threads {self.threads}: must be an integer of at least 1")
        if isinstance(self.rows, str):      # "fg,fg-bbox", as --rows takes them
            self.rows = tuple(r.strip() for r in self.rows.split(",") if r.strip())
        elif self.rows is not None:
            self.rows = tuple(str(r) for r in self.rows)
        select_rows(self.rows)   # an unknown row is a usage error now, not after hours of training

    @property
    def seed_values(self) -> list[int]:
        """The seeds every PRN row is trained with: ``schedule.seed`` and the ``seeds - 1`` after it."""
        return list(range(self.schedule.seed, self.schedule.seed + self.seeds))

    def row_postprocess(self, row: AblationRow) -> PostProcessOverrides:
        """The post-processing ``row`` trains and refines with: the overrides, then the row's own switches."""
        return PostProcessOverrides(**{**self.postprocess.given(), **row.postprocess.given()})

    def record(self) -> dict:
        """The options that decide the results, as stored in ``RUN/ablation.json`` (JSON values): paths
        absolute, the model config file also by content; :data:`HOW` and :data:`SET_PER_ROW` left out."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("training", "schedule")}
        flat.update({f"training.{f.name}": getattr(self.training, f.name) for f in fields(self.training)})
        flat.update({f"schedule.{k}": v for k, v in self.schedule.to_dict().items()})
        flat["postprocess"] = self.postprocess.given()
        # like the post-processing, the borrowed modules change what is refined, not what is trained (left out
        # when unset, so a folder written before they existed resumes as it was)
        if self.extensions_from is None:
            del flat["extensions_from"]
        else:
            flat["extensions_from"] = {"path": _abs(self.extensions_from), "sha256": file_digest(self.extensions_from)}
        for name in _PATHS:
            flat[name] = _abs(flat[name])
        flat["training.config_file_sha256"] = file_digest(self.training.config_file)
        record: dict = {}
        for name, value in flat.items():
            if name in HOW or name in SET_PER_ROW:
                continue
            group, _, key = name.rpartition(".")
            (record.setdefault(group, {}) if group else record)[key] = value
        return json.loads(json.dumps(record))   # tuples as lists, as they read back from the file


def _abs(path: str | os.PathLike | None) -> str | None:
    return absolute(path)
