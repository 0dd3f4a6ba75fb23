"""Running ``prn`` as users do: a subprocess, so exit codes, stdout and stderr are the real ones.

The subprocess is forked from a server that has imported prn's CLI and torch once (tests/prn_forkserver.py;
one per test process, started on first use), which saves the three seconds of ``import torch`` per command.
``fresh=True``, or an ``env`` that sets a ``PYTHON*`` variable, runs a new interpreter instead.

Imported by the tests of this folder as ``from cli_helpers import ...`` (pytest puts a test file's folder on
``sys.path``; the folder has no ``__init__.py``, like the others under tests/).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import prn_forkserver


def prn(*args, cwd=None, env=None, timeout=300, fresh=False) -> subprocess.CompletedProcess:
    """``prn ARGS`` (the same ``main`` as the ``prn`` script), text output captured."""
    extra = env or {}
    env = {**os.environ, **extra}
    if fresh or any(key.startswith("PYTHON") for key in extra):
        command = [sys.executable, "-m", "prn_cli"]
    else:
        command = prn_forkserver.command()
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def synth(out, *args) -> Path:
    """``prn synth --out OUT ARGS``, which must succeed; returns ``out``."""
    made = prn("synth", "--out", out, *args)
    assert made.returncode == 0, made.stderr
    return Path(out)


def prn_script() -> list[str]:
    """The installed ``prn`` console script beside this interpreter, else ``python -m prn_cli``."""
    script = Path(sys.executable).parent / "prn"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("prn")
    return [found] if found else [sys.executable, "-m", "prn_cli"]


def stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The non-blank lines of a run's stderr."""
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """Exit ``code``, exactly one stderr line holding every fragment, no traceback; returns the line."""
    lines = stderr_lines(result)
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
