"""``prn segment``, ``prn refine`` and ``prn train prn`` on the command line with random tiny checkpoints:
unreadable inputs are skipped and reported with exit 3, ``--json -`` is the report, an existing output is
refused with exit 2, and the post-processing given to ``train prn`` ends in its checkpoint.

(Moved here from tests/core/test_segment.py and test_refine.py, which test the same commands through the API.)
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from cli_helpers import prn

from prn_cli.checkpoint import save_checkpoint
from prn_cli.panoptic import load_set, validate_set
from prn_cli.perturb import write_corrupted_set
from prn_cli.synth import SynthConfig, synth_categories, write_dataset


def _base_checkpoint(path):
    from prn_cli.models.ms_panoptic_fpn.config import MSPanopticFPNConfig
    from prn_cli.models.ms_panoptic_fpn.model import build_model

    torch.manual_seed(0)
    config = MSPanopticFPNConfig.tiny()
    config.inference.instance_score_threshold = 0.0   # untrained: keep detections so the thing path runs
    config.inference.stuff_area = 64
    categories = synth_categories()
    return save_checkpoint(path, kind="base", config=config.to_dict(), categories=categories,
                           model_state=build_model(config, categories))


def _prn_checkpoint(path):
    from prn_cli.models.prn.model import build_model
    from prn_cli.models.prn.postprocess import PostProcessConfig
    from prn_cli.models.prn.render import RenderConfig
    from prn_cli.train import plain_dataclass, prn_model_config

    torch.manual_seed(0)
    config = prn_model_config("tiny")
    categories = synth_categories()
    post = PostProcessConfig(foreground_source="foreground" if config.foreground_head else "semantic",
                             use_pred_bbox=config.box_head, center_threshold=0.0, top_k=20)
    stored = {"model": config.to_dict(), "render": plain_dataclass(RenderConfig()),
              "postprocess": plain_dataclass(post)}
    return save_checkpoint(path, kind="prn", config=stored, categories=categories,
                           model_state=build_model(config, categories))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Random base and PRN checkpoints, a 3-image val set and a corrupted copy of it as the base to refine."""
    root = tmp_path_factory.mktemp("cli-seg-ref")
    summary = write_dataset(root / "data", SynthConfig(n=3, width=96, height=64, seed=2, split="val"))
    base = root / "base"
    write_corrupted_set(summary["json"], base, seed=1)   # a base from "another model"
    return {"root": root, "summary": summary, "base": base, "base_weights": _base_checkpoint(root / "base.pt"),
            "prn_weights": _prn_checkpoint(root / "prn.pt")}


def test_segment_skips_an_unreadable_image_reports_it_and_exits_3(setup, tmp_path):
    summary = setup["summary"]
    images = tmp_path / "images"
    images.mkdir()
    for f in sorted(os.listdir(summary["images_dir"]))[:2]:
        shutil.copy(os.path.join(summary["images_dir"], f), images / f)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    out = prn("segment", "--images", images, "--weights", setup["base_weights"], "--out", tmp_path / "out")
    assert out.returncode == 3, out.stderr
    assert "broken.jpg" in out.stderr and "Traceback" not in out.stderr
    pred = load_set(tmp_path / "out")
    assert len(pred.annotations) == 2 and validate_set(pred) == []


def test_refine_json_and_exit_codes(setup, tmp_path):
    summary, base, weights = setup["summary"], setup["base"], setup["prn_weights"]
    r = prn("refine", "--base", base, "--images", summary["images_dir"], "--weights", weights, "--out",
            tmp_path / "o", "--json", "-", "--no-use-pred-bbox", "--foreground-source", "semantic")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["written"] == 3 and len(report["per_image"]) == 3
    # a second run refuses to overwrite (exit 2) and leaves the first set intact
    before = (tmp_path / "o" / "panoptic.json").read_bytes()
    r = prn("refine", "--base", base, "--images", summary["images_dir"], "--weights", weights, "--out", tmp_path / "o")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert (tmp_path / "o" / "panoptic.json").read_bytes() == before


def test_refine_skips_a_bad_base_png_reports_it_and_exits_3(setup, tmp_path):
    summary, weights = setup["summary"], setup["prn_weights"]
    broken = tmp_path / "base"
    shutil.copytree(setup["base"], broken)
    victim = sorted((broken / "panoptic").iterdir())[0]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    r = prn("refine", "--base", broken, "--images", summary["images_dir"], "--weights", weights, "--out",
            tmp_path / "o")
    assert r.returncode == 3
    assert "skipped" in r.stderr and victim.name in r.stderr and "Traceback" not in r.stderr
    out = load_set(tmp_path / "o")
    assert len(out.annotations) == 2 and validate_set(out) == []


def test_train_prn_stores_the_post_processing_it_is_given(setup, tmp_path):
    """`prn train prn --stuff-area/--center-threshold/--foreground-source` end in the checkpoint, so `prn refine`
    uses them."""
    r = prn("train", "prn", "--data", setup["summary"]["json"], "--out", tmp_path / "run", "--iters", "1",
            "--batch-size", "1", "--crop", "64", "--warmup-iters", "0", "--num-workers", "0", "--device", "cpu",
            "--stuff-area", "1234", "--center-threshold", "0.25", "--no-use-pred-bbox", "--foreground-source",
            "semantic", "--min-join-contact", "1.5", "--keep-base-thing-class")
    assert r.returncode == 0, r.stderr
    r = prn("info", tmp_path / "run" / "model_final.pt", "--json", "-")
    assert r.returncode == 0, r.stderr
    post = json.loads(r.stdout)[0]["postprocess"]
    assert (post["stuff_area"], post["center_threshold"], post["use_pred_bbox"], post["foreground_source"]) == \
        (1234, 0.25, False, "semantic")
    assert (post["min_join_contact"], post["keep_base_thing_class"]) == (1.5, True)
