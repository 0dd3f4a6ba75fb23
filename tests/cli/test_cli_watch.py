"""Through the command line: training logs progress without a terminal, prn info RUN_DIR draws the curves, the
shipped models say what they are, and segment / refine warn once about images unlike their training data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cli_helpers import prn, synth


def test_train_without_a_terminal_logs_progress_and_info_draws_the_curves(tmp_path):
    synth(tmp_path / "d", "--n", "2", "--size", "64x64", "--seed", "1", "--split", "train")
    out = prn("train", "base", "--data", tmp_path / "d", "--out", tmp_path / "run", "--iters", "2", "--batch-size",
              "2", "--crop", "64", "--warmup-iters", "1", "--num-workers", "0")
    assert out.returncode == 0, out.stderr
    progress = [line for line in out.stderr.splitlines() if line.startswith("train base: step")]
    assert len(progress) == 1 and progress[0].startswith("train base: step 2/2 (100%) · box ")
    assert " s/step · took " in progress[0]

    info = prn("info", tmp_path / "run", "--json", tmp_path / "info.json")
    assert info.returncode == 0, info.stderr
    assert "training: 2 steps logged, last total loss" in info.stdout
    assert f"curves: {tmp_path / 'run' / 'curves.png'}" in info.stdout
    curves = np.asarray(Image.open(tmp_path / "run" / "curves.png"))
    assert curves.shape == (300, 1040, 3)
    described = json.loads((tmp_path / "info.json").read_text())[0]
    assert described["training_data"]["images"] == 2 and described["training_data"]["mean"][0] == 64.0
    assert described["run"]["steps"] == 2 and described["run"]["curves"] == str(tmp_path / "run" / "curves.png")
    assert "intended_use" not in described


def test_train_tensorboard_without_the_package_is_a_usage_error_that_says_how_to_get_it(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    # sitecustomize runs at start-up: with sys.modules["tensorboard"] = None the package cannot be found
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['tensorboard'] = None\n")
    out = prn("train", "base", "--data", tmp_path / "d", "--out", tmp_path / "run", "--tensorboard",
              env={"PYTHONPATH": str(hide)})
    assert out.returncode == 2 and 'pip install "prn[tensorboard]"' in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_info_says_what_the_shipped_models_are():
    out = prn("info", "--json", "-")
    assert out.returncode == 0, out.stderr
    for one in json.loads(out.stdout):
        assert one["intended_use"].startswith("a demonstration, not a model for real images")
        assert one["training_data"]["categories"] == 12 and one["training_data"]["mean"][0] == 256.0
    assert "intended use" in out.stderr and "12 categories (7 thing)" in out.stderr


@pytest.mark.slow
def test_segment_and_refine_warn_once_about_photos_unlike_the_training_data(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, size=(300, 600, 3), dtype=np.uint8)).save(photos / f"{k + 1}.jpg")
    seg = prn("segment", "--images", photos, "--out", tmp_path / "base", "--max-size", "256")
    assert seg.returncode == 0, seg.stderr
    warned = [line for line in seg.stderr.splitlines() if "look unlike what" in line]
    assert len(warned) == 1 and "600 px on the long side (trained on 256 px)" in warned[0]
    assert "the shipped models are a demonstration" in warned[0]
    ref = prn("refine", "--base", tmp_path / "base", "--images", photos, "--out", tmp_path / "refined")
    assert ref.returncode == 0, ref.stderr
    assert sum("look unlike what" in line for line in ref.stderr.splitlines()) == 1
