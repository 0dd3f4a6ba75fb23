"""``prn info``: what a checkpoint holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._common import JsonOut, command


def register(app: typer.Typer) -> None:
    command(app, "info")(info_command)


def info_command(
    checkpoints: Annotated[Optional[List[Path]], typer.Argument(metavar="CHECKPOINT...", help="prn checkpoints "
                                                                "(default: the shipped ones).")] = None,
    json_out: JsonOut = None,
) -> None:
    """Describe prn checkpoints: kind, architecture, switches, post-processing, categories.

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
            check_file(p, "checkpoint file", "pass a checkpoint written by `prn train` (RUN_DIR/model_final.pt)")
            infos.append(describe_checkpoint(p))
        except PrnError as exc:
            error_line(exc.message)
            failed += 1
    for one in infos:
        human(json_out).print(checkpoint_table(one))
    emit_json(infos, json_out)
    if failed:
        raise typer.Exit(EXIT_INVALID_INPUT)
