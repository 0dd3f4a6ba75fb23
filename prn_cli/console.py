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
def progress(description: str, *, enabled: bool = True, log_lines: bool = False) -> Iterator[ProgressUpdate]:
    """A progress bar on stderr. ``update(done, total)`` moves it; ``detail`` is shown after the bar (e.g. the
    latest losses), ``description`` renames the task. When stderr is not a terminal (a log file, a CI job, a
    batch scheduler) it is silent, or with ``log_lines`` it prints a plain line each time ``detail`` changes and
    at the end (:class:`LineLog`), so a log shows how a long job advances."""
    if not enabled:
        yield _silent
        return
    if not stderr.is_terminal:
        yield LineLog(description) if log_lines else _silent
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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class LineLog:
    """Progress for logs: ``train base: step 40/500 (8%) · box 1.047 mask 0.341 · 3.21 s/step · ETA 24m36s``,
    one line on stderr each time ``detail`` changes (the engine's losses change once per log window) and one
    when ``done`` reaches ``total``; nothing for the updates in between. The rate counts only the steps done
    since the first update, so a resumed run's ETA is right."""

    def __init__(self, description: str, clock: Callable[[], float] | None = None,
                 write: Callable[[str], None] | None = None):
        import time

        self.description = description
        self.clock = clock or time.monotonic
        self.write = write or info
        self.first: tuple[int, float] | None = None
        self.last_detail: str | None = None
        self.finished = False

    def __call__(self, done: int, total: int, detail: str = "", description: str | None = None) -> None:
        if description is not None:
            self.description = description
        now = self.clock()
        if self.first is None:
            self.first = (done, now)
            self.last_detail = detail
            return
        if detail == self.last_detail and (done < total or self.finished):
            return
        self.last_detail = detail
        self.finished = done >= total
        start_done, start_time = self.first
        parts = [f"{self.description}: step {done}/{total} ({100 * done // max(1, total)}%)"]
        if detail:
            parts.append(detail)
        if done > start_done:
            rate = (now - start_time) / (done - start_done)
            parts.append(f"{rate:.2f} s/step")
            if done < total:
                parts.append(f"ETA {_duration(rate * (total - done))}")
            else:
                parts.append(f"took {_duration(now - start_time)}")
        self.write(" · ".join(parts))


def losses_text(losses: dict) -> str:
    """The loss terms of a training log window, short: ``box 1.047 mask 0.341``."""
    return " ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in losses.items() if isinstance(v, float))


def training_progress(update: ProgressUpdate) -> Callable[[int, int, dict], None]:
    """The engine's ``progress(step, total, losses)`` drawn by ``update``."""
    return lambda step, total, losses: update(step, total, losses_text(losses))


def is_stdout_tty() -> bool:
    return sys.stdout.isatty()
