"""The ``prn`` command line: this module only registers the command groups (one module each) and turns known
errors into one line and a documented exit code.

Each command parses its options, checks what it can without torch (option values, input files, the output
folder), then calls one function of the core. ``prn --help`` imports no torch.
"""

from __future__ import annotations

import os
import sys

import typer

from .. import __version__
from ._common import CONTEXT, EPILOG
from ._errors import run_app

app = typer.Typer(
    name="prn",
    help="Panoptic segmentation refinement: make, evaluate and visualize COCO panoptic sets (PNG + JSON).",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
)

_state = {"debug": bool(os.environ.get("PRN_DEBUG"))}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"prn {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True, metavar="",
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", metavar="", help="Show tracebacks on errors (also: PRN_DEBUG=1)."),
) -> None:
    if debug:
        _state["debug"] = True


def _register() -> None:
    from . import ablate, convert, demo, eval, export, info, refine, report, segment, synth, train, viz

    for module in (segment, refine, convert, eval, report, viz, synth, train, ablate, info, export, demo):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _state["debug"] = bool(os.environ.get("PRN_DEBUG"))     # read per run: main may run more than once
    sys.exit(run_app(app, argv, debug=lambda: _state["debug"]))


__all__ = ["app", "main"]
