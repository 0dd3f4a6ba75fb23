"""The ``prn`` application as a whole, through a subprocess: help and version without heavy imports, every
command's help, and the exit-code conventions (usage error 2, invalid input 3 as one line, ``--debug`` for the
traceback).

The commands themselves: test_cli_eval.py, test_cli_commands.py (synth, demo, segment, refine, viz, train, info),
test_cli_segment_refine.py, test_cli_ablate.py; option checks: test_cli_options.py.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cli_helpers import assert_one_line_error, prn, prn_script
from conftest import PQ_REFERENCE

CASE = PQ_REFERENCE / "synthetic_small"


def test_help_and_version_do_not_import_numpy_or_torch():
    code = ("import sys; from prn_cli.cli import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'torchvision', 'numpy', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    version = prn("--version")
    assert version.returncode == 0 and version.stdout.startswith("prn ")


def test_prn_help_imports_no_torch_and_answers_quickly():
    """``prn --help`` through the entry point: no torch among the imported modules (``-X importtime`` lists
    every one), and well under a second on an idle machine (3 s allowed for a busy one)."""
    traced = prn("--help", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert traced.returncode == 0 and "Usage" in traced.stdout, traced.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in traced.stderr.splitlines()
                if line.startswith("import time:")}
    assert "prn_cli.cli" in imported                      # the trace is real
    assert not {m for m in imported if m.split(".")[0] in ("torch", "torchvision")}
    best = float("inf")
    for _ in range(2):                                    # the better of two, against a cold disk cache
        started = time.perf_counter()
        out = subprocess.run([*prn_script(), "--help"], capture_output=True, text=True, timeout=60)
        best = min(best, time.perf_counter() - started)
        assert out.returncode == 0 and "Usage" in out.stdout, out.stderr
    assert best < 3.0, f"prn --help took {best:.2f} s"


@pytest.mark.parametrize("command", ["eval", "synth", "viz", "demo", "segment", "train", "train base", "train prn",
                                     "refine", "ablate", "info"])
def test_every_command_has_help(command):
    out = prn(*command.split(), "--help")
    assert out.returncode == 0 and "Usage" in out.stdout and "--" in out.stdout


def test_invalid_input_exit_code_one_line_no_traceback():
    case = PQ_REFERENCE / "error_unknown_category"
    out = prn("eval", "--gt", case / "gt.json", "--pred", case / "pred.json")
    assert_one_line_error(out, 3, "142238", "unknown category_id 999")
    assert out.stdout == ""


def test_debug_shows_the_traceback():
    case = PQ_REFERENCE / "error_unknown_category"
    out = prn("--debug", "eval", "--gt", case / "gt.json", "--pred", case / "pred.json")
    assert out.returncode == 3 and "Traceback" in out.stderr           # the same exit code as without --debug
    assert out.stderr.strip().splitlines()[-1].startswith("error:")
    bad = prn("refine", "--base", CASE, "--images", CASE, "--out", "x", "--nms-kernel", "4", env={"PRN_DEBUG": "1"})
    assert bad.returncode == 2 and "Traceback" in bad.stderr and "--nms-kernel 4" in bad.stderr


def test_usage_error_exit_code_2():
    out = prn("eval", "--pred", CASE / "pred.json")
    assert out.returncode == 2 and "--gt" in out.stderr
    assert prn("eval", "--gt", CASE / "gt.json", "--pred", CASE / "pred.json", "--gt-area", "nope").returncode == 2


def test_missing_set_is_invalid_input(tmp_path):
    out = prn("eval", "--gt", tmp_path / "nope.json", "--pred", tmp_path)
    assert out.returncode == 3 and "nope.json" in out.stderr and "Traceback" not in out.stderr
