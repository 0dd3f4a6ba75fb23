"""``prn report`` through the command line: the folder, the summary line and JSON, and its usage errors."""

from __future__ import annotations

import json

from cli_helpers import assert_one_line_error, prn
from conftest import PQ_REFERENCE

CASE = PQ_REFERENCE / "synthetic_small"


def test_report_writes_the_folder_and_json(tmp_path):
    out = prn("report", "--gt", CASE / "gt.json", "--pred", CASE / "pred.json", "--pred", CASE / "gt.json",
              "--name", "base", "--name", "oracle", "--out", tmp_path / "r", "--limit", "2", "--json", "-")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["images"] == 2 and summary["sets"] == ["base", "oracle"]
    assert "wrote a report of 2 image(s)" in out.stderr
    page = (tmp_path / "r" / "index.html").read_text()
    assert "prn report: base | oracle | ground truth" in page      # no photos: no image column
    manifest = json.loads((tmp_path / "r" / "report.json").read_text())
    assert manifest["summary"]["predictions"][1]["name"] == "oracle"
    again = prn("report", "--gt", CASE / "gt.json", "--pred", CASE / "pred.json", "--out", tmp_path / "r")
    assert_one_line_error(again, 2, "already holds a prn report", "--overwrite")


def test_report_needs_one_name_per_set(tmp_path):
    out = prn("report", "--gt", CASE / "gt.json", "--pred", CASE / "pred.json", "--name", "a", "--name", "b",
              "--out", tmp_path / "r")
    assert_one_line_error(out, 2, "--name")
    assert not (tmp_path / "r").exists()
