"""Misuse that once ended silently wrong or as "internal error" (issue 10): every case is one line naming the
file or the option, with the documented exit code, and nothing half-written."""

from __future__ import annotations

import json

import pytest

from cli_helpers import assert_one_line_error, prn, synth


@pytest.fixture(scope="module")
def synth_train(tmp_path_factory):
    root = tmp_path_factory.mktemp("misuse")
    synth(root / "d", "--n", "2", "--size", "64x64", "--seed", "1", "--split", "train")
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


def test_train_resume_refuses_changed_options_naming_them(synth_train, tmp_path):
    # issue 10, problem 4: --resume took a changed --lr, --batch-size or --crop silently
    args = ["train", "base", "--data", synth_train / "d", "--out", tmp_path / "run", "--iters", "2",
            "--batch-size", "2", "--crop", "64", "--lr", "0.002", "--warmup-iters", "1", "--num-workers", "0",
            "--checkpoint-every", "1"]
    first = prn(*args)
    assert first.returncode == 0, first.stderr
    last = (tmp_path / "run" / "last.pt").read_bytes()

    def changed(flag, value):
        return [value if k > 0 and args[k - 1] == flag else a for k, a in enumerate(args)] + ["--resume"]

    for flag, value, needle in [("--lr", "0.02", "--lr 0.002 there, 0.02 now"),
                                ("--crop", "96", "--crop 64 there, 96 now")]:
        out = prn(*changed(flag, value))
        assert_one_line_error(out, 2, str(tmp_path / "run" / "last.pt"), needle, "--overwrite")
    assert (tmp_path / "run" / "last.pt").read_bytes() == last
    same = prn(*changed("--num-workers", "1"))           # how it runs may change: said on stderr
    assert same.returncode == 0, same.stderr
    assert "resuming with --num-workers 0 there, 1 now" in same.stderr


@pytest.mark.parametrize("command, core", [
    (["segment", "--images", "{d}/d/images/train", "--out", "{t}/o", "--weights", "{t}/w.pt"], "prn_cli.segment.segment"),
    (["refine", "--base", "{d}/d/annotations/panoptic_train.json", "--images", "{d}/d/images/train", "--out", "{t}/o",
      "--weights", "{t}/w.pt"], "prn_cli.refine.refine"),
    (["train", "base", "--data", "{d}/d", "--out", "{t}/run"], "prn_cli.train.train_base"),
    (["train", "prn", "--data", "{d}/d", "--out", "{t}/run"], "prn_cli.train.train_prn"),
])
def test_ctrl_c_is_one_line_that_says_how_to_continue_and_exit_130(synth_train, tmp_path, monkeypatch, capsys,
                                                                    command, core):
    from prn_cli.cli import app
    from prn_cli.cli._errors import run_app

    (tmp_path / "w.pt").write_bytes(b"")          # exists: the torch-free checks pass, the core is interrupted

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    module, _, name = core.rpartition(".")
    monkeypatch.setattr(f"{module}.{name}", interrupted)
    argv = [a.format(d=synth_train, t=tmp_path) for a in command]
    assert run_app(app, argv, debug=lambda: False) == 130
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == ["error: interrupted; rerun with --resume to continue"]


def test_info_describes_the_good_checkpoints_and_reports_the_bad_ones(tmp_path):
    from prn_cli.shipped import shipped_weights

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    out = prn("info", shipped_weights("prn"), bad, tmp_path / "missing.pt", "--json", "-")
    assert out.returncode == 3
    described = json.loads(out.stdout)
    assert [d["kind"] for d in described] == ["prn"] and described[0]["path"] == str(shipped_weights("prn"))
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2 and "bad.pt" in lines[0] and "missing.pt" in lines[1]
    assert "Traceback" not in out.stderr and "PRN" in out.stderr          # the good one's table (stderr with --json -)


@pytest.mark.parametrize("option, kind", [("--prn-weights", "base"), ("--base-weights", "prn"),
                                          ("--prn-weights", "junk")])
def test_demo_checks_its_weights_before_doing_any_work(tmp_path, option, kind):
    from prn_cli.shipped import shipped_weights

    if kind == "junk":
        weights = tmp_path / "junk.pt"
        weights.write_bytes(b"\x80\x04not a checkpoint")
    else:
        weights = shipped_weights(kind)             # the other network's checkpoint
    out = prn("demo", "--out", tmp_path / "demo", option, weights, "--n", "1")
    assert_one_line_error(out, 3, str(weights))
    assert not (tmp_path / "demo").exists() or not any((tmp_path / "demo").iterdir())
