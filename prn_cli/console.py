"""Terminal output shared by the commands: data on stdout, progress, warnings and errors on stderr."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/yellow] {message}", markup=True, highlight=False)


def error_line(message: str) -> None:
    # One line, no markup interpretation: messages carry user paths that may contain brackets.
    stderr.print("[bold red]error:[/bold red] ", end="", markup=True, highlight=False)
    stderr.print(" ".join(str(message).split()), markup=False, highlight=False)


@contextmanager
def progress(description: str, *, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, given to the core as a ``callback(done, total)``; silent when not a terminal."""
    if not enabled or not stderr.is_terminal:
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=stderr, transient=True)
    task = bar.add_task(description, total=None)
    with bar:
        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def is_stdout_tty() -> bool:
    return sys.stdout.isatty()
