"""The scripts in examples/ run and say what they claim."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_compare_predictions_example(tmp_path, capsys):
    module = runpy.run_path(str(EXAMPLES / "compare_predictions.py"))
    report = module["main"](["--out", str(tmp_path), "--n", "4"])
    worse, better = report["predictions"]
    assert better["All"]["pq"] > worse["All"]["pq"]          # milder corruption scores higher
    assert report["deltas"][0]["All"]["pq"] > 0
    assert "All     PQ" in capsys.readouterr().out
