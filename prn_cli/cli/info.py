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

    Every checkpoint is checked before anything is printed.

    Example: prn info models/weights/prn_tiny_synth.pt
    """
    from ..checkpoint import describe_checkpoint
    from ..console import emit_json, human
    from ..reporting import checkpoint_table
    from ..shipped import SHIPPED, shipped_weights
    from ._common import check_file

    paths = list(checkpoints or []) or [shipped_weights(kind) for kind in SHIPPED]
    for p in paths:
        check_file(p, "checkpoint file", "pass a checkpoint written by `prn train` (RUN_DIR/model_final.pt)")
    infos = [describe_checkpoint(p) for p in paths]
    for one in infos:
        human(json_out).print(checkpoint_table(one))
    emit_json(infos, json_out)
