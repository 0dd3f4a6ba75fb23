"""refine_data: what a PRN training sample's inputs and loss weights hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prn_cli.refine_data import (RefineDataOptions, RefinementTrainingSet, blank_instance_maps,
                                 weigh_disagreement)
from prn_cli.synth import SynthConfig, write_dataset


def test_weigh_disagreement_scales_exactly_where_the_base_differs():
    sem = torch.tensor([[0, 0, 1], [1, 2, 255]])
    targets = {"semantic": sem, "semantic_weight": torch.tensor([[1.0, 3.0, 1.0], [1.0, 1.0, 0.0]]),
               "foreground": torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
               "foreground_weight": torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])}
    base_semantic = torch.tensor([[0, 1, 1], [255, 2, 0]])          # differs at (0,1), (1,0) (base void), (1,2)
    base_maps = torch.zeros(9, 2, 3)
    base_maps[0] = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]])  # fg differs at (0,1), (1,0), (1,2)
    weigh_disagreement(targets, base_semantic, base_maps, 4.0)
    assert targets["semantic_weight"].tolist() == [[1.0, 12.0, 1.0], [4.0, 1.0, 0.0]]   # GT void stays 0
    assert targets["foreground_weight"].tolist() == [[1.0, 4.0, 1.0], [4.0, 1.0, 0.0]]


def test_blank_instance_maps_keeps_only_the_foreground():
    maps = torch.arange(9 * 4, dtype=torch.float32).reshape(9, 2, 2) + 1
    out = blank_instance_maps(maps)
    assert torch.equal(out[0], maps[0]) and not out[1:].any()
    assert maps[1:].all()                       # the input is not modified


@pytest.mark.parametrize("bad", [0.5, float("inf"), float("nan")])
def test_disagreement_weight_must_be_a_finite_number_from_one(bad):
    with pytest.raises(ValueError, match="disagreement_weight"):
        RefineDataOptions(disagreement_weight=bad)


def test_samples_weigh_the_corrupted_pixels(tmp_path):
    """Same seed with and without the option: identical inputs, weights multiplied exactly where the
    (corrupted-GT) base disagrees with the target, and it disagrees somewhere."""
    write_dataset(tmp_path, SynthConfig(n=2, width=96, height=96, seed=5, split="train", class_colour=0.7))
    gt = tmp_path / "annotations" / "panoptic_train.json"
    plain = RefinementTrainingSet(gt, options=RefineDataOptions(crop=96, strength_range=(0.8, 0.8)))
    weighed = RefinementTrainingSet(gt, options=RefineDataOptions(crop=96, strength_range=(0.8, 0.8),
                                                                 disagreement_weight=5.0))
    for index in range(2):
        (xa, ta), (xb, tb) = plain.sample(index, seed=3), weighed.sample(index, seed=3)
        for k in xa:
            assert torch.equal(xa[k], xb[k])
        differs = (xa["base_semantic"] != ta["semantic"]) & (ta["semantic_weight"] > 0)
        assert differs.any()
        expected = torch.where(differs, ta["semantic_weight"] * 5.0, ta["semantic_weight"])
        assert torch.allclose(tb["semantic_weight"], expected)
        fg_differs = ((xa["base_maps"][0] > 0.5) != (ta["foreground"] > 0.5)) & (ta["foreground_weight"] > 0)
        assert torch.allclose(tb["foreground_weight"],
                              torch.where(fg_differs, ta["foreground_weight"] * 5.0, ta["foreground_weight"]))
        assert np.isclose(float(tb["center_weight"].sum()), float(ta["center_weight"].sum()))
