"""The ablation's progress on the terminal, on stderr only (stdout stays for the table or its JSON)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

#: ``progress(stage, done, total)``: called (on rank 0) as the ablation moves; ``stage`` reads like
#: ``"[3/8] fg-ccdec: train"`` (``"[3/8] fg-ccdec seed 1: train"`` with several seeds).
ProgressFn = Callable[[str, int, int], None]


@contextmanager
def console_progress() -> Iterator[ProgressFn]:
    """A ``progress(stage, done, total)`` for the terminal: a Rich bar on stderr, or one line per stage on stderr
    when it is not a terminal (logs)."""
    from ..console import stderr

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
