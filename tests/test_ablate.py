"""``prn ablate`` end to end on a tiny synthetic set: all 8 rows of Table 1 with their switches, the base row as
``evaluate`` sees it, row-by-row reuse and resume, and a run folder that refuses other options."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from prn_cli.ablate import TABLE1_ROWS, AblationOptions, run_ablation, select_rows, table_markdown
from prn_cli.errors import InvalidInputError, OutputExistsError
from prn_cli.evaluate import evaluate
from prn_cli.perturb import write_corrupted_set
from prn_cli.synth import SynthConfig, write_dataset

# (foreground_head, coordconv_decoder, coordconv_encoder, box_head, foreground_source, use_pred_bbox) per row
EXPECTED = {
    "base": (False, False, False, False, "foreground", False),
    "fgsem": (False, False, False, False, "semantic", False),
    "fg": (True, False, False, False, "foreground", False),
    "fg-ccdec": (True, True, False, False, "foreground", False),
    "fg-ccenc": (True, False, True, False, "foreground", False),
    "fg-ccdec-ccenc": (True, True, True, False, "foreground", False),
    "fg-bbox": (True, False, False, True, "foreground", True),
    "fg-ccdec-ccenc-bbox": (True, True, True, True, "foreground", True),
}


def test_table1_rows_follow_design_section_5():
    assert [r.slug for r in TABLE1_ROWS] == list(EXPECTED)
    assert [r.index for r in TABLE1_ROWS] == list(range(1, 9))
    assert not TABLE1_ROWS[0].prn and all(r.prn for r in TABLE1_ROWS[1:])
    for r in TABLE1_ROWS:
        assert (r.foreground_head, r.coordconv_decoder, r.coordconv_encoder, r.box_head, r.foreground_source,
                r.use_pred_bbox) == EXPECTED[r.slug]
    assert [r.paper_pq for r in TABLE1_ROWS] == [40.6, 41.4, 41.9, 42.2, 42.0, 42.5, 43.1, 44.4]
    assert [r.slug for r in select_rows(["8", "fg"])] == ["base", "fg", "fg-ccdec-ccenc-bbox"]
    with pytest.raises(InvalidInputError):
        select_rows(["nine"])


def _mtimes(run):
    return {p.parent.name: p.stat().st_mtime_ns for p in (run / "rows").glob("*/model_final.pt")}


def test_ablation_runs_reuses_resumes_and_guards_its_options(tmp_path):
    write_dataset(tmp_path / "train", SynthConfig(n=4, width=64, height=64, seed=1, split="train"))
    val = write_dataset(tmp_path / "val", SynthConfig(n=2, width=64, height=64, seed=2, split="val"))
    base = tmp_path / "base"
    write_corrupted_set(val["json"], base, seed=3)
    options = AblationOptions(data=str(tmp_path / "train"), val=str(tmp_path / "val"), val_base=str(base),
                              iters=2, batch_size=2, lr=1e-3, warmup=1, crop=64, workers=0, device="cpu",
                              checkpoint_every=1, seed=0)
    run = tmp_path / "run"
    stages = []

    started = time.perf_counter()
    first = run_ablation(run, options, lambda stage, done, total: stages.append(stage))
    first_s = time.perf_counter() - started
    assert first.trained == [r.slug for r in TABLE1_ROWS[1:]] and not first.reused and not first.resumed
    assert any(s.endswith("fg-bbox: train") for s in stages)

    # table.json: the 8 rows, their switches and post-processing, deltas against the base row
    table = json.loads((run / "table.json").read_text())
    assert table == first.table
    rows = {e["slug"]: e for e in table["rows"]}
    assert list(rows) == list(EXPECTED)
    for slug, e in rows.items():
        assert (e["foreground_head"], e["coordconv_decoder"], e["coordconv_encoder"], e["box_head"],
                e["foreground_source"], e["use_pred_bbox"]) == EXPECTED[slug]
        assert e["delta_pq"] == pytest.approx(e["pq"] - rows["base"]["pq"])
        assert e["train_steps"] == (None if slug == "base" else 2)
    assert rows["fgsem"]["marks"] == {"Foreground": False, "ForegroundSem": True, "CoordConvDec": False,
                                      "CoordConvEnc": False, "PredBbox": False}
    assert rows["fg-ccdec-ccenc-bbox"]["marks"] == {"Foreground": True, "ForegroundSem": False,
                                                    "CoordConvDec": True, "CoordConvEnc": True, "PredBbox": True}
    assert not any(rows["base"]["marks"].values())
    # the base row is the base evaluated directly
    direct = evaluate(val["json"], [base], workers=0).results[0].groups
    assert rows["base"]["pq"] == direct["All"]["pq"]
    assert rows["base"]["pq_th"] == direct["Things"]["pq"] and rows["base"]["pq_st"] == direct["Stuff"]["pq"]
    # every PRN row refined the whole val set
    for slug in list(EXPECTED)[1:]:
        assert len(json.loads((run / "rows" / slug / "refined" / "panoptic.json").read_text())["annotations"]) == 2

    md = (run / "table.md").read_text()
    assert md == table_markdown(table)
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| Method | Foreground | ForegroundSem | CoordConvDec | CoordConvEnc | PredBbox | "
                               "PQ | PQth | PQst | ΔPQ vs base")
    assert len(lines) == 2 + 8

    # a second run reuses every row: nothing is trained again
    before = _mtimes(run)
    assert len(before) == 7
    started = time.perf_counter()
    second = run_ablation(run, options)
    second_s = time.perf_counter() - started
    assert second.reused == list(EXPECTED) and not second.trained and not second.resumed and not second.evaluated
    assert _mtimes(run) == before
    assert second.table["rows"] == table["rows"]
    assert second_s < first_s / 5

    # an interrupted row (last.pt kept, no final weights, no result) resumes, and only that row runs
    row = run / "rows" / "fg-ccenc"
    (row / "result.json").unlink()
    (row / "model_final.pt").unlink()
    assert (row / "last.pt").exists()
    third = run_ablation(run, options)
    assert third.resumed == ["fg-ccenc"] and not third.trained and third.evaluated == ["fg-ccenc"]
    assert third.reused == [s for s in EXPECTED if s != "fg-ccenc"]
    after = _mtimes(run)
    assert {k: v for k, v in after.items() if k != "fg-ccenc"} == {k: v for k, v in before.items() if k != "fg-ccenc"}
    assert (row / "model_final.pt").exists()
    # exact resume: the same weights, so the same PQ
    assert third.table["rows"] == table["rows"]

    # other options in the same folder are refused (one line), before anything is touched
    with pytest.raises(OutputExistsError, match="iters 2 there, 3 now"):
        run_ablation(run, dataclasses.replace(options, iters=3))
    assert _mtimes(run) == after
    # options that do not change results may change; rows left out keep their place in the table
    fourth = run_ablation(run, dataclasses.replace(options, workers=1, rows=("fg",)))
    assert fourth.reused == ["base", "fg"] and fourth.table["rows"] == table["rows"]

    # the command: the same table as JSON on stdout, the Rich table on stderr
    r = subprocess.run([sys.executable, "-m", "prn_cli", "ablate", "--data", options.data, "--val", options.val,
                        "--val-base", str(base), "--out", str(run), "--iters", "2", "--batch-size", "2", "--lr",
                        "1e-3", "--warmup", "1", "--crop", "64", "--checkpoint-every", "1", "--workers", "0",
                        "--device", "cpu", "--json"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == table
    assert "fg-ccenc: cached result" in r.stderr and "ΔPQ" in r.stderr
    r = subprocess.run([sys.executable, "-m", "prn_cli", "ablate", "--data", options.data, "--val", options.val,
                        "--val-base", str(base), "--out", str(run)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "other options" in r.stderr

    # new post-processing for every row: nothing is trained again, every PRN row is refined and evaluated anew.
    # A stuff area larger than any image removes every stuff segment, which the refined sets must show.
    trained = _mtimes(run)
    fifth = run_ablation(run, dataclasses.replace(options, postprocess={"stuff_area": 10 ** 9}))
    assert not fifth.trained and not fifth.resumed and fifth.evaluated == list(EXPECTED)[1:]
    assert _mtimes(run) == trained
    for slug in list(EXPECTED)[1:]:
        refined = json.loads((run / "rows" / slug / "refined" / "panoptic.json").read_text())
        stuff = {c["id"] for c in refined["categories"] if not c["isthing"]}
        assert not [s for a in refined["annotations"] for s in a["segments_info"] if s["category_id"] in stuff]
    assert "post-processing stuff_area 1000000000" in (run / "table.md").read_text()
    with pytest.raises(ValueError, match="set by each Table 1 row"):
        AblationOptions(data="d", val="v", postprocess={"use_pred_bbox": True})


def test_val_subset_and_input_errors(tmp_path):
    val = write_dataset(tmp_path / "val", SynthConfig(n=3, width=48, height=48, seed=2, split="val"))
    base = tmp_path / "base"
    write_corrupted_set(val["json"], base, seed=3)
    options = AblationOptions(data=str(tmp_path / "val"), val=str(tmp_path / "val"), val_base=str(base),
                              val_images=2, rows=("base",), workers=0, device="cpu")
    result = run_ablation(tmp_path / "run", options)
    assert [e["slug"] for e in result.rows] == ["base"] and result.table["val_images"] == 2
    # the first two val images, copied once into RUN/base_val
    assert len(json.loads((tmp_path / "run" / "base_val" / "panoptic.json").read_text())["annotations"]) == 2
    with pytest.raises(InvalidInputError, match="exactly one"):
        run_ablation(tmp_path / "r2", dataclasses.replace(options, val_base=None))
    shutil.rmtree(base / "panoptic")
    with pytest.raises(InvalidInputError):
        run_ablation(tmp_path / "r3", options)
