"""``prn segment``: a valid COCO panoptic set from a checkpoint; resume; refusals. (Through the command line:
tests/cli/test_cli_segment_refine.py.)"""

from __future__ import annotations

import json

from pathlib import Path

import pytest
import torch

from prn_cli.checkpoint import save_checkpoint
from prn_cli.errors import InvalidInputError, OutputExistsError
from prn_cli.models.ms_panoptic_fpn.config import MSPanopticFPNConfig
from prn_cli.models.ms_panoptic_fpn.model import build_model
from prn_cli.panoptic import load_set, validate_set
from prn_cli.options import ProcessingSize
from prn_cli.segment import SegmentOptions, segment
from prn_cli.synth import SynthConfig, synth_categories, write_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    torch.manual_seed(0)
    config = MSPanopticFPNConfig.tiny()
    config.inference.instance_score_threshold = 0.0   # untrained: keep detections so the thing path runs
    config.inference.stuff_area = 64
    categories = synth_categories()
    model = build_model(config, categories)
    weights = root / "base.pt"
    save_checkpoint(weights, kind="base", config=config.to_dict(), categories=categories, model_state=model)
    summary = write_dataset(root / "data", SynthConfig(n=3, width=96, height=64, seed=2, split="val"))
    return root, weights, summary


def test_segment_writes_a_valid_set_with_the_checkpoints_categories(setup, tmp_path):
    root, weights, summary = setup
    result = segment([summary["images_dir"]], weights, tmp_path / "out")
    assert result.written == 3 and not result.failed
    pred = load_set(tmp_path / "out")
    assert pred.categories == synth_categories()
    assert validate_set(pred) == []
    assert sorted(a["image_id"] for a in pred.annotations) == [1, 2, 3]     # ids from the numeric file names
    assert {(im["width"], im["height"]) for im in pred.images} == {(96, 64)}
    assert not (tmp_path / "out" / ".segment-progress.jsonl").exists()


def test_resume_adopts_finished_images(setup, tmp_path, monkeypatch):
    root, weights, summary = setup
    import prn_cli.segment as seg

    calls = {"n": 0}
    real = seg.write_predictions

    def dies_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(seg, "write_predictions", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        segment([summary["images_dir"]], weights, tmp_path / "out")
    assert not (tmp_path / "out" / "panoptic.json").exists()        # nothing half-written
    with pytest.raises(OutputExistsError, match="--resume"):
        segment([summary["images_dir"]], weights, tmp_path / "out")
    monkeypatch.setattr(seg, "write_predictions", real)
    result = segment([summary["images_dir"]], weights, tmp_path / "out", resume=True)
    assert (result.adopted, result.written) == (1, 2)
    pred = load_set(tmp_path / "out")
    assert len(pred.annotations) == 3 and validate_set(pred) == []


def test_resume_refuses_other_inputs_or_options_naming_them(setup, tmp_path, monkeypatch, capsys):
    # issue 10, problem 3: a resume with another threshold mixed two settings in one set; with another images
    # folder it adopted the old images, segmented none of the new and reported "wrote -2 image(s)"
    from prn_cli.options import SegmentOverrides
    from prn_cli.resume import ResumeMismatchError
    from prn_cli.segment import SegmentOptions

    root, weights, summary = setup
    import prn_cli.segment as seg

    real = seg.write_predictions
    calls = {"n": 0}

    def dies_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(seg, "write_predictions", dies_on_second)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        segment([summary["images_dir"]], weights, out)
    monkeypatch.setattr(seg, "write_predictions", real)
    progress = (out / ".segment-progress.jsonl").read_bytes()
    other_images = tmp_path / "other"
    other_images.mkdir()
    (other_images / "000000000009.jpg").write_bytes((Path(summary["images_dir"]) / "000000000001.jpg").read_bytes())
    other_weights = tmp_path / "w.pt"
    other_weights.write_bytes(Path(weights).read_bytes() + b"")   # the same bytes elsewhere: another path
    for kwargs, needle in [
        (dict(options=SegmentOptions(overrides=SegmentOverrides(instance_score_threshold=0.9))),
         "--instance-score-threshold None there, 0.9 now"),
        (dict(options=SegmentOptions(processing_size=ProcessingSize(max_size=64))), "--max-size 1333 there, 64 now"),
        (dict(options=SegmentOptions(processing_size=ProcessingSize(min_size=64))), "--min-size 800 there, 64 now"),
        (dict(inputs=[other_images]), f"--images [{str(Path(summary['images_dir']).resolve())!r}] there, "
                                      f"[{str(other_images.resolve())!r}] now"),
        (dict(weights=other_weights), "--weights"),
    ]:
        args = {"inputs": [summary["images_dir"]], "weights": weights, **kwargs}
        with pytest.raises(ResumeMismatchError) as err:
            segment(args.pop("inputs"), args.pop("weights"), out, resume=True, **args)
        message = str(err.value)
        assert needle in message and message.startswith(str(out / ".segment-progress.jsonl"))
        assert "--overwrite" in message and "\n" not in message and err.value.exit_code == 2
        assert (out / ".segment-progress.jsonl").read_bytes() == progress and not (out / "panoptic.json").exists()
    # where it runs and the batch size may change: logged, and the set is finished
    capsys.readouterr()
    result = segment([summary["images_dir"]], weights, out, resume=True, options=SegmentOptions(batch_size=2))
    assert (result.adopted, result.written) == (1, 2)
    assert "resuming with --batch-size 1 there, 2 now" in capsys.readouterr().err
    assert validate_set(load_set(out)) == [] and len(load_set(out).annotations) == 3


def test_refuses_existing_output_and_wrong_checkpoint_kind(setup, tmp_path):
    root, weights, summary = setup
    segment([summary["images_dir"]], weights, tmp_path / "out")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        segment([summary["images_dir"]], weights, tmp_path / "out")
    prn_ckpt = tmp_path / "prn.pt"
    save_checkpoint(prn_ckpt, kind="prn", config={}, categories=synth_categories(), model_state={})
    with pytest.raises(InvalidInputError, match="prn"):
        segment([summary["images_dir"]], prn_ckpt, tmp_path / "other")
    assert not (tmp_path / "other").exists() or not (tmp_path / "other" / "panoptic.json").exists()


def test_images_json_gives_ground_truth_ids(setup, tmp_path):
    root, weights, summary = setup
    gt = json.loads(open(summary["json"]).read())
    for k, im in enumerate(gt["images"]):
        im["id"] = 1000 + k
    custom = tmp_path / "images.json"
    custom.write_text(json.dumps(gt))
    segment([summary["images_dir"]], weights, tmp_path / "out", options=SegmentOptions(images_json=str(custom)))
    assert sorted(a["image_id"] for a in load_set(tmp_path / "out").annotations) == [1000, 1001, 1002]


def test_two_images_with_one_stem_are_refused_before_anything_runs(tmp_path):
    from prn_cli.segment import assign_image_ids

    for name in ("a/x.jpg", "b/x.jpg", "c/y.jpg", "c/y.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(InvalidInputError, match="same file stem"):
        assign_image_ids([tmp_path / "a/x.jpg", tmp_path / "b/x.jpg"], None)
    with pytest.raises(InvalidInputError, match="y.png.*same file stem|same file stem.*y.jpg"):
        assign_image_ids([tmp_path / "c/y.jpg", tmp_path / "c/y.png"], None)
    assert [r["file_name"] for r in assign_image_ids([tmp_path / "a/x.jpg", tmp_path / "c/y.jpg"], None)] == \
        ["x.jpg", "y.jpg"]


def test_segment_refine_and_viz_read_a_sideways_photo_upright(setup, tmp_path):
    # issue 10, problem 12: a 96x64 photo stored with EXIF orientation 6 is a 64x96 (w x h) image to every command
    import numpy as np
    from PIL import Image

    from prn_cli.refine import refine
    from prn_cli.shipped import shipped_weights
    from prn_cli.visualize import visualize

    root, weights, summary = setup
    photos = tmp_path / "photos"
    photos.mkdir()
    stored = np.asarray(Image.open(sorted(Path(summary["images_dir"]).iterdir())[0]).convert("RGB"))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(photos / "000000000005.jpg", exif=exif, quality=95)
    segment([photos], weights, tmp_path / "base")
    base = load_set(tmp_path / "base")
    assert (base.images[0]["width"], base.images[0]["height"]) == (64, 96)
    assert base.read_ids(base.annotations[0]).shape == (96, 64)
    refine(tmp_path / "base", photos, shipped_weights("prn"), tmp_path / "refined")
    refined = load_set(tmp_path / "refined")
    assert (refined.images[0]["width"], refined.images[0]["height"]) == (64, 96)
    assert refined.read_ids(refined.annotations[0]).shape == (96, 64) and validate_set(refined) == []
    visualize([("base", base), ("refined", refined)], tmp_path / "viz", images_dir=photos)
    with Image.open(tmp_path / "viz" / "base" / "000000000005.png") as overlay:
        assert overlay.size == (64, 96)


def test_a_base_predicted_on_the_stored_grid_is_told_why_its_size_is_swapped(setup, tmp_path):
    import numpy as np
    from PIL import Image

    from prn_cli.refine import refine
    from prn_cli.shipped import shipped_weights

    root, weights, summary = setup
    stored = np.asarray(Image.open(sorted(Path(summary["images_dir"]).iterdir())[0]).convert("RGB"))
    plain, sideways = tmp_path / "plain", tmp_path / "sideways"
    plain.mkdir()
    sideways.mkdir()
    Image.fromarray(stored).save(plain / "000000000005.jpg", quality=95)      # a model that ignored EXIF saw this
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(sideways / "000000000005.jpg", exif=exif, quality=95)
    segment([plain], weights, tmp_path / "base")
    result = refine(tmp_path / "base", sideways, shipped_weights("prn"), tmp_path / "refined")
    assert result.written == 0 and len(result.failed) == 1
    message = result.failed[0][1]
    assert "base PNG is 96x64 but its image" in message and "is 64x96 (the photo's EXIF orientation" in message
    assert message.endswith("predict the base at the image's size") and "\n" not in message
