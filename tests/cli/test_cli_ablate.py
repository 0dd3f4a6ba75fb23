"""``prn ablate`` through the command line on a tiny ablation (the base row and one PRN row, two optimizer steps
on 64x64 crops): ``--json -`` is table.json on stdout, a rerun reports the rows it reuses, and a rerun with an
option that decides the results is refused with one line. (The ablation itself: tests/ablate/test_ablate.py.)"""

from __future__ import annotations

import json

import pytest

from cli_helpers import assert_one_line_error, prn

from prn_cli.perturb import write_corrupted_set
from prn_cli.synth import SynthConfig, write_dataset


@pytest.fixture
def tiny_ablation(tmp_path):
    """A 4-image training set, a 2-image val set, a corrupted val base, and the command line of a tiny run."""
    write_dataset(tmp_path / "train", SynthConfig(n=4, width=64, height=64, seed=1, split="train"))
    val = write_dataset(tmp_path / "val", SynthConfig(n=2, width=64, height=64, seed=2, split="val"))
    write_corrupted_set(val["json"], tmp_path / "base", seed=3)
    run = tmp_path / "run"
    args = ["ablate", "--data", tmp_path / "train", "--val", tmp_path / "val", "--val-base", tmp_path / "base",
            "--out", run, "--rows", "fg", "--iters", "2", "--batch-size", "2", "--lr", "0.001", "--warmup-iters",
            "1", "--checkpoint-every", "1", "--crop", "64", "--num-workers", "0", "--device", "cpu"]
    return run, args


@pytest.mark.slow
def test_ablate_json_on_stdout_reuse_on_rerun_and_other_options_refused(tiny_ablation):
    run, args = tiny_ablation

    first = prn(*args, "--json", "-")
    assert first.returncode == 0, first.stderr
    table = json.loads((run / "table.json").read_text())
    # stdout is the JSON and nothing else (json.loads takes the whole of it), and it is table.json's content
    assert json.loads(first.stdout) == table
    assert [row["slug"] for row in table["rows"]] == ["base", "fg"]
    assert "ΔPQ" in first.stderr and "cached result" not in first.stderr   # the table goes to stderr

    second = prn(*args, "--json", "-")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == table
    reused = [line for line in second.stderr.splitlines() if "cached result" in line]
    assert any("fg" in line for line in reused) and any("base" in line for line in reused), second.stderr
    assert "ΔPQ" in second.stderr and "Traceback" not in second.stderr

    before = (run / "table.json").read_bytes()
    other = prn(*[a if a != "0.001" else "0.002" for a in args])        # another --lr decides other results
    assert_one_line_error(other, 2, "other options")
    assert other.stdout == ""
    assert (run / "table.json").read_bytes() == before
