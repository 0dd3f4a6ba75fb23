"""The ``prn`` command line end to end, through the installed entry point in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import PQ_REFERENCE

CASE = PQ_REFERENCE / "synthetic_small"


def prn(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "prn_cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=300)


def test_help_and_version_do_not_import_numpy_or_torch():
    code = ("import sys; from prn_cli.cli import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'torchvision', 'numpy', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    version = prn("--version")
    assert version.returncode == 0 and version.stdout.startswith("prn ")


@pytest.mark.parametrize("command", ["eval", "synth", "viz", "demo"])
def test_every_command_has_help(command):
    out = prn(command, "--help")
    assert out.returncode == 0 and "Usage" in out.stdout and "--" in out.stdout


def test_eval_prints_the_table_on_stdout_and_writes_json(tmp_path):
    out = prn("eval", "--gt", CASE / "gt.json", "--pred-json", CASE / "pred.json", "--pred-dir", CASE / "pred",
              "--json", tmp_path / "r.json", "--per-class")
    assert out.returncode == 0, out.stderr
    assert "43.2" in out.stdout and "59.6" in out.stdout and "47.9" in out.stdout   # All PQ SQ RQ
    assert "Per class" in out.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    ref = json.loads((CASE / "reference.json").read_text())["results"]
    assert data["All"]["n"] == ref["All"]["n"] and abs(data["All"]["pq"] - ref["All"]["pq"]) < 1e-12
    assert set(ref["per_class"]) <= set(data["per_class"]) and "tp" in data["per_class"]["3"]
    assert "several crowd regions" in out.stderr      # warnings go to stderr


def test_eval_json_to_stdout_is_pure_json():
    out = prn("eval", "--gt", CASE / "gt.json", "--pred-json", CASE / "pred.json", "--pred-dir", CASE / "pred",
              "--json", "-")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert list(data)[:4] == ["All", "per_class", "Things", "Stuff"]


def test_eval_several_predictions_one_table_with_deltas():
    out = prn("eval", "--gt", CASE / "gt.json", "--pred-json", CASE / "pred.json", "--pred-json", CASE / "gt.json",
              "--pred-dir", CASE / "pred", "--pred-dir", CASE / "gt", "--name", "base", "--name", "oracle")
    assert out.returncode == 0, out.stderr
    assert "Δ oracle" in out.stdout and "base" in out.stdout


def test_invalid_input_exit_code_one_line_no_traceback():
    case = PQ_REFERENCE / "error_unknown_category"
    out = prn("eval", "--gt", case / "gt.json", "--pred", case / "pred.json")
    assert out.returncode == 3
    assert "Traceback" not in out.stderr
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "142238" in lines[0] and "unknown category_id 999" in lines[0]
    assert out.stdout == ""


def test_debug_shows_the_traceback():
    case = PQ_REFERENCE / "error_unknown_category"
    out = prn("--debug", "eval", "--gt", case / "gt.json", "--pred", case / "pred.json")
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_usage_error_exit_code_2():
    out = prn("eval", "--pred", CASE / "pred.json")
    assert out.returncode == 2 and "--gt" in out.stderr
    assert prn("eval", "--gt", CASE / "gt.json", "--pred", CASE / "pred.json", "--gt-area", "nope").returncode == 2


def test_missing_set_is_invalid_input(tmp_path):
    out = prn("eval", "--gt", tmp_path / "nope.json", "--pred", tmp_path)
    assert out.returncode == 3 and "nope.json" in out.stderr and "Traceback" not in out.stderr
