"""The ablation's progress on stderr (stdout stays for the table or its JSON), drawn by the one progress bar of
:mod:`prn_cli.console`; when stderr is not a terminal, one line per stage (logs)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

#: ``progress(stage, done, total)``: called (on rank 0) as the ablation moves; ``stage`` reads like
#: ``"[3/8] fg-ccdec: train"`` (``"[3/8] fg-ccdec seed 1: train"`` with several seeds).
ProgressFn = Callable[[str, int, int], None]


@contextmanager
def console_progress() -> Iterator[ProgressFn]:
    """A ``progress(stage, done, total)`` for the terminal; each finished stage is logged as ``done: <stage>``."""
    from ..console import info, progress, stderr

    seen = {"stage": None}
    with progress("ablate") as update:
        def stage_update(stage: str, done: int, total: int) -> None:
            if stage != seen["stage"]:
                if not stderr.is_terminal:
                    info(f"ablate {stage}")
                elif seen["stage"] is not None:
                    info(f"done: {seen['stage']}")
                seen["stage"] = stage
            update(done, total, description=stage)

        yield stage_update
        if stderr.is_terminal and seen["stage"] is not None:
            info(f"done: {seen['stage']}")
