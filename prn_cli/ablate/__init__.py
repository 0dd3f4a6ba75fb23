"""``prn ablate``: reproduce Table 1 of the paper's supplementary (docs/design.md, "Table 1 and prn ablate") on
any dataset.

Every row of :data:`TABLE1_ROWS` is one PRN configuration (Table 1's switches: the foreground branch or the
semantic foreground, CoordConv in the decoders, CoordConv in the encoder, the box branch with PredBbox
grouping); row 1 is the base itself. For each PRN row and each seed (``schedule.seed`` .. ``schedule.seed +
seeds - 1``) the ablation trains PRN on the training set (same data, same schedule for every row), refines the
val base predictions and evaluates them against the val ground truth; the base row evaluates the val base as
it is, once. The table (Markdown and JSON) gives PQ / PQth / PQst of every row (with several seeds: the mean
and sample std over them) and its PQ gain over the base, beside the paper's COCO figures, and each PRN row's
difference to the row it adds one part to, seed by seed (table.paired_deltas).

Run folder ``RUN``::

    RUN/ablation.json                 the options that decide the results (AblationOptions.record(); a rerun
                                      must have the same ones, see options.HOW for those that may change)
    RUN/base_val/                     the val base, when it is made here (segmented with base_weights, or the
                                      first val_limit images of a given val_base)
    RUN/rows/base/result.json         the base row's PQ (it does not train)
    RUN/rows/<row>/seed-<s>/          one PRN row trained with seed s: last.pt, model_final.pt, metrics.jsonl
                                      (the training run), refined/ (its refined val set), result.json (its PQ,
                                      written last); with ``extensions_from`` also model_extended.pt (the row's
                                      PRN with the borrowed boundary refiner and thing classifier)
    RUN/table.md, RUN/table.json      the table, rewritten (atomically) after every evaluation; it holds every
                                      row of the folder that has a result for one of this call's seeds, also
                                      rows left out by ``rows`` in this call

Resuming, per (row, seed): ``result.json`` is done and reused; ``model_final.pt`` is only refined and
evaluated; ``last.pt`` alone continues its training exactly where it stopped (the engine's exact resume);
anything else is trained from the start. So an interrupted ablation is simply run again. Each seed has its own
folder, so raising ``seeds`` (or moving ``schedule.seed``) reuses the seeds already done and runs only the new
ones; lowering it leaves the other seeds' folders in place and out of the table. A change of the
post-processing alone, or of ``extensions_from`` (prn's boundary refiner and thing classifier borrowed from one
trained PRN for every row; extensions.py), refines and evaluates every PRN seed again without training it.

With ``torchrun`` every process trains each (row, seed) together (DistributedDataParallel); refining,
evaluating and every file the ablation writes are the job of rank 0, which does them after everything is
trained (the other processes then exit), so no process waits for another's evaluation.

Modules: rows (Table 1), options (AblationOptions), folder (the run folder), inputs (val set and base),
run (run_ablation), table (table.json, table.md, the Rich table), progress (stderr progress), extensions
(the borrowed modules).
"""

from .folder import FORMAT_VERSION, Unit
from .options import HOW, AblationOptions, default_schedule
from .progress import ProgressFn, console_progress
from .rows import ROW_SLUGS, TABLE1_ROWS, AblationRow, select_rows
from .run import AblationResult, run_ablation
from .table import ablation_table, build_table, mean_std, table_markdown

__all__ = ["AblationOptions", "AblationResult", "AblationRow", "FORMAT_VERSION", "HOW", "ProgressFn", "ROW_SLUGS",
           "TABLE1_ROWS", "Unit", "ablation_table", "build_table", "console_progress", "default_schedule",
           "mean_std", "run_ablation", "select_rows", "table_markdown"]
