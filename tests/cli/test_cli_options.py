"""Option values are checked when the command line is parsed, before anything is loaded or written: a bad value
is exit 2 and exactly one stderr line naming the option; ``--device cuda`` on a machine without CUDA is the same
one line in every command that runs a network."""

from __future__ import annotations

import pytest

from cli_helpers import assert_one_line_error, prn

from prn_cli.perturb import write_corrupted_set
from prn_cli.synth import SynthConfig, write_dataset


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 2-image synthetic set (its images, its GT) and a corrupted copy as a base to refine."""
    root = tmp_path_factory.mktemp("cli-options")
    summary = write_dataset(root / "data", SynthConfig(n=2, width=64, height=64, seed=1, split="val"))
    write_corrupted_set(summary["json"], root / "base", seed=2)
    return {"data": root / "data", "images": summary["images_dir"], "base": root / "base"}


BAD_VALUES = {
    "refine --nms-kernel 4": (lambda i, out: ["refine", "--base", i["base"], "--images", i["images"], "--out", out,
                                              "--nms-kernel", "4"], "--nms-kernel"),
    "refine --min-join-contact -1": (lambda i, out: ["refine", "--base", i["base"], "--images", i["images"], "--out",
                                                     out, "--min-join-contact", "-1"], "--min-join-contact"),
    "refine --boundary-radius -1": (lambda i, out: ["refine", "--base", i["base"], "--images", i["images"], "--out",
                                                    out, "--boundary-radius", "-1"], "--boundary-radius"),
    "refine --boundary-confidence 0.3": (lambda i, out: ["refine", "--base", i["base"], "--images", i["images"],
                                                         "--out", out, "--boundary-confidence", "0.3"],
                                         "--boundary-confidence"),
    "refine --boundary-min-gain 1.5": (lambda i, out: ["refine", "--base", i["base"], "--images", i["images"],
                                                       "--out", out, "--boundary-min-gain", "1.5"],
                                       "--boundary-min-gain"),
    "ablate --boundary-min-area -5": (lambda i, out: ["ablate", "--data", i["data"], "--base", i["base"], "--val",
                                                      i["data"], "--val-base", i["base"], "--out", out,
                                                      "--boundary-min-area", "-5"], "--boundary-min-area"),
    "refine --classifier-split-confidence 1": (lambda i, out: ["refine", "--base", i["base"], "--images", i["images"],
                                                               "--out", out, "--classifier-split-confidence", "1"],
                                                "--classifier-split-confidence"),
    "segment --instance-score-threshold 2": (lambda i, out: ["segment", "--images", i["images"], "--out", out,
                                                             "--instance-score-threshold", "2"],
                                             "--instance-score-threshold"),
    "train prn --strength-range 0.9,0.1": (lambda i, out: ["train", "prn", "--data", i["data"], "--out", out,
                                                           "--strength-range", "0.9,0.1"], "--strength-range"),
    # post-processing steps whose module the network to train does not have
    "train prn --void-thing-confidence 0.8": (lambda i, out: ["train", "prn", "--data", i["data"], "--out", out,
                                                              "--void-thing-confidence", "0.8"],
                                              "--void-thing-confidence"),
    "train prn --boundary-radius 2": (lambda i, out: ["train", "prn", "--data", i["data"], "--out", out,
                                                      "--boundary-radius", "2"], "--boundary-radius"),
    "train prn --classifier-remove-confidence 0.9": (lambda i, out: ["train", "prn", "--data", i["data"], "--out",
                                                                     out, "--classifier-remove-confidence", "0.9"],
                                                     "--classifier-remove-confidence"),
    "train prn --classifier-split-confidence 0.8": (lambda i, out: ["train", "prn", "--data", i["data"], "--out",
                                                                    out, "--classifier-split-confidence", "0.8"],
                                                    "--classifier-split-confidence"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_option_value_is_one_line_naming_the_option_and_exit_2(case, inputs, tmp_path):
    args, option = BAD_VALUES[case]
    out = prn(*args(inputs, tmp_path / "out"))
    assert_one_line_error(out, 2, option)
    assert out.stdout == ""
    assert not (tmp_path / "out").exists()


def _device_commands(i, tmp):
    return {
        "segment": ["segment", "--images", i["images"], "--out", tmp / "segment"],
        "refine": ["refine", "--base", i["base"], "--images", i["images"], "--out", tmp / "refine"],
        "train base": ["train", "base", "--data", i["data"], "--out", tmp / "train-base"],
        "train prn": ["train", "prn", "--data", i["data"], "--out", tmp / "train-prn"],
        "ablate": ["ablate", "--data", i["data"], "--val", i["data"], "--val-base", i["base"], "--out", tmp / "ablate"],
        "demo": ["demo", "--out", tmp / "demo"],
    }


@pytest.mark.skipif(_cuda_available(), reason="this machine has CUDA: --device cuda is valid here")
def test_device_cuda_without_cuda_is_the_same_one_line_and_exit_2_everywhere(inputs, tmp_path):
    lines = {}
    for name, args in _device_commands(inputs, tmp_path).items():
        out = prn(*args, "--device", "cuda")
        lines[name] = assert_one_line_error(out, 2, "--device cuda")
        assert out.stdout == "", name
    assert len(set(lines.values())) == 1, lines
    assert not list(tmp_path.iterdir())          # nothing written by any of them
