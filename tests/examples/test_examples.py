"""The scripts in examples/ run and say what they claim."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_compare_predictions_example(tmp_path, capsys):
    module = runpy.run_path(str(EXAMPLES / "compare_predictions.py"))
    report = module["main"](["--out", str(tmp_path), "--n", "4"])
    worse, better = report["predictions"]
    assert better["All"]["pq"] > worse["All"]["pq"]          # milder corruption scores higher
    assert report["deltas"][0]["All"]["pq"] > 0
    assert "All     PQ" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["segment_and_eval.sh", "refine_any_model.sh"])
def test_shell_examples_run_with_the_shipped_models(script, tmp_path):
    import os
    import subprocess

    root = tmp_path / "run"
    out = subprocess.run(["bash", str(EXAMPLES / script), str(root)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "N": "3", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert (root / "viz" / "index.html").exists()
    assert "PQ" in out.stdout


@pytest.mark.parametrize("name", sorted(p.name for p in (EXAMPLES / "configs").glob("prn_*.json")))
def test_the_example_prn_configs_are_valid_model_configs(name):
    from prn_cli.train import prn_model_config

    config = prn_model_config("tiny", EXAMPLES / "configs" / name)
    assert config.loss.semantic_top_k == 0.2         # every stage keeps the hard-pixel loss of the first
    if "classifier" in name:
        assert config.classifier_channels == (32, 64, 128) and config.trainable == "classifier"
        assert config.classifier_background == (name != "prn_classifier.json")
        assert config.classifier_background_examples == ("unmatched" if "unmatched" in name else "off_things")
