"""The run folder: its options record, the resume / overwrite decisions, and where each row and seed lives.

An ablation is made of *units*: the base row (one evaluation, no training) and one unit per (PRN row, seed).
A unit's state follows from the files in its folder (see the package docstring for the layout).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import InvalidInputError, OutputExistsError
from ..resume import describe_difference, flatten
from .options import AblationOptions
from .rows import AblationRow

OPTIONS_NAME = "ablation.json"
RESULT_NAME = "result.json"
REFINED_DIR = "refined"
#: the row's PRN with the borrowed boundary refiner and thing classifier (--extensions-from), which it refines with
EXTENDED_NAME = "model_extended.pt"
TABLE_MD = "table.md"
TABLE_JSON = "table.json"
BASE_VAL_DIR = "base_val"
ROWS_DIR = "rows"
#: 2: one folder per seed under each PRN row (rows/<row>/seed-<s>/), the composed options record
FORMAT_VERSION = 2

#: What a unit still needs: nothing ("done"), refining and evaluating ("trained"; the base row: evaluating),
#: the rest of an interrupted training ("resume"), or all of it ("train").
STATES = ("done", "trained", "resume", "train")


@dataclass(frozen=True)
class Unit:
    """One evaluation of the table: the base row (``seed`` None), or a PRN row trained with one seed."""

    row: AblationRow
    seed: int | None = None

    @property
    def label(self) -> str:
        """Its folder relative to RUN/rows: ``base``, ``fg/seed-0``."""
        return self.row.slug if self.seed is None else f"{self.row.slug}/seed-{self.seed}"


def units(rows: Iterable[AblationRow], seeds: Sequence[int]) -> list[Unit]:
    """The units of ``rows`` in table order, each PRN row once per seed."""
    return [u for row in rows for u in ([Unit(row, s) for s in seeds] if row.prn else [Unit(row)])]


def unit_dir(run: Path, unit: Unit) -> Path:
    return Path(run) / ROWS_DIR / unit.label


def unit_state(run: Path, unit: Unit) -> str:
    """One of :data:`STATES`, from the files in the unit's folder."""
    from ..engine import FINAL_NAME, LAST_NAME

    d = unit_dir(run, unit)
    if (d / RESULT_NAME).is_file():
        return "done"
    if not unit.row.prn or (d / FINAL_NAME).is_file():
        return "trained"
    if (d / LAST_NAME).is_file():
        return "resume"
    return "train"


def read_result(run: Path, unit: Unit) -> dict | None:
    """The unit's result.json, or None when it has none yet."""
    from ..panoptic import read_json

    path = unit_dir(run, unit) / RESULT_NAME
    return read_json(path, what="ablation result") if path.is_file() else None


def write_result(run: Path, unit: Unit, result: dict) -> None:
    from ..io import write_json_atomic

    write_json_atomic(unit_dir(run, unit) / RESULT_NAME, result)


# --------------------------------------------------------------------------------------------------------------
# the folder's identity


#: record entries that change how the rows refine, not how they train (flattened keys start with these)
REFINE_ONLY = ("postprocess", "extensions_from")


def prepare_folder(run: Path, options: AblationOptions, overwrite: bool) -> None:
    """Check (or write) RUN/ablation.json before anything is touched. The same record: resume. Only the
    post-processing or the borrowed extensions differ: forget every PRN result (the trained weights stay), then
    resume. Anything else differs: refuse, unless ``overwrite``, which removes everything an earlier ablation
    wrote."""
    from ..io import write_json_atomic
    from ..panoptic import read_json

    run = Path(run)
    record = {"format": FORMAT_VERSION, "options": options.record()}
    marker = run / OPTIONS_NAME
    if marker.exists() and not overwrite:
        try:
            old = read_json(marker, what="ablation options")
        except InvalidInputError:
            old = None
        if not isinstance(old, dict) or not isinstance(old.get("options"), dict):
            raise OutputExistsError(f"{marker}: unreadable record of an earlier ablation; pass --overwrite to start "
                                    "again or choose another run folder")
        if old.get("format") != FORMAT_VERSION:
            raise OutputExistsError(f"{run} holds an ablation of an earlier prn version (format "
                                    f"{old.get('format')}, now {FORMAT_VERSION}: one folder per seed); pass "
                                    "--overwrite to start again or choose another run folder")
        before, now = flatten(old["options"]), flatten(record["options"])
        if before == now:
            return
        if {k: v for k, v in before.items() if not k.startswith(REFINE_ONLY)} == \
                {k: v for k, v in now.items() if not k.startswith(REFINE_ONLY)}:
            forget_prn_results(run)
            write_json_atomic(marker, record)
            return
        raise OutputExistsError(f"{run} holds an ablation run with other options "
                                f"({describe_difference(before, now)}); rerun with the same options to resume it, "
                                "pass --overwrite to replace it, or choose another folder")
    if not marker.exists() and not overwrite and (run / ROWS_DIR).exists():
        raise OutputExistsError(f"{run / ROWS_DIR} exists but {marker} does not, so it is not a prn ablation run "
                                "folder; pass --overwrite to replace it or choose another folder")
    if overwrite:
        for path in (run / ROWS_DIR, run / BASE_VAL_DIR, run / TABLE_MD, run / TABLE_JSON, marker):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    run.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, record)


def forget_prn_results(run: Path) -> None:
    """New post-processing: every PRN unit is refined and evaluated again; its trained weights stay (and the
    base row, which is not post-processed, keeps its result)."""
    seed_dirs = list((Path(run) / ROWS_DIR).glob("*/seed-*"))
    for path in [Path(run) / TABLE_MD, Path(run) / TABLE_JSON, *(d / RESULT_NAME for d in seed_dirs)]:
        path.unlink(missing_ok=True)
    for d in seed_dirs:
        shutil.rmtree(d / REFINED_DIR, ignore_errors=True)
        (d / EXTENDED_NAME).unlink(missing_ok=True)
