"""``prn ablate``: the paper's Table 1 as a command (wired once the ablate package's API settles)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
