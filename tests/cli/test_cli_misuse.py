"""Misuse that once ended silently wrong or as "internal error" (issue 10): every case is one line naming the
file or the option, with the documented exit code, and nothing half-written."""

from __future__ import annotations

import json

import pytest

from cli_helpers import assert_one_line_error, prn


@pytest.fixture(scope="module")
def synth_train(tmp_path_factory):
    root = tmp_path_factory.mktemp("misuse")
    made = prn("synth", "--out", root / "d", "--n", "2", "--size", "64x64", "--seed", "1", "--split", "train")
    assert made.returncode == 0, made.stderr
    return root


@pytest.mark.parametrize("network", ["base", "prn"])
def test_training_on_a_set_without_annotations_names_the_file_and_the_fix(synth_train, tmp_path, network):
    gt = synth_train / "d" / "annotations" / "panoptic_train.json"
    empty = tmp_path / "annotations" / "panoptic_train.json"
    empty.parent.mkdir()
    data = json.loads(gt.read_text())
    data["annotations"] = []
    empty.write_text(json.dumps(data))
    (tmp_path / "annotations" / "panoptic_train").mkdir()
    (tmp_path / "images").symlink_to(synth_train / "d" / "images")
    out = prn("train", network, "--data", empty, "--out", tmp_path / "run", "--iters", "1", "--num-workers", "0")
    line = assert_one_line_error(out, 3, str(empty), "holds 2 image record(s) but no annotations", "pass a panoptic "
                                 "set whose 'annotations'")
    assert "--images" not in line


def test_training_set_whose_images_cannot_be_found_gets_a_fix_train_can_follow(synth_train, tmp_path):
    gt = synth_train / "d" / "annotations" / "panoptic_train.json"
    elsewhere = tmp_path / "gt.json"
    elsewhere.write_text(gt.read_text())
    (tmp_path / "gt").symlink_to(synth_train / "d" / "annotations" / "panoptic_train")
    out = prn("train", "base", "--data", elsewhere, "--out", tmp_path / "run", "--iters", "1")
    line = assert_one_line_error(out, 3, str(elsewhere), "cannot tell where the images", "images/<split>")
    assert "--images" not in line
