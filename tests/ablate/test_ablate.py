"""``prn ablate``: the rows of Table 1, the options (what decides the results, what may change), the table's
mean and std over seeds, and end to end on a tiny synthetic set: all 8 rows with their switches, the base row
as ``evaluate`` sees it, reuse and resume per (row, seed), raising the seeds, and a run folder that refuses
other options."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import statistics
import time

import pytest
from rich.console import Console

from prn_cli.ablate import (TABLE1_ROWS, AblationOptions, ablation_table, build_table, default_schedule, mean_std,
                            run_ablation, select_rows, table_markdown)
from prn_cli.errors import InvalidInputError, OutputExistsError, UsageError
from prn_cli.evaluate import evaluate
from prn_cli.options import PostProcessOverrides, PRNSwitches
from prn_cli.perturb import write_corrupted_set
from prn_cli.synth import SynthConfig, write_dataset
from prn_cli.train import PRNTrainingOptions

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
PRN_SLUGS = list(EXPECTED)[1:]


def tiny_options(data: str = "d", val: str = "v", val_base: str | None = "b", **changes) -> AblationOptions:
    """Two optimizer steps of batch 2 on 64x64 crops, one checkpoint per step, on the CPU."""
    schedule = dataclasses.replace(default_schedule(), iters=2, batch_size=2, lr=1e-3, warmup_iters=1,
                                   checkpoint_every=1, num_workers=0)
    given = {"training": PRNTrainingOptions(crop=64), "schedule": schedule, "device": "cpu", **changes}
    return AblationOptions(data=data, val=val, val_base=val_base, **given)


@pytest.fixture
def synthetic(tmp_path):
    """A 4-image training set, a 2-image val set and a corrupted val base (the "other model")."""
    write_dataset(tmp_path / "train", SynthConfig(n=4, width=64, height=64, seed=1, split="train"))
    val = write_dataset(tmp_path / "val", SynthConfig(n=2, width=64, height=64, seed=2, split="val"))
    write_corrupted_set(val["json"], tmp_path / "base", seed=3)
    return {"data": str(tmp_path / "train"), "val": str(tmp_path / "val"), "val_base": str(tmp_path / "base"),
            "val_json": val["json"]}


def _mtimes(run, name="model_final.pt"):
    return {str(p.parent.relative_to(run / "rows")): p.stat().st_mtime_ns for p in (run / "rows").glob(f"**/{name}")}


# --------------------------------------------------------------------------------------------------------------
# rows and options (fast)


def test_table1_rows_follow_the_design():
    assert [r.slug for r in TABLE1_ROWS] == list(EXPECTED)
    assert [r.index for r in TABLE1_ROWS] == list(range(1, 9))
    assert not TABLE1_ROWS[0].prn and all(r.prn for r in TABLE1_ROWS[1:])
    for r in TABLE1_ROWS:
        assert (r.foreground_head, r.coordconv_decoder, r.coordconv_encoder, r.box_head, r.foreground_source,
                r.use_pred_bbox) == EXPECTED[r.slug]
        assert r.switches == PRNSwitches(*EXPECTED[r.slug][:4])
        assert r.postprocess == PostProcessOverrides(foreground_source=EXPECTED[r.slug][4],
                                                     use_pred_bbox=EXPECTED[r.slug][5])
    assert [r.paper_pq for r in TABLE1_ROWS] == [40.6, 41.4, 41.9, 42.2, 42.0, 42.5, 43.1, 44.4]
    assert [r.slug for r in select_rows(["8", "fg"])] == ["base", "fg", "fg-ccdec-ccenc-bbox"]
    with pytest.raises(UsageError, match="unknown ablation row 'nine'"):
        select_rows(["nine"])


def test_options_are_composed_checked_and_recorded():
    options = tiny_options(postprocess=PostProcessOverrides(stuff_area=64))
    # each row's post-processing: the overrides, then the row's own switches
    fgsem = TABLE1_ROWS[1]
    assert options.row_postprocess(fgsem).given() == {"stuff_area": 64, "foreground_source": "semantic",
                                                       "use_pred_bbox": False}
    assert options.seed_values == [0]
    assert dataclasses.replace(options, seeds=3,
                               schedule=dataclasses.replace(options.schedule, seed=5)).seed_values == [5, 6, 7]
    assert tiny_options(rows="fg, 8").rows == ("fg", "8")

    # HOW options (and the seeds, each of which has its own folder) are not part of the record...
    how = dataclasses.replace(options, rows=("fg",), device="auto", threads=1, refine_batch_size=4, seeds=3,
                              schedule=dataclasses.replace(options.schedule, seed=7, num_workers=3,
                                                           checkpoint_every=5, log_every=3))
    assert how.record() == options.record()
    # ...what decides the results is, also what the training options and the schedule hold beyond the old flags
    record = options.record()
    assert record["schedule"]["iters"] == 2 and record["training"]["crop"] == 64
    assert record["training"]["strength_range"] == [0.3, 0.8] and record["postprocess"] == {"stuff_area": 64}
    assert "seed" not in record["schedule"] and "out_dir" not in record["schedule"]
    assert "switches" not in record["training"] and "val_limit" not in record["training"]
    for changed in (dataclasses.replace(options, schedule=dataclasses.replace(options.schedule, weight_decay=0.1)),
                    dataclasses.replace(options, training=PRNTrainingOptions(crop=64, strength_range=(0.1, 0.2))),
                    dataclasses.replace(options, val_limit=1)):
        assert changed.record() != record

    # checked when built: usage errors, before anything runs
    with pytest.raises(UsageError, match="set by each Table 1 row"):
        tiny_options(postprocess=PostProcessOverrides(use_pred_bbox=True))
    with pytest.raises(UsageError, match="set by each Table 1 row"):
        tiny_options(training=PRNTrainingOptions(switches=PRNSwitches(box_head=True)))
    with pytest.raises(UsageError, match="AblationOptions.postprocess"):
        tiny_options(training=PRNTrainingOptions(postprocess=PostProcessOverrides(stuff_area=1)))
    with pytest.raises(UsageError, match="exactly one"):
        tiny_options(val_base=None)
    with pytest.raises(UsageError, match="--seeds 0"):
        tiny_options(seeds=0)
    with pytest.raises(UsageError, match="unknown ablation row"):
        tiny_options(rows=("nine",))
    with pytest.raises(UsageError, match="schedule.device"):
        tiny_options(schedule=dataclasses.replace(default_schedule(), device="cuda"))


# --------------------------------------------------------------------------------------------------------------
# the table (fast)


def _result(seed, pq, pq_th, pq_st, steps=2):
    return {"seed": seed, "pq": pq, "sq": 0.8, "rq": pq / 0.8, "pq_th": pq_th, "sq_th": 0.7, "rq_th": pq_th / 0.7,
            "pq_st": pq_st, "sq_st": 0.9, "rq_st": pq_st / 0.9, "train": {"steps": steps} if seed is not None else None}


def test_build_table_gives_mean_std_and_deltas_of_the_means():
    options = tiny_options(seeds=3)
    results = {
        "base": [_result(None, 0.40, 0.30, 0.50)],
        "fg": [_result(0, 0.41, 0.30, 0.52), _result(1, 0.43, 0.33, 0.52), _result(2, 0.45, 0.36, 0.55)],
        "fg-bbox": [_result(0, 0.44, 0.31, 0.60)],   # one seed of three so far
    }
    table = build_table(results, options, val_images=2)
    assert table["seeds"] == [0, 1, 2] and [e["slug"] for e in table["rows"]] == ["base", "fg", "fg-bbox"]
    base, fg, bbox = table["rows"]
    assert (base["seeds"], base["pq"], base["pq_std"], base["delta_pq"]) == (1, 0.40, 0.0, 0.0)
    assert [s["seed"] for s in fg["per_seed"]] == [0, 1, 2] and [s["pq"] for s in fg["per_seed"]] == [0.41, 0.43,
                                                                                                       0.45]
    assert fg["seeds"] == 3 and fg["train_steps"] == 2
    assert fg["pq"] == pytest.approx(0.43) and fg["pq_std"] == pytest.approx(0.02)            # ddof 1
    assert fg["pq_th"] == pytest.approx(0.33) and fg["pq_th_std"] == pytest.approx(0.03)
    assert fg["pq_st"] == pytest.approx(0.53) and fg["pq_st_std"] == pytest.approx(0.017320508)
    assert fg["delta_pq"] == pytest.approx(0.03) and fg["delta_pq_th"] == pytest.approx(0.03)
    assert fg["delta_pq_st"] == pytest.approx(0.03)
    assert (bbox["seeds"], bbox["pq"], bbox["pq_std"]) == (1, 0.44, 0.0)
    assert bbox["delta_pq"] == pytest.approx(0.04)
    assert fg["paper"]["pq"] == pytest.approx(0.419) and fg["paper"]["delta_pq"] == pytest.approx(0.013)
    assert mean_std([0.1, None, 0.3]) == (pytest.approx(0.2), pytest.approx(0.141421356))
    assert mean_std([None]) == (None, None)

    md = table_markdown(table)
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert "mean ± sample std over 3 seeds" in md and "seeds 0-2" in md
    assert lines[1] == "| Base |  |  |  |  |  | 40.0 | 30.0 | 50.0 |  |  | 40.6 |"
    # no ForegroundSem row to compare Foreground with; PredBbox against Foreground on the one seed both have
    assert lines[2] == "| PRN | ✓ |  |  |  |  | 43.0 ± 2.0 | 33.0 ± 3.0 | 53.0 ± 1.7 | +3.0 |  | 41.9 (+1.3) |"
    assert lines[3] == "| PRN | ✓ |  |  |  | ✓ | 44.0 | 31.0 | 60.0 | +4.0 | +3.00 vs Foreground | 43.1 (+2.5) |"
    assert fg["paired"] is None and bbox["paired"]["against"] == "fg" and bbox["paired"]["seeds"] == [0]
    assert bbox["paired"]["pq_st"] == pytest.approx(0.08) and bbox["paired"]["pq_std"] == 0.0
    assert "fewer seeds so far: fg-bbox (1 of 3)" in md
    console = Console(width=80, record=True, color_system=None)
    console.print(ablation_table(table))
    text = console.export_text()
    assert "43.0±2.0" in text and "33.0" in text and "+3.0" in text and "over 3 seeds" in " ".join(text.split())
    assert max(len(line) for line in text.splitlines()) <= 80

    # one seed: plain numbers, as before seeds existed
    single = build_table({"base": results["base"], "fg": results["fg"][:1]}, tiny_options(), val_images=2)
    md = table_markdown(single)
    assert "±" not in md and "seed 0;" in md
    assert "| PRN | ✓ |  |  |  |  | 41.0 | 30.0 | 52.0 | +1.0 |  | 41.9 (+1.3) |" in md


def test_rows_are_compared_with_their_reference_row_seed_by_seed():
    """Rows whose means overlap within their spread can differ seed by seed: the paired differences say so."""
    results = {
        "base": [_result(None, 0.40, 0.30, 0.50)],
        "fgsem": [_result(0, 0.40, 0.30, 0.50), _result(1, 0.44, 0.34, 0.54), _result(2, 0.42, 0.32, 0.52)],
        "fg": [_result(0, 0.41, 0.30, 0.52), _result(1, 0.45, 0.33, 0.52), _result(2, 0.43, 0.36, 0.55)],
        "fg-ccdec": [_result(0, 0.42, 0.31, 0.52), _result(2, 0.445, 0.35, 0.55)],   # seed 1 not yet
        "fg-ccdec-ccenc": [_result(5, 0.50, 0.40, 0.60)],                            # no seed in common with fg
    }
    table = build_table(results, tiny_options(seeds=3), val_images=2)
    rows = {e["slug"]: e for e in table["rows"]}
    assert rows["base"]["paired"] is None and rows["fgsem"]["paired"] is None
    fg = rows["fg"]["paired"]
    assert (fg["against"], fg["method"], fg["seeds"]) == ("fgsem", "ForegroundSem", [0, 1, 2])
    assert fg["pq"] == pytest.approx(0.01) and fg["pq_std"] == pytest.approx(0.0, abs=1e-12)
    # the means overlap (43.0 ± 2.0 and 42.0 ± 2.0) but every seed is one point apart
    assert rows["fg"]["pq_std"] > fg["pq"]
    assert fg["pq_th"] == pytest.approx(0.01) and fg["pq_th_std"] == pytest.approx(0.026457513)
    dec = rows["fg-ccdec"]["paired"]
    assert dec["against"] == "fg" and dec["seeds"] == [0, 2]
    assert dec["pq"] == pytest.approx(0.0125) and dec["pq_std"] == pytest.approx(0.0035355339)
    assert rows["fg-ccdec-ccenc"]["paired"] is None
    md = table_markdown(table)
    assert "| +1.00 ± 0.00 vs ForegroundSem |" in md and "| +1.25 ± 0.35 vs Foreground |" in md
    assert "seed by seed (one seed gives both the same training samples in the same order)" in md
    console = Console(width=80, record=True, color_system=None)
    console.print(ablation_table(table))
    text = console.export_text()
    assert "+1.00±0.00" in text and "+1.25±0.35" in text and "Δref" in text
    assert max(len(line) for line in text.splitlines()) <= 80


# --------------------------------------------------------------------------------------------------------------
# end to end (slow)


@pytest.mark.slow
def test_ablation_runs_reuses_resumes_and_guards_its_options(synthetic, tmp_path):
    options = tiny_options(synthetic["data"], synthetic["val"], synthetic["val_base"])
    run = tmp_path / "run"
    stages = []

    started = time.perf_counter()
    first = run_ablation(run, options, lambda stage, done, total: stages.append(stage))
    first_s = time.perf_counter() - started
    assert first.trained == [f"{s}/seed-0" for s in PRN_SLUGS] and not first.reused and not first.resumed
    assert first.evaluated == ["base"] + first.trained
    assert any(s.endswith("fg-bbox: train") for s in stages)

    # table.json: the 8 rows, their switches and post-processing, deltas against the base row
    table = json.loads((run / "table.json").read_text())
    assert table == first.table and table["seeds"] == [0]
    rows = {e["slug"]: e for e in table["rows"]}
    assert list(rows) == list(EXPECTED)
    for slug, e in rows.items():
        assert (e["foreground_head"], e["coordconv_decoder"], e["coordconv_encoder"], e["box_head"],
                e["foreground_source"], e["use_pred_bbox"]) == EXPECTED[slug]
        assert e["delta_pq"] == pytest.approx(e["pq"] - rows["base"]["pq"])
        assert e["train_steps"] == (None if slug == "base" else 2)
        assert e["seeds"] == 1 and e["pq_std"] == 0.0
        assert e["per_seed"][0]["seed"] == (None if slug == "base" else 0)
    assert rows["fgsem"]["marks"] == {"Foreground": False, "ForegroundSem": True, "CoordConvDec": False,
                                      "CoordConvEnc": False, "PredBbox": False}
    assert rows["fg-ccdec-ccenc-bbox"]["marks"] == {"Foreground": True, "ForegroundSem": False,
                                                    "CoordConvDec": True, "CoordConvEnc": True, "PredBbox": True}
    assert not any(rows["base"]["marks"].values())
    # the base row is the base evaluated directly
    direct = evaluate(synthetic["val_json"], [synthetic["val_base"]], workers=0).results[0].groups
    assert rows["base"]["pq"] == direct["All"]["pq"]
    assert rows["base"]["pq_th"] == direct["Things"]["pq"] and rows["base"]["pq_st"] == direct["Stuff"]["pq"]
    # every PRN row refined the whole val set, in its seed's folder
    for slug in PRN_SLUGS:
        refined = run / "rows" / slug / "seed-0" / "refined" / "panoptic.json"
        assert len(json.loads(refined.read_text())["annotations"]) == 2

    md = (run / "table.md").read_text()
    assert md == table_markdown(table) and "±" not in md
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
    assert second.reused == ["base"] + [f"{s}/seed-0" for s in PRN_SLUGS]
    assert not second.trained and not second.resumed and not second.evaluated
    assert _mtimes(run) == before
    assert second.table["rows"] == table["rows"]
    assert second_s < first_s / 5

    # an interrupted row (last.pt kept, no final weights, no result) resumes, and only that row runs
    unit = run / "rows" / "fg-ccenc" / "seed-0"
    (unit / "result.json").unlink()
    (unit / "model_final.pt").unlink()
    assert (unit / "last.pt").exists()
    third = run_ablation(run, options)
    assert third.resumed == ["fg-ccenc/seed-0"] and not third.trained and third.evaluated == ["fg-ccenc/seed-0"]
    assert third.reused == [u for u in second.reused if u != "fg-ccenc/seed-0"]
    after = _mtimes(run)
    assert {k: v for k, v in after.items() if "fg-ccenc/" not in k} == \
        {k: v for k, v in before.items() if "fg-ccenc/" not in k}
    assert (unit / "model_final.pt").exists()
    # exact resume: the same weights, so the same PQ
    assert third.table["rows"] == table["rows"]

    # other options in the same folder are refused (one line), before anything is touched
    with pytest.raises(OutputExistsError, match="--iters 2 there, 3 now"):
        run_ablation(run, dataclasses.replace(options, schedule=dataclasses.replace(options.schedule, iters=3)))
    assert _mtimes(run) == after
    # options that do not change results may change; rows left out keep their place in the table
    fourth = run_ablation(run, dataclasses.replace(
        options, rows=("fg",), schedule=dataclasses.replace(options.schedule, num_workers=1, checkpoint_every=2)))
    assert fourth.reused == ["base", "fg/seed-0"] and fourth.table["rows"] == table["rows"]

    # new post-processing for every row: nothing is trained again, every PRN row is refined and evaluated anew.
    # A stuff area larger than any image removes every stuff segment, which the refined sets must show.
    fifth = run_ablation(run, dataclasses.replace(options, postprocess=PostProcessOverrides(stuff_area=10 ** 9)))
    assert not fifth.trained and not fifth.resumed and fifth.evaluated == [f"{s}/seed-0" for s in PRN_SLUGS]
    assert fifth.reused == ["base"]
    assert _mtimes(run) == after
    for slug in PRN_SLUGS:
        refined = json.loads((run / "rows" / slug / "seed-0" / "refined" / "panoptic.json").read_text())
        stuff = {c["id"] for c in refined["categories"] if not c["isthing"]}
        assert not [s for a in refined["annotations"] for s in a["segments_info"] if s["category_id"] in stuff]
    assert "post-processing stuff_area 1000000000" in (run / "table.md").read_text()
    assert all(e["train_steps"] == 2 for e in fifth.rows if e["prn"])


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_raising_the_seeds_reuses_the_seeds_done(synthetic, tmp_path):
    options = tiny_options(synthetic["data"], synthetic["val"], synthetic["val_base"], rows=("fg",))
    run = tmp_path / "run"
    first = run_ablation(run, options)
    assert first.trained == ["fg/seed-0"] and first.evaluated == ["base", "fg/seed-0"]
    seed0 = run / "rows" / "fg" / "seed-0"
    kept = {name: ((seed0 / name).stat().st_mtime_ns, _digest(seed0 / name))
            for name in ("model_final.pt", "last.pt", "result.json")}

    second = run_ablation(run, dataclasses.replace(options, seeds=2))
    # seed 0 is not trained, refined or evaluated again: only seed 1 runs
    assert second.trained == ["fg/seed-1"] and not second.resumed
    assert second.reused == ["base", "fg/seed-0"] and second.evaluated == ["fg/seed-1"]
    assert {name: ((seed0 / name).stat().st_mtime_ns, _digest(seed0 / name)) for name in kept} == kept
    seed1 = run / "rows" / "fg" / "seed-1"
    assert _digest(seed1 / "model_final.pt") != _digest(seed0 / "model_final.pt")   # another seed, other weights

    # the table: per-seed results as result.json holds them, their mean and sample std, deltas of the means
    table = json.loads((run / "table.json").read_text())
    assert table == second.table and table["seeds"] == [0, 1]
    base, fg = table["rows"]
    per_seed = [json.loads((run / "rows" / "fg" / f"seed-{s}" / "result.json").read_text()) for s in (0, 1)]
    assert [r["seed"] for r in per_seed] == [0, 1] and fg["seeds"] == 2
    assert [e["pq"] for e in fg["per_seed"]] == [r["pq"] for r in per_seed]
    for key in ("pq", "pq_th", "pq_st"):
        values = [r[key] for r in per_seed]
        assert fg[key] == pytest.approx(statistics.fmean(values))
        assert fg[f"{key}_std"] == pytest.approx(statistics.stdev(values))
        assert fg[f"delta_{key}"] == pytest.approx(fg[key] - base[key])
    md = (run / "table.md").read_text()
    assert f"{100 * fg['pq']:.1f} ± {100 * fg['pq_std']:.1f}" in md and "seeds 0-1" in md
    # two seeds at once in a new folder: the same table (each seed's training is a function of its seed alone)
    fresh = run_ablation(tmp_path / "fresh", dataclasses.replace(options, seeds=2))
    assert fresh.trained == ["fg/seed-0", "fg/seed-1"] and fresh.evaluated == ["base", "fg/seed-0", "fg/seed-1"]
    assert fresh.table["rows"] == table["rows"]

    # back to one seed: nothing runs, the table shows seed 0 alone (seed 1 stays on disk for later)
    third = run_ablation(run, options)
    assert not third.trained and not third.evaluated and third.reused == ["base", "fg/seed-0"]
    assert third.table["rows"] == first.table["rows"] and (seed1 / "result.json").is_file()


def test_val_subset_and_input_errors(tmp_path):
    val = write_dataset(tmp_path / "val", SynthConfig(n=3, width=48, height=48, seed=2, split="val"))
    base = tmp_path / "base"
    write_corrupted_set(val["json"], base, seed=3)
    options = dataclasses.replace(tiny_options(str(tmp_path / "val"), str(tmp_path / "val"), str(base)),
                                  val_limit=2, rows=("base",))
    result = run_ablation(tmp_path / "run", options)
    assert [e["slug"] for e in result.rows] == ["base"] and result.table["val_images"] == 2
    assert result.evaluated == ["base"] and not result.trained
    # the first two val images, copied once into RUN/base_val
    assert len(json.loads((tmp_path / "run" / "base_val" / "panoptic.json").read_text())["annotations"]) == 2
    # a folder of an earlier prn version (one folder per row, no seeds) is refused, not mixed in
    old = tmp_path / "old"
    old.mkdir()
    (old / "ablation.json").write_text(json.dumps({"format": 1, "options": {"iters": 2}}))
    with pytest.raises(OutputExistsError, match="earlier prn version"):
        run_ablation(old, options)
    with pytest.raises(InvalidInputError, match="val images folder does not exist"):
        run_ablation(tmp_path / "r2", dataclasses.replace(options, val_images=str(tmp_path / "nowhere")))
    shutil.rmtree(base / "panoptic")
    with pytest.raises(InvalidInputError, match="PNG folder"):
        run_ablation(tmp_path / "r3", options)


def test_every_row_can_borrow_a_trained_prns_boundary_refiner_and_classifier(synthetic, tmp_path):
    import torch

    from prn_cli.checkpoint import load_checkpoint
    from prn_cli.shipped import shipped_weights

    donor_path = shipped_weights("prn")
    options = tiny_options(synthetic["data"], synthetic["val"], synthetic["val_base"], rows=("fg",),
                           extensions_from=str(donor_path))
    run = tmp_path / "run"
    first = run_ablation(run, options)
    assert first.trained == ["fg/seed-0"] and first.evaluated == ["base", "fg/seed-0"]
    unit = run / "rows" / "fg" / "seed-0"
    assert json.loads((unit / "result.json").read_text())["refine"]["weights"] == "model_extended.pt"
    extended, final = load_checkpoint(unit / "model_extended.pt"), load_checkpoint(unit / "model_final.pt")
    donor = load_checkpoint(donor_path)
    borrowed = [k for k in extended["state_dict"] if k.startswith(("boundary.", "classifier."))]
    assert borrowed and not any(k.startswith(("boundary.", "classifier.")) for k in final["state_dict"])
    for key, value in extended["state_dict"].items():
        assert torch.equal(value, (donor if key in borrowed else final)["state_dict"][key]), key
    model, post = extended["config"]["model"], extended["config"]["postprocess"]
    assert (model["boundary_channels"], tuple(model["classifier_channels"])) == (24, (32, 64, 128))
    assert model["classifier_background"] is True
    assert {k: post[k] for k in ("boundary_radius", "boundary_min_coverage", "classifier_confidence",
                                 "classifier_remove_confidence", "void_thing_confidence")} == {
        "boundary_radius": 2, "boundary_min_coverage": 0.4, "classifier_confidence": 0.7,
        "classifier_remove_confidence": 0.8, "void_thing_confidence": 0.8}
    assert post["foreground_source"] == final["config"]["postprocess"]["foreground_source"]
    assert extended["training_data"] == final["training_data"] and extended["step"] == final["step"]
    assert extended["extensions_from"] == str(donor_path.resolve())
    recorded = json.loads((run / "ablation.json").read_text())["options"]["extensions_from"]
    assert recorded["path"] == str(donor_path.resolve()) and _digest(donor_path).startswith(recorded["sha256"])
    assert f"refined with the boundary refiner and thing classifier of {donor_path.resolve()}" in \
        (run / "table.md").read_text()

    # without them: the row is refined and evaluated again as trained, not trained again
    before = _mtimes(run)
    second = run_ablation(run, dataclasses.replace(options, extensions_from=None))
    assert not second.trained and second.evaluated == ["fg/seed-0"] and _mtimes(run) == before
    assert not (unit / "model_extended.pt").exists()
    assert json.loads((unit / "result.json").read_text())["refine"]["weights"] == "model_final.pt"
    assert "thing classifier of" not in (run / "table.md").read_text()
    # a donor without either module is refused before any training
    with pytest.raises(InvalidInputError, match="neither a boundary refiner nor a thing classifier"):
        run_ablation(tmp_path / "other", dataclasses.replace(options, extensions_from=str(unit / "model_final.pt")))
    assert not (tmp_path / "other" / "rows").exists()


def test_the_borrowed_modules_settings_are_the_refines_and_checked_against_the_donor_first(synthetic, tmp_path):
    """Settings of the borrowed modules (here the classifier's thresholds) do not reach the rows' training, which has
    no such modules, and refine with the donor's; a setting the donor cannot honour stops the run before training."""
    import torch

    from prn_cli.checkpoint import load_checkpoint
    from prn_cli.shipped import shipped_weights

    donor_path = shipped_weights("prn")
    tuned = PostProcessOverrides(classifier_confidence=0.5, classifier_remove_confidence=0.9)
    options = tiny_options(synthetic["data"], synthetic["val"], synthetic["val_base"], rows=("fg",),
                           extensions_from=str(donor_path), postprocess=tuned)
    run = tmp_path / "run"
    assert run_ablation(run, options).trained == ["fg/seed-0"]
    unit = run / "rows" / "fg" / "seed-0"
    trained = load_checkpoint(unit / "model_final.pt")["config"]["postprocess"]
    assert (trained["classifier_confidence"], trained["classifier_remove_confidence"]) == (0.0, 0.0)
    assert json.loads((unit / "result.json").read_text())["refine"]["weights"] == "model_extended.pt"
    # a donor whose classifier has no "no thing" class cannot remove things
    ckpt = torch.load(donor_path, weights_only=True)
    things = sum(1 for c in ckpt["categories"] if c["isthing"])
    for name in ("classifier.read_out.weight", "classifier.read_out.bias"):
        ckpt["state_dict"][name] = ckpt["state_dict"][name][:things]
    ckpt["config"]["model"]["classifier_background"] = False
    ckpt["config"]["postprocess"]["classifier_remove_confidence"] = 0.0
    torch.save(ckpt, tmp_path / "plain_donor.pt")
    with pytest.raises(InvalidInputError, match=r"plain_donor\.pt: .*no 'no thing' class; leave out "
                                                r"--classifier-remove-confidence"):
        run_ablation(tmp_path / "other", dataclasses.replace(options, extensions_from=str(tmp_path / "plain_donor.pt")))
    assert not (tmp_path / "other" / "rows").exists()
    # without the removal the same donor is taken
    assert run_ablation(tmp_path / "other", dataclasses.replace(
        options, extensions_from=str(tmp_path / "plain_donor.pt"),
        postprocess=PostProcessOverrides(classifier_confidence=0.5))).trained == ["fg/seed-0"]
