"""``prn eval`` through the command line: the table on stdout, ``--json PATH|-``, several predictions with deltas,
and bad prediction input as exit 3 with one line naming the file, no traceback, nothing written."""

from __future__ import annotations

import json

import pytest

from cli_helpers import prn
from conftest import PQ_REFERENCE, scene, write_set

CASE = PQ_REFERENCE / "synthetic_small"


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


# ------------------------------------------------------------------------------------------------------------
# bad input through the command line: exit 3, one line naming the file, no traceback, nothing written


def _pred_png(pred_json):
    return pred_json.with_suffix("") / "000001.png"


def _edit(pred_json, fn):
    data = json.loads(pred_json.read_text())
    fn(data)
    pred_json.write_text(json.dumps(data))


def _resave(pred_json, fn):
    from PIL import Image

    from prn_cli.panoptic import id2rgb, read_id_png

    png = _pred_png(pred_json)
    rgb = id2rgb(read_id_png(png))
    fn(Image, rgb, png)


BAD_INPUTS = {
    "palette PNG": (lambda p: _resave(p, lambda I, rgb, png: I.fromarray(rgb).convert("P").save(png, "PNG")),
                    "000001.png", "8-bit RGB"),
    "JPEG renamed .png": (lambda p: _resave(p, lambda I, rgb, png: I.fromarray(rgb).save(png, "JPEG")),
                          "000001.png", "lossy"),
    "corrupt PNG": (lambda p: _pred_png(p).write_bytes(_pred_png(p).read_bytes()[:80]), "000001.png",
                    "corrupt or truncated"),
    "missing PNG": (lambda p: _pred_png(p).unlink(), "000001.png", "missing"),
    "malformed JSON": (lambda p: p.write_text("{not json"), "pred.json", "malformed JSON"),
    "file_name escapes": (lambda p: _edit(p, lambda d: d["annotations"][0].update(file_name="../gt/000001.png")),
                          "pred.json", "escapes its folder"),
    "unknown category": (lambda p: _edit(p, lambda d: d["annotations"][0]["segments_info"][0].update(
        category_id=999)), "pred.json", "unknown category_id 999"),
    "PNG id not in JSON": (lambda p: _edit(p, lambda d: d["annotations"][0]["segments_info"].pop()),
                           "pred.json", "in the PNG but not in segments_info"),
    "JSON id not in PNG": (lambda p: _edit(p, lambda d: d["annotations"][0]["segments_info"].append(
        {"id": 4242, "category_id": 1})), "pred.json", "no pixels"),
    "duplicate ids": (lambda p: _edit(p, lambda d: d["annotations"][0]["segments_info"].append(
        dict(d["annotations"][0]["segments_info"][0]))), "pred.json", "listed twice"),
    "no annotation for a GT image": (lambda p: _edit(p, lambda d: d["annotations"].clear()), "pred.json",
                                     "no prediction for the image with id 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_prediction_gives_one_line_and_exit_3(case, tmp_path):
    gt = write_set(tmp_path / "gt.json", tmp_path / "gt", [scene()])
    pred = write_set(tmp_path / "pred.json", tmp_path / "pred", [scene()])
    damage, names, says = BAD_INPUTS[case]
    damage(pred)
    out = prn("eval", "--gt", gt, "--pred", pred, "--json", tmp_path / "report.json")
    assert out.returncode == 3, out.stderr
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert names in lines[0] and says in lines[0], lines[0]
    assert not (tmp_path / "report.json").exists()


def test_size_mismatch_names_both_files(tmp_path):
    gt = write_set(tmp_path / "gt.json", tmp_path / "gt", [scene()])
    pred = write_set(tmp_path / "pred.json", tmp_path / "pred", [scene(h=20)])
    out = prn("eval", "--gt", gt, "--pred", pred)
    assert out.returncode == 3 and "pred/000001.png" in out.stderr and "gt/000001.png" in out.stderr



def test_eval_per_image_tables_and_json(tmp_path):
    out = prn("eval", "--gt", CASE / "gt.json", "--pred-json", CASE / "pred.json", "--pred-json", CASE / "gt.json",
              "--pred-dir", CASE / "pred", "--pred-dir", CASE / "gt", "--name", "base", "--name", "oracle",
              "--per-image", "--image-rows", "2", "--json", tmp_path / "r.json")
    assert out.returncode == 0, out.stderr
    assert "Images where the sets differ most" in out.stdout and "Ground-truth segments" in out.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    base, oracle = data["predictions"]
    n = len(base["per_image"])
    assert f"{n - 2} more image(s)" in out.stdout
    # the GT against itself: every GT segment matched but crowd regions (which may count as FPs, as in the reference)
    for rec in oracle["per_image"]:
        assert rec["fn"] == 0 and all(s["outcome"] in ("matched", "crowd") for s in rec["segments"]["gt"])
        assert all(s["iou"] == 1.0 for s in rec["segments"]["gt"] if s["outcome"] == "matched")
    assert sum(rec["tp"] for rec in base["per_image"]) == sum(v["tp"] for v in base["per_class"].values())
    worst = data["image_deltas"][0]
    assert worst["delta"]["oracle"] == max(d["delta"]["oracle"] for d in data["image_deltas"])
    assert str(worst["image_id"]) in out.stdout


def test_a_json_without_its_png_folder_names_the_folder_and_the_options_that_point_elsewhere(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text((CASE / "gt.json").read_text())            # no gt/ folder beside it
    out = prn("eval", "--gt", gt, "--pred-json", CASE / "pred.json", "--pred-dir", CASE / "pred")
    assert out.returncode == 3 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "gt/ beside the JSON" in out.stderr and "--gt-json with --gt-dir" in out.stderr
    # the options it names work: the same JSON with its folder given
    out = prn("eval", "--gt-json", gt, "--gt-dir", CASE / "gt", "--pred-json", CASE / "pred.json",
              "--pred-dir", CASE / "pred")
    assert out.returncode == 0 and "43.2" in out.stdout
