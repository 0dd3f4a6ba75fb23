"""The ``prn`` command line end to end, through the installed entry point in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import PQ_REFERENCE

from prn_cli.panoptic import load_set, validate_set

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


@pytest.mark.parametrize("command", ["eval", "synth", "viz", "demo", "segment", "train", "train base", "train prn",
                                     "refine", "ablate", "info"])
def test_every_command_has_help(command):
    out = prn(*command.split(), "--help")
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
    from conftest import scene, write_set

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
    from conftest import scene, write_set

    gt = write_set(tmp_path / "gt.json", tmp_path / "gt", [scene()])
    pred = write_set(tmp_path / "pred.json", tmp_path / "pred", [scene(h=20)])
    out = prn("eval", "--gt", gt, "--pred", pred)
    assert out.returncode == 3 and "pred/000001.png" in out.stderr and "gt/000001.png" in out.stderr


def test_synth_then_eval_gt_against_itself_is_100_and_refuses_to_overwrite(tmp_path):
    out = prn("synth", "--out", tmp_path / "d", "--n", "3", "--size", "96x64", "--seed", "5", "--split", "val")
    assert out.returncode == 0, out.stderr
    gt = tmp_path / "d" / "annotations" / "panoptic_val.json"
    evaluated = prn("eval", "--gt", tmp_path / "d", "--pred", gt, "--json", "-")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["All"]["pq"] == 1.0
    before = gt.read_bytes()
    again = prn("synth", "--out", tmp_path / "d", "--n", "3", "--size", "96x64", "--seed", "6", "--split", "val")
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    assert gt.read_bytes() == before
    bad_size = prn("synth", "--out", tmp_path / "e", "--size", "big")
    assert bad_size.returncode == 2 and not (tmp_path / "e").exists()


def test_demo_runs_the_whole_pipeline_with_the_shipped_models(tmp_path):
    out = prn("demo", "--out", tmp_path / "demo", "--n", "3", "--size", "128x96", "--workers", "0")
    assert out.returncode == 0, out.stderr
    assert "refined" in out.stdout and "panels:" in out.stdout
    report = json.loads((tmp_path / "demo" / "eval.json").read_text())
    base, refined = report["predictions"]
    assert base["images"] == refined["images"] == 3
    assert 0.05 < base["All"]["pq"] < 0.99 and 0.05 < refined["All"]["pq"] < 0.99
    for name in ("base", "refined"):
        assert validate_set(load_set(tmp_path / "demo" / name)) == []
    panels = sorted((tmp_path / "demo" / "viz" / "panels").glob("*.png"))
    assert len(panels) == 3 and (tmp_path / "demo" / "viz" / "index.html").exists()
    assert prn("demo", "--out", tmp_path / "demo", "--n", "3", "--size", "128x96").returncode == 2
    again = prn("demo", "--out", tmp_path / "demo", "--n", "3", "--size", "128x96", "--corrupted-base",
                "--overwrite")
    assert again.returncode == 0, again.stderr


def test_segment_and_refine_default_to_the_shipped_models(tmp_path):
    from prn_cli.shipped import shipped_weights

    data = tmp_path / "d"
    assert prn("synth", "--out", data, "--n", "2", "--size", "96x64", "--split", "val").returncode == 0
    seg = prn("segment", "--images", data / "images" / "val", "--out", tmp_path / "base")
    assert seg.returncode == 0, seg.stderr
    assert "shipped MS-PanopticFPN" in seg.stderr and shipped_weights("base").name in seg.stderr
    ref = prn("refine", "--base", tmp_path / "base", "--images", data / "images" / "val", "--out", tmp_path / "r",
              "--json", "-")
    assert ref.returncode == 0, ref.stderr
    assert "shipped PRN" in ref.stderr and json.loads(ref.stdout)["written"] == 2


def test_viz_cli_panels_of_two_sets(tmp_path):
    case = PQ_REFERENCE / "sample_merge_split"
    out = prn("viz", case / "pred.json", case / "gt.json", "--title", "pred", "--title", "gt", "--out",
              tmp_path / "v", "--html", "--labels")
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "v" / "panels").glob("*.png"))) == 2
    assert "panels/" in (tmp_path / "v" / "index.html").read_text()


def test_train_base_cli_writes_a_run_and_refuses_to_clobber_it(tmp_path):
    made = prn("synth", "--out", tmp_path / "d", "--n", "2", "--size", "64x64", "--seed", "1", "--split", "train")
    assert made.returncode == 0, made.stderr
    args = ["train", "base", "--data", tmp_path / "d", "--out", tmp_path / "run", "--iters", "2", "--batch-size",
            "2", "--crop", "64", "--warmup-iters", "1", "--num-workers", "0"]
    out = prn(*args)
    assert out.returncode == 0, out.stderr
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"last.pt", "model_final.pt", "metrics.jsonl"}
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 2 and "loss_mask" in lines[-1]
    again = prn(*args)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"\x80\x04\x95not a checkpoint")
    seg = prn("segment", "--images", tmp_path / "d" / "images" / "train", "--weights", evil, "--out", tmp_path / "o")
    assert seg.returncode == 3 and "evil.pt" in seg.stderr and "Traceback" not in seg.stderr


def test_info_describes_the_shipped_checkpoints_and_refuses_other_files(tmp_path):
    out = prn("info", "--json", "-")
    assert out.returncode == 0, out.stderr
    base, refiner = json.loads(out.stdout)
    assert (base["kind"], refiner["kind"]) == ("base", "prn")
    assert refiner["switches"]["box_head"] is True and 1.0e6 < refiner["parameters"] < 2.0e6
    assert {c["id"] for c in base["categories"]} == {1, 2, 3, 4, 5, 6, 7, 101, 102, 103, 104, 105}
    bogus = tmp_path / "x.pt"
    bogus.write_bytes(b"not a checkpoint")
    bad = prn("info", bogus)
    assert bad.returncode == 3 and len(bad.stderr.strip().splitlines()) == 1 and "x.pt" in bad.stderr
