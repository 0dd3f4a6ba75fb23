"""train prn --init-weights: fine-tuning starts from a PRN checkpoint's network, and refuses one that differs."""

from __future__ import annotations

import json

import pytest
import torch

from prn_cli.engine import TrainConfig
from prn_cli.errors import InvalidInputError, UsageError
from prn_cli.options import PRNSwitches
from prn_cli.panoptic import load_set
from prn_cli.shipped import shipped_weights
from prn_cli.synth import SynthConfig, write_dataset
from prn_cli.train import PRNTrainingOptions, prn_init_state, prn_model_config, train_prn

SHIPPED_CONFIG = {"loss": {"semantic_top_k": 0.2}, "full_resolution_channels": 16,
                  "full_resolution_foreground": False, "boundary_channels": 24, "classifier_channels": [32, 64, 128],
                  "classifier_background": True}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("init")
    write_dataset(root, SynthConfig(n=2, width=64, height=64, seed=3, split="train", class_colour=0.7))
    (root / "loss.json").write_text(json.dumps(SHIPPED_CONFIG))
    return root


def test_init_state_is_the_checkpoints_and_refuses_another_network_or_categories(data):
    shipped = shipped_weights("prn")
    categories = load_set(data / "annotations" / "panoptic_train.json").categories
    config = prn_model_config("tiny", str(data / "loss.json"))
    state = prn_init_state(shipped, config, categories)
    expected = torch.load(shipped, weights_only=True)["state_dict"]
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)
    with pytest.raises(InvalidInputError, match=r"network differs .*box"):
        prn_init_state(shipped, prn_model_config("tiny", str(data / "loss.json"), box_head=False), categories)
    with pytest.raises(InvalidInputError, match="categories differ"):
        prn_init_state(shipped, config, categories[:-1])


def test_fine_tuning_starts_from_the_checkpoint(data, tmp_path):
    """One step at a tiny learning rate: the result is the shipped network up to that step, not a fresh one."""
    shipped = shipped_weights("prn")
    start = torch.load(shipped, weights_only=True)["state_dict"]
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), iters=1, batch_size=1, lr=1e-9, warmup_iters=0,
                      checkpoint_every=0, num_workers=0, seed=0)
    options = PRNTrainingOptions(config_file=str(data / "loss.json"), crop=64, init_weights=str(shipped))
    train_prn(data / "annotations" / "panoptic_train.json", cfg, options)
    tuned = torch.load(tmp_path / "run" / "model_final.pt", weights_only=True)["state_dict"]
    weights = [k for k in start if k.endswith(".weight") and start[k].dtype.is_floating_point]
    assert max(float((tuned[k] - start[k]).abs().max()) for k in weights) < 1e-4
    with pytest.raises(UsageError, match="--init-weights and --backbone-weights"):
        train_prn(data / "annotations" / "panoptic_train.json", cfg,
                  PRNTrainingOptions(init_weights=str(shipped), backbone_weights=str(shipped),
                                     switches=PRNSwitches()), overwrite=True)


@pytest.mark.parametrize("module, zero_at_start", [("full_resolution", "correction.weight"),
                                                   ("boundary", "read_out.weight"), ("classifier", None)])
def test_a_prn_without_a_refiner_fine_tunes_into_one(data, tmp_path, module, zero_at_start):
    """A checkpoint from before the full-resolution (or boundary) refiner existed starts the network that has one:
    its own weights unchanged, the refiner's read-out at zero, so the network starts as the checkpoint's. So does
    one from before the thing classifier (which relabels nothing until --classifier-confidence asks it to)."""
    shipped = shipped_weights("prn")
    categories = load_set(data / "annotations" / "panoptic_train.json").categories
    ckpt = torch.load(shipped, weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith(module + ".")}
    ckpt["config"]["model"][module + "_channels"] = [] if module == "classifier" else 0
    torch.save(ckpt, tmp_path / "without.pt")
    config = prn_model_config("tiny", str(data / "loss.json"))
    state = prn_init_state(tmp_path / "without.pt", config, categories)
    added = set(state) - set(ckpt["state_dict"])
    assert added and all(k.startswith(module + ".") for k in added)
    assert all(torch.equal(state[k], ckpt["state_dict"][k]) for k in ckpt["state_dict"])
    if zero_at_start:
        assert not state[f"{module}.{zero_at_start}"].any()
    if module == "boundary":
        assert float(state["boundary.prior"]) == 2.0                 # reproduces the base's thing mask


def test_a_run_started_before_an_option_existed_resumes(data, tmp_path):
    """A last.pt written before classifier_channels (and its "no thing" class), classifier_confidence (and
    classifier_remove_confidence) and --scale-range existed (its stored configuration and request lack them)
    resumes when they are at their defaults, and not when one is changed."""
    from dataclasses import replace

    cfg = TrainConfig(out_dir=str(tmp_path / "run"), iters=2, batch_size=1, lr=1e-4, warmup_iters=0,
                      checkpoint_every=1, num_workers=0, seed=0)
    options = PRNTrainingOptions(crop=64)
    train_prn(data / "annotations" / "panoptic_train.json", cfg, options)
    last = tmp_path / "run" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    for key in ("classifier_channels", "classifier_crop_size", "classifier_background"):
        del ckpt["config"]["model"][key]
    for key in ("classifier", "classifier_label_smoothing"):
        del ckpt["config"]["model"]["loss"][key]
    for key in ("classifier_confidence", "classifier_remove_confidence"):
        del ckpt["config"]["postprocess"][key]
    del ckpt["request"]["training"]["scale_range"]
    torch.save(ckpt, last)
    more = replace(cfg, resume=True)
    summary = train_prn(data / "annotations" / "panoptic_train.json", more, options)
    assert summary.steps == 2
    torch.save(ckpt, last)   # the old checkpoint again, now resumed with an option away from its old meaning
    with pytest.raises(UsageError, match="scale"):
        train_prn(data / "annotations" / "panoptic_train.json", more, replace(options, scale_range=(1.0, 1.0)))


def test_a_thing_classifier_without_a_no_thing_class_fine_tunes_into_one(data, tmp_path):
    """Its thing rows are kept and the "no thing" row starts at zero (a logit of 0, below any sure thing's)."""
    shipped = shipped_weights("prn")
    categories = load_set(data / "annotations" / "panoptic_train.json").categories
    ckpt = torch.load(shipped, weights_only=True)
    things = sum(1 for c in categories if c["isthing"])
    for name in ("classifier.read_out.weight", "classifier.read_out.bias"):
        ckpt["state_dict"][name] = ckpt["state_dict"][name][:things]
    ckpt["config"]["model"]["classifier_background"] = False
    torch.save(ckpt, tmp_path / "without.pt")
    (tmp_path / "with.json").write_text(json.dumps({**SHIPPED_CONFIG, "classifier_background": True}))
    state = prn_init_state(tmp_path / "without.pt", prn_model_config("tiny", str(tmp_path / "with.json")),
                           categories)
    weight, bias = state["classifier.read_out.weight"], state["classifier.read_out.bias"]
    assert weight.shape[0] == bias.shape[0] == things + 1
    assert torch.equal(weight[:things], ckpt["state_dict"]["classifier.read_out.weight"])
    assert torch.equal(bias[:things], ckpt["state_dict"]["classifier.read_out.bias"])
    assert not weight[things].any() and float(bias[things]) == 0.0
    assert all(torch.equal(state[k], v) for k, v in ckpt["state_dict"].items() if "read_out" not in k)
