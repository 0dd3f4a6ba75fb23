"""The commands that make and use panoptic sets, end to end through the command line: synth, demo, segment and
refine with the shipped models, viz, train base, info."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cli_helpers import prn, synth
from conftest import PQ_REFERENCE

from prn_cli.panoptic import load_set, validate_set


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
    assert (tmp_path / "demo" / "report" / "index.html").exists()          # prn report of the same sets
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
    synth(tmp_path / "d", "--n", "2", "--size", "64x64", "--seed", "1", "--split", "train")
    # relative paths, run from tmp_path: the path printed must be usable from where the command ran
    args = ["train", "base", "--data", "d", "--out", "run", "--iters", "2", "--batch-size", "2", "--crop", "64",
            "--warmup-iters", "1", "--num-workers", "0"]
    out = prn(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"last.pt", "model_final.pt", "metrics.jsonl"}
    said = re.search(r"final weights: (\S+)", out.stdout)
    assert said, out.stdout
    final = Path(said.group(1))
    final = final if final.is_absolute() else tmp_path / final
    assert final.name == "model_final.pt" and final.is_file()
    assert final.resolve() == (tmp_path / "run" / "model_final.pt").resolve()
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 2 and "loss_mask" in lines[-1]
    again = prn(*args, cwd=tmp_path)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    redo = prn(*[("1" if a == "2" and args[k - 1] == "--iters" else a) for k, a in enumerate(args)], "--overwrite",
               cwd=tmp_path)
    assert redo.returncode == 0, redo.stderr           # --overwrite starts again: the old run's files are replaced
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1]
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
    assert refiner["refiners"] == {"full_resolution": 16, "boundary": 24} and "refiners" not in base
    assert refiner["thing_classifier"] == [32, 64, 128] and "thing_classifier" not in base
    assert {c["id"] for c in base["categories"]} == {1, 2, 3, 4, 5, 6, 7, 101, 102, 103, 104, 105}
    bogus = tmp_path / "x.pt"
    bogus.write_bytes(b"not a checkpoint")
    bad = prn("info", bogus)
    assert bad.returncode == 3 and len(bad.stderr.strip().splitlines()) == 1 and "x.pt" in bad.stderr
