"""Running an ablation: plan the units (rank 0 decides, every torchrun rank follows), train each PRN row per
seed, refine the val base with it and evaluate, and rewrite the table after every evaluation."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInputError, OutputExistsError, PrnError, UsageError
from ..runtime import (DistributedContext, broadcast_object, init_distributed, resolve_device, set_threads,
                       shutdown_distributed)
from .folder import (EXTENDED_NAME, FORMAT_VERSION, REFINED_DIR, Unit, prepare_folder, read_result, unit_dir,
                     unit_state, units, write_result)
from .inputs import ValInputs, check_inputs, make_base_val
from .options import AblationOptions
from .progress import ProgressFn
from .rows import TABLE1_ROWS, select_rows
from .table import build_table, write_table


@dataclass
class AblationResult:
    """What :func:`run_ablation` did. Units are named as their folders under RUN/rows: ``base``, ``fg/seed-0``."""

    run_dir: Path
    rows: list[dict]                      # the rows of table.json (empty on ranks other than 0)
    table: dict | None                    # table.json's content (None on ranks other than 0)
    table_md: Path | None
    table_json: Path | None
    trained: list[str] = field(default_factory=list)    # units trained from scratch in this call
    resumed: list[str] = field(default_factory=list)    # units whose interrupted training was continued
    evaluated: list[str] = field(default_factory=list)  # units refined (PRN) and evaluated in this call
    reused: list[str] = field(default_factory=list)     # units whose cached result.json was used
    main: bool = True                                   # False on torchrun ranks other than 0


def run_ablation(run_dir: str | os.PathLike, options: AblationOptions, progress: ProgressFn | None = None, *,
                 overwrite: bool = False) -> AblationResult:
    """Run (or resume) the ablation of ``options.rows`` (default: all of Table 1) with ``options.seeds`` seeds in
    ``run_dir``; see the package docstring. Returns the table (on rank 0; other torchrun ranks only train and
    get an empty result)."""
    run = Path(run_dir)
    report: ProgressFn = progress or (lambda stage, done, total: None)
    set_threads(options.threads)
    rows = select_rows(options.rows)
    todo = units(rows, options.seed_values)
    inputs = check_inputs(options)
    if options.extensions_from:
        # before hours of training: the modules exist and know the val set's categories
        from .extensions import check_donor, check_donor_settings, same_categories

        donor = check_donor(options.extensions_from)
        if not same_categories(donor["categories"], inputs.gt.categories):
            raise InvalidInputError(f"{options.extensions_from}: its categories differ from those of {options.val}; "
                                    "pass a PRN trained on the same categories")
        check_donor_settings(donor, options.postprocess.given(), options.extensions_from)
    context = init_distributed(resolve_device(options.device))
    try:
        plan, results = _plan(run, options, overwrite, todo, context)
        result = AblationResult(run, [], None, None, None, main=context.main)
        summaries: dict = {}
        base_val: Path | None = None
        interleave = context.world_size == 1   # one process: finish each unit at once, the table grows

        def stage(unit: Unit) -> str:
            seed = f" seed {unit.seed}" if unit.seed is not None and options.seeds > 1 else ""
            return f"[{rows.index(unit.row) + 1}/{len(rows)}] {unit.row.slug}{seed}"

        def publish() -> None:
            table = build_table(_by_row(results, options), options, len(inputs.gt.annotations))
            result.table_md, result.table_json = write_table(run, table)
            result.table, result.rows = table, table["rows"]

        def finish(unit: Unit) -> None:
            nonlocal base_val
            if base_val is None:
                base_val = make_base_val(run, options, inputs, report, f"[1/{len(rows)}] base")
            results[unit.label] = finish_unit(run, unit, options, inputs, base_val, summaries.get(unit.label),
                                              stage(unit), report)
            result.evaluated.append(unit.label)
            publish()

        for unit in todo:
            state = plan[unit.label]
            if state == "done":
                if context.main:
                    result.reused.append(unit.label)
                    report(f"{stage(unit)}: cached result", 1, 1)
                continue
            if state in ("train", "resume"):
                summaries[unit.label] = train_unit(run, unit, options, state == "resume", f"{stage(unit)}: train",
                                                   report)
                (result.resumed if state == "resume" else result.trained).append(unit.label)
            if context.main and interleave:
                finish(unit)
        if context.main:
            for unit in todo:
                if plan[unit.label] != "done" and unit.label not in result.evaluated:
                    finish(unit)
            publish()
        return result
    finally:
        shutdown_distributed(context)


def _plan(run: Path, options: AblationOptions, overwrite: bool, todo: list[Unit],
          context: DistributedContext) -> tuple[dict[str, str], dict[str, dict]]:
    """Rank 0 checks the folder, decides what each unit needs (folder.STATES) and reads every result the folder
    holds for these seeds (rows left out of this call keep their place in the table). Every rank gets the plan,
    or rank 0's error; the results stay on rank 0 (the others get none)."""
    plan: dict | None = None
    results: dict[str, dict] = {}
    error: tuple[str, str] | None = None
    if context.main:
        try:
            prepare_folder(run, options, overwrite)
            plan = {u.label: unit_state(run, u) for u in todo}
            for unit in units(TABLE1_ROWS, options.seed_values):
                found = read_result(run, unit)
                if found is not None:
                    results[unit.label] = found
        except PrnError as exc:
            error = (type(exc).__name__, exc.message)
    plan, error = broadcast_object((plan, error), context)
    if error is not None:
        kinds = {k.__name__: k for k in (OutputExistsError, InvalidInputError, UsageError)}
        raise kinds.get(error[0], PrnError)(error[1])
    return plan, results


def _by_row(results: dict[str, dict], options: AblationOptions) -> dict[str, list[dict]]:
    """Each row's results for the seeds of ``options`` (the base row: its one result), in seed order."""
    out: dict[str, list[dict]] = {}
    for unit in units(TABLE1_ROWS, options.seed_values):
        if unit.label in results:
            out.setdefault(unit.row.slug, []).append(results[unit.label])
    return out


def train_unit(run: Path, unit: Unit, options: AblationOptions, resume: bool, stage: str, progress: ProgressFn):
    """Train (or continue training) the PRN of ``unit``'s row with its seed; returns the engine's TrainSummary.
    A fresh start clears what a run stopped before its first checkpoint left (metrics.jsonl)."""
    from ..train import train_prn

    try:
        schedule = dataclasses.replace(options.schedule, out_dir=str(unit_dir(run, unit)), seed=unit.seed,
                                       device=options.device, resume=resume, overwrite=not resume, val_every=0,
                                       channels_last="always")
    except ValueError as exc:
        raise UsageError(f"ablation schedule: {exc}") from None
    postprocess = options.row_postprocess(unit.row)
    if options.extensions_from:
        # the borrowed modules' settings act when the row is refined; the row trains without those modules
        from ..options import PostProcessOverrides
        from .extensions import EXTENSION_POSTPROCESS

        postprocess = PostProcessOverrides(**{k: v for k, v in postprocess.given().items()
                                              if k not in EXTENSION_POSTPROCESS})
    training = dataclasses.replace(options.training, switches=unit.row.switches, postprocess=postprocess,
                                   val_limit=0)
    return train_prn(options.data, schedule, training, base=options.base,
                     progress=lambda step, total, losses: progress(stage, step, total))


def _scores(groups: dict) -> dict:
    return {"pq": groups["All"]["pq"], "sq": groups["All"]["sq"], "rq": groups["All"]["rq"],
            "pq_th": groups["Things"]["pq"], "sq_th": groups["Things"]["sq"], "rq_th": groups["Things"]["rq"],
            "pq_st": groups["Stuff"]["pq"], "sq_st": groups["Stuff"]["sq"], "rq_st": groups["Stuff"]["rq"]}


def finish_unit(run: Path, unit: Unit, options: AblationOptions, inputs: ValInputs, base_val: Path,
                train_summary, stage: str, progress: ProgressFn) -> dict:
    """Refine the val base with the unit's PRN (the base row: nothing), evaluate, write result.json (last)."""
    from ..engine import FINAL_NAME
    from ..evaluate import evaluate
    from ..refine import RefineOptions, refine

    d = unit_dir(run, unit)
    d.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    refine_info = None
    pred = base_val
    if unit.row.prn:
        progress(f"{stage}: refine", 0, len(inputs.images))
        weights = d / FINAL_NAME
        if options.extensions_from:
            from .extensions import graft_extensions

            weights = graft_extensions(weights, options.extensions_from, d / EXTENDED_NAME)
        refined = refine(base_val, inputs.images, weights, d / REFINED_DIR, overwrite=True,
                         options=RefineOptions(device=options.device, batch_size=options.refine_batch_size,
                                               overrides=options.row_postprocess(unit.row)),
                         progress=lambda done, total: progress(f"{stage}: refine", done, total))
        if refined.failed:
            path, why = refined.failed[0]
            raise InvalidInputError(f"{unit.label}: {len(refined.failed)} val base image(s) could not be refined, "
                                    f"first {path}: {why}")
        refine_info = {"written": refined.written, "changes": refined.changes, "weights": Path(weights).name}
        pred = refined.json_path
    progress(f"{stage}: evaluate", 0, len(inputs.gt.annotations))
    report = evaluate(inputs.gt, [pred], workers=options.schedule.num_workers,
                      progress=lambda done, total: progress(f"{stage}: evaluate", done, total))
    train = None
    if train_summary is not None:
        train = {k: getattr(train_summary, k) for k in ("steps", "start_step", "seconds", "world_size", "device")}
    elif unit.row.prn:   # trained by an earlier call: model_final.pt is written after the last step
        train = {"steps": options.schedule.iters}
    result = {"format": FORMAT_VERSION, "row": unit.row.index, "slug": unit.row.slug, "seed": unit.seed,
              **_scores(report.results[0].groups), "images": report.results[0].num_images, "prediction": str(pred),
              "warnings": report.warnings + report.results[0].warnings, "refine": refine_info, "train": train,
              "eval_seconds": time.perf_counter() - started}
    write_result(run, unit, result)
    return result
