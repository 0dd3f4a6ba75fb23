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


def test_viz_defaults_ground_truth_title_and_one_colour_per_stuff_class(tmp_path):
    import numpy as np
    from PIL import Image

    from conftest import scene, write_set

    ids, segs = scene()
    gt = write_set(tmp_path / "data/annotations/panoptic_val.json", tmp_path / "data/annotations/panoptic_val",
                   [(ids, segs)])
    moved = np.where(ids == 1001, 5001, ids)                    # the sky under another segment id
    write_set(tmp_path / "base/panoptic.json", tmp_path / "base/panoptic",
              [(moved, [dict(s, id=5001) if s["id"] == 1001 else s for s in segs])])
    out = prn("viz", tmp_path / "base", gt, "--out", tmp_path / "viz", "--no-boundaries")
    assert out.returncode == 0, out.stderr
    sky = (70, 130, 180)                                        # the sky category's colour, in both sets
    for folder in ("base", "ground_truth"):
        tile = np.asarray(Image.open(tmp_path / "viz" / folder / "000001.png"))
        assert tuple(tile[2, 2]) == sky
