"""``prn refine --base-format hf`` runs end to end on transformers' own output (converted in memory) and writes a
valid set; the in-memory API feeds a converter's result straight into the Refiner; the example runs."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from convert_helpers import hf_result, id2label, prn

from prn_cli.panoptic import load_set, validate_set

pytest.importorskip("transformers")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """3 synthetic val images (the shipped PRN's categories) and transformers' post-processed 'prediction' of
    each (its GT as Mask2Former queries), saved as prn convert --from hf reads them."""
    import torch

    from prn_cli.synth import SynthConfig, write_dataset

    root = tmp_path_factory.mktemp("refine-hf")
    write_dataset(root / "data", SynthConfig(n=3, width=96, height=64, seed=3, split="val"))
    gt = load_set(root / "data" / "annotations" / "panoptic_val.json")
    (root / "hf").mkdir()
    results = {}
    for ann in gt.annotations:
        stem = Path(ann["file_name"]).stem
        results[stem] = hf_result(gt.read_ids(ann), ann["segments_info"], gt.categories)
        torch.save(results[stem], root / "hf" / f"{stem}.pt")
    (root / "config.json").write_text(json.dumps({"id2label": id2label(gt.categories)}))
    return root, gt, results


@pytest.mark.slow
def test_refine_base_format_hf_end_to_end(synthetic):
    root, gt, _ = synthetic
    out = root / "refined"
    run = prn("refine", "--base", root / "hf", "--base-format", "hf", "--id2label", root / "config.json",
              "--images-json", gt.json_path, "--images", root / "data" / "images" / "val", "--out", out,
              "--json", root / "changes.json")
    assert run.returncode == 0, run.stderr
    refined = load_set(out)
    assert validate_set(refined) == []
    assert sorted(a["image_id"] for a in refined.annotations) == sorted(a["image_id"] for a in gt.annotations)
    assert [c["id"] for c in refined.categories] == [c["id"] for c in gt.categories]
    changes = json.loads((root / "changes.json").read_text())
    assert changes["written"] == 3 and changes["failed"] == []
    # the base PRN saw is the converted prediction: as many base segments as transformers listed
    assert changes["changes"]["segments_base"] == sum(len(a["segments_info"]) for a in gt.annotations)


@pytest.mark.slow
def test_refine_base_format_reports_a_bad_base_and_exits_3(synthetic, tmp_path):
    import shutil

    import torch

    root, gt, results = synthetic
    folder = tmp_path / "hf"
    shutil.copytree(root / "hf", folder)
    stem = sorted(results)[0]
    broken = dict(results[stem], segments_info=results[stem]["segments_info"][1:])
    torch.save(broken, folder / f"{stem}.pt")
    run = prn("refine", "--base", folder, "--base-format", "hf", "--id2label", root / "config.json",
              "--images", root / "data" / "images" / "val", "--out", tmp_path / "refined")
    assert run.returncode == 3
    assert f"{stem}.pt" in run.stderr and "is in the map but not in segments_info" in run.stderr
    assert len(load_set(tmp_path / "refined").annotations) == 2      # the other images were refined


def test_refine_conversion_flags_need_a_base_format(synthetic, tmp_path):
    root, gt, _ = synthetic
    run = prn("refine", "--base", root / "hf", "--categories", gt.json_path, "--images", root / "data" / "images" /
              "val", "--out", tmp_path / "o")
    assert run.returncode == 2 and "--categories applies to --base-format other than coco" in run.stderr


def test_refiner_takes_a_converters_result(synthetic):
    from prn_cli.convert import ConvertOptions, from_hf
    from prn_cli.io import read_photo
    from prn_cli.predictors import Refiner

    root, gt, results = synthetic
    refiner = Refiner(device="cpu")
    stem = sorted(results)[0]
    rgb = read_photo(root / "data" / "images" / "val" / f"{stem}.jpg")
    base = from_hf(results[stem], refiner.categories, ConvertOptions(id2label=id2label(gt.categories)))
    one = refiner(rgb, base)
    two = refiner(rgb, *base)
    assert np.array_equal(one.ids, two.ids) and one.segments == two.segments
    assert one.ids.shape == rgb.shape[:2] and one.segments


@pytest.mark.slow
def test_mask2former_example(tmp_path):
    module = runpy.run_path(str(EXAMPLES / "refine_mask2former_in_memory.py"))
    summary = module["main"](["--out", str(tmp_path / "example"), "--n", "2"])
    refined = load_set(tmp_path / "example" / "refined")
    assert validate_set(refined) == [] and len(refined.annotations) == 2
    assert summary["images"] == 2 and summary["base_segments"] > 0
