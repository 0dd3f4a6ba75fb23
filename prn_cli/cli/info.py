"""``prn info``: what a checkpoint holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._common import JsonOut, command


def register(app: typer.Typer) -> None:
    command(app, "info")(info_command)


def info_command(
    checkpoints: Annotated[Optional[List[Path]], typer.Argument(metavar="CHECKPOINT|RUN_DIR...", help="prn "
                                                                "checkpoints, or training run folders (default: "
                                                                "the shipped checkpoints).")] = None,
    json_out: JsonOut = None,
) -> None:
    """Describe prn checkpoints: what they were trained on and for, architecture, switches, post-processing,
    categories. For a training run folder (prn train --out), also how training went, and its curves drawn into
    RUN_DIR/curves.png (losses, learning rate, val PQ).

    Each checkpoint that reads is described; each one that does not gets its one-line error, and the exit code is
    then 3. The JSON lists the ones described.

    Example: prn info models/weights/prn_tiny_synth.pt
    """
    from ..checkpoint import describe_checkpoint
    from ..console import emit_json, error_line, human
    from ..errors import EXIT_INVALID_INPUT, PrnError
    from ..reporting import checkpoint_table
    from ..shipped import SHIPPED, shipped_weights
    from ._common import check_file

    paths = list(checkpoints or []) or [shipped_weights(kind) for kind in SHIPPED]
    infos, failed = [], 0
    for p in paths:
        try:
            run_dir = p if p.is_dir() else None
            checkpoint = _run_checkpoint(p) if run_dir else p
            check_file(checkpoint, "checkpoint file", "pass a checkpoint written by `prn train` "
                       "(RUN_DIR/model_final.pt) or a run folder")
            infos.append((describe_checkpoint(checkpoint), run_dir))
        except PrnError as exc:
            error_line(exc.message)
            failed += 1
    for one, run_dir in infos:
        human(json_out).print(checkpoint_table(one))
        if run_dir is not None:
            one["run"] = _describe_run(run_dir, json_out)
    emit_json([one for one, _ in infos], json_out)
    if failed:
        raise typer.Exit(EXIT_INVALID_INPUT)


def _run_checkpoint(run_dir: Path) -> Path:
    from ..checkpoint import FINAL_NAME, LAST_NAME
    from ..errors import fail

    for name in (FINAL_NAME, LAST_NAME):
        if (run_dir / name).is_file():
            return run_dir / name
    raise fail(run_dir, f"holds no {FINAL_NAME} or {LAST_NAME}", "name a folder that prn train wrote (--out)")


def _describe_run(run_dir: Path, json_out) -> dict:
    """How training went (from metrics.jsonl) and RUN_DIR/curves.png."""
    from ..checkpoint import METRICS_NAME
    from ..console import human, say
    from ..curves import CURVES_NAME, plot_curves, training_summary
    from ..io import write_png_atomic

    metrics = run_dir / METRICS_NAME
    if not metrics.is_file():
        say(f"{run_dir}: no {METRICS_NAME}, so no curves", json_out)
        return {"metrics": None, "curves": None}
    summary = training_summary(metrics)
    curves = run_dir / CURVES_NAME
    write_png_atomic(curves, plot_curves(metrics))
    losses = " ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in summary["losses"].items())
    line = f"training: {summary['steps']} steps logged"
    if summary["total_loss"] is not None:
        line += f", last total loss {summary['total_loss']:.3f} ({losses}), lr {summary['lr']:.2e}"
    if summary["val_best"]:
        best = summary["val_best"]
        line += f"; best val PQ {best['val']['pq']:.1f} at step {best['step']}"
    say(line, json_out)
    human(json_out).print(f"curves: {curves}", markup=False, highlight=False)
    return {"metrics": str(metrics), "curves": str(curves), **summary}
