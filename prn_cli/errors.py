"""Errors that prn reports to users as one line, and the process exit codes they map to.

Exit codes (documented in the README):

- 0  success
- 1  runtime error (a bug, an unexpected failure, an interrupted run)
- 2  usage error (bad options; raised by Typer/Click)
- 3  invalid input data (a file that is missing, unreadable or inconsistent)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INVALID_INPUT = 3


class PrnError(Exception):
    """An error with a message fit to show a user as one line; no traceback needed."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInputError(PrnError):
    """Input data is missing, unreadable or inconsistent.

    The message names the file (and image/segment where it applies) and says how to fix it.
    """

    exit_code = EXIT_INVALID_INPUT


class UsageError(PrnError):
    """A bad option value or combination that only shows once the command runs (e.g. ``--device cuda`` on a
    machine without CUDA); exit code 2, as for the options Typer rejects while parsing."""

    exit_code = EXIT_USAGE


class OutputExistsError(PrnError):
    """An output would overwrite an earlier result; the user must ask for it with ``--overwrite``."""

    exit_code = EXIT_USAGE


class OutputWriteError(PrnError):
    """An output file cannot be written (disk full, quota, read-only or unwritable folder): the message names the
    file; a runtime error (exit 1), not an input problem."""


def fail(path, problem: str, fix: str) -> InvalidInputError:
    """Build the standard one-line message ``<path>: <problem>; <fix>``."""
    text = f"{path}: {problem}" if path is not None else problem
    if fix:
        text += f"; {fix}"
    return InvalidInputError(" ".join(text.split()))
