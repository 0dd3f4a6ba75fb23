"""One table from exceptions to what the user sees: a single line on stderr and the documented exit code."""

from __future__ import annotations

import traceback
from typing import Callable

import typer

from ..errors import EXIT_RUNTIME, EXIT_USAGE, PrnError

try:        # typer >= 0.17 ships its own click; older versions use click itself
    ParseError: type = typer.TyperException
except AttributeError:  # pragma: no cover
    import click

    ParseError = click.ClickException


def _message(exc: BaseException) -> tuple[str, int] | None:
    """``(one-line message, exit code)`` for a known exception, None for an unexpected one."""
    if isinstance(exc, PrnError):
        return exc.message, exc.exit_code
    if isinstance(exc, ParseError):     # bad or missing options, found while parsing
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        return exc.format_message() + hint, exc.exit_code or EXIT_USAGE
    if isinstance(exc, typer.Abort):
        return "interrupted", 130
    if isinstance(exc, OSError) and exc.filename:      # a write refused outside prn's own writers
        from ..io import WRITE_ERRNOS, write_error

        if exc.errno in WRITE_ERRNOS:
            return write_error(exc.filename, exc).message, EXIT_RUNTIME
    return None


def run_app(app: typer.Typer, argv: list[str] | None, *, debug: Callable[[], bool]) -> int:
    """Run ``app`` and return the process exit code; known errors become one line on stderr."""
    from ..console import error_line

    try:
        result = app(args=argv, prog_name="prn", standalone_mode=False)
    except KeyboardInterrupt:
        if debug():
            traceback.print_exc()
        error_line("interrupted")
        return 130
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":    # `prn train` alone: the group's help, as --help shows it
            typer.echo(exc.ctx.get_help())
            return EXIT_USAGE
        known = _message(exc)
        if debug():     # the traceback as well, and the same exit code as without --debug
            traceback.print_exc()
            if known is None:
                return EXIT_RUNTIME
        if known is not None and getattr(exc, "reported_elsewhere", False):    # torchrun: rank 0 printed it
            return known[1]
        if known is None:
            error_line(f"internal error: {exc.__class__.__name__}: {exc} (rerun with --debug for the traceback)")
            return EXIT_RUNTIME
        error_line(known[0])
        return known[1]
    return result if isinstance(result, int) else 0
