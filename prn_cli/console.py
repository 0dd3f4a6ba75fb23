"""The one output sink of every command: data on stdout; progress, warnings, logs and errors on stderr.

``emit_json(obj, target)`` implements ``--json PATH|-`` the same way in every command: ``-`` writes the JSON to
stdout (the human-readable output then goes to stderr, so ``prn eval ... --json - | jq`` works), a path writes
the file atomically. :func:`progress` is the one progress bar: a callback ``update(done, total, detail="",
description=None)`` that draws on stderr when it is a terminal and does nothing otherwise.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from rich.console import Console

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


class ProgressUpdate(Protocol):
    def __call__(self, done: int, total: int, detail: str = "", description: str | None = None) -> None: ...


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/yellow] {message}", markup=True, highlight=False)


def info(message: str) -> None:
    """A log line for people (stderr)."""
    stderr.print(message, markup=False, highlight=False)


def error_line(message: str) -> None:
    # One line, no markup interpretation: messages carry user paths that may contain brackets.
    stderr.print("[bold red]error:[/bold red] ", end="", markup=True, highlight=False)
    stderr.print(" ".join(str(message).split()), markup=False, highlight=False)


def human(json_target: str | None) -> Console:
    """Where a command's human-readable result goes: stdout, or stderr when its JSON goes to stdout."""
    return stderr if json_target == "-" else stdout


def say(message: str, json_target: str | None = None) -> None:
    """Print a plain result line for people (see :func:`human`)."""
    human(json_target).print(message, markup=False, highlight=False)


def emit_json(obj: Any, target: str | None) -> None:
    """``--json PATH|-``: the JSON on stdout (``-``) or written atomically to PATH; nothing when None."""
    if not target:
        return
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=str)
    if target == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    from .io import write_text_atomic

    write_text_atomic(Path(target), text + "\n")
    info(f"wrote {target}")


@contextmanager
def progress(description: str, *, enabled: bool = True) -> Iterator[ProgressUpdate]:
    """A progress bar on stderr; silent when stderr is not a terminal. ``update(done, total)`` moves it;
    ``detail`` is shown after the bar (e.g. the latest losses), ``description`` renames the task."""
    if not enabled or not stderr.is_terminal:
        yield _silent
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[detail]}"), console=stderr, transient=True)
    task = bar.add_task(description, total=None, detail="")
    with bar:
        def update(done: int, total: int, detail: str = "", description: str | None = None) -> None:
            changes: dict = {"completed": done, "total": total, "detail": detail}
            if description is not None:
                changes["description"] = description
            bar.update(task, **changes)

        yield update


def _silent(done: int, total: int, detail: str = "", description: str | None = None) -> None:
    return None


def losses_text(losses: dict) -> str:
    """The loss terms of a training log window, short: ``box 1.047 mask 0.341``."""
    return " ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in losses.items() if isinstance(v, float))


def training_progress(update: ProgressUpdate) -> Callable[[int, int, dict], None]:
    """The engine's ``progress(step, total, losses)`` drawn by ``update``."""
    return lambda step, total, losses: update(step, total, losses_text(losses))


def is_stdout_tty() -> bool:
    return sys.stdout.isatty()
