"""``prn refine`` end to end with a (random) PRN checkpoint: a valid set with the checkpoint's categories, on a
base that prn did not produce; bad inputs are one-line errors; nothing half-written. (Through the command line,
with skipped inputs and exit codes: tests/cli/test_cli_segment_refine.py.)"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prn_cli.checkpoint import save_checkpoint
from prn_cli.errors import InvalidInputError, OutputExistsError
from prn_cli.models.prn.model import build_model
from prn_cli.panoptic import load_set, validate_set
from prn_cli.perturb import write_corrupted_set
from prn_cli.options import PostProcessOverrides as Post
from prn_cli.refine import RefineOptions, refine
from prn_cli.synth import SynthConfig, synth_categories, write_dataset
from prn_cli.train import plain_dataclass, prn_model_config


def _checkpoint(path, **switches):
    from prn_cli.models.prn.postprocess import PostProcessConfig
    from prn_cli.models.prn.render import RenderConfig

    torch.manual_seed(0)
    config = prn_model_config("tiny", **switches)
    categories = synth_categories()
    model = build_model(config, categories)
    post = PostProcessConfig(foreground_source="foreground" if config.foreground_head else "semantic",
                             use_pred_bbox=config.box_head, center_threshold=0.0, top_k=20)
    save_checkpoint(path, kind="prn", config={"model": config.to_dict(), "render": plain_dataclass(RenderConfig()),
                                              "postprocess": plain_dataclass(post)},
                    categories=categories, model_state=model)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("refine")
    weights = _checkpoint(root / "prn.pt")
    summary = write_dataset(root / "data", SynthConfig(n=3, width=96, height=64, seed=2, split="val"))
    base = root / "base"
    write_corrupted_set(summary["json"], base, seed=1)   # a base from "another model"
    return root, weights, summary, base


def test_refine_writes_a_valid_set_and_reports_changes(setup, tmp_path):
    root, weights, summary, base = setup
    result = refine(base, summary["images_dir"], weights, tmp_path / "out")
    assert result.written == 3 and not result.failed
    out = load_set(tmp_path / "out")
    assert out.categories == synth_categories()
    assert validate_set(out) == []
    gt = load_set(summary["json"])
    assert sorted(a["image_id"] for a in out.annotations) == sorted(a["image_id"] for a in gt.annotations)
    assert [a["file_name"] for a in out.annotations] == [a["file_name"] for a in load_set(base).annotations]
    # the report adds up per image, and counts real segments
    assert result.changes["pixels"] == 3 * 96 * 64
    assert result.changes["segments_base"] == sum(len(a["segments_info"]) for a in load_set(base).annotations)
    assert result.changes["segments_refined"] == sum(len(a["segments_info"]) for a in out.annotations)
    assert sum(p["added"] for p in result.per_image) == result.changes["added"]


def test_switches_change_the_output(setup, tmp_path):
    root, weights, summary, base = setup
    a = refine(base, summary["images_dir"], weights, tmp_path / "a",
               options=RefineOptions(overrides=Post(use_pred_bbox=False)))
    b = refine(base, summary["images_dir"], weights, tmp_path / "b",
               options=RefineOptions(overrides=Post(use_pred_bbox=False, foreground_source="semantic")))
    ids_a = [load_set(tmp_path / "a").read_ids(x) for x in load_set(tmp_path / "a").annotations]
    ids_b = [load_set(tmp_path / "b").read_ids(x) for x in load_set(tmp_path / "b").annotations]
    assert a.changes != b.changes or any((x != y).any() for x, y in zip(ids_a, ids_b))


def test_unpaired_base_and_category_mismatch_are_one_line_errors(setup, tmp_path):
    root, weights, summary, base = setup
    images = tmp_path / "images"
    images.mkdir()
    first = sorted(os.listdir(summary["images_dir"]))[0]
    shutil.copy(os.path.join(summary["images_dir"], first), images / first)
    with pytest.raises(InvalidInputError, match="no image"):
        refine(base, images, weights, tmp_path / "o")
    assert not (tmp_path / "o" / "panoptic.json").exists()

    other = tmp_path / "renamed"
    shutil.copytree(base, other)
    data = json.loads((other / "panoptic.json").read_text())
    data["categories"][0]["name"] = "lorry"
    (other / "panoptic.json").write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match="'lorry'.*--category-map"):
        refine(other, summary["images_dir"], weights, tmp_path / "o2")
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({str(c["id"]): c["id"] for c in synth_categories()}))
    result = refine(other, summary["images_dir"], weights, tmp_path / "o3",
                    options=RefineOptions(category_map=str(mapping)))
    assert result.written == 3


def test_options_the_checkpoint_cannot_serve_are_errors(tmp_path, setup):
    root, _, summary, base = setup
    weights = _checkpoint(tmp_path / "nofg.pt", foreground_head=False, box_head=False)
    with pytest.raises(InvalidInputError, match="no foreground branch"):
        refine(base, summary["images_dir"], weights, tmp_path / "o",
               options=RefineOptions(overrides=Post(foreground_source="foreground")))
    with pytest.raises(InvalidInputError, match="no box branch"):
        refine(base, summary["images_dir"], weights, tmp_path / "o", options=RefineOptions(overrides=Post(
            use_pred_bbox=True, foreground_source="semantic")))
    out = tmp_path / "existing"
    refine(base, summary["images_dir"], weights, out,
           options=RefineOptions(overrides=Post(foreground_source="semantic")))
    with pytest.raises(OutputExistsError):
        refine(base, summary["images_dir"], weights, out,
               options=RefineOptions(overrides=Post(foreground_source="semantic")))


def _boundary_checkpoint(path, bias: float):
    """A random PRN with a boundary refiner whose thing probability is sigmoid(bias) everywhere."""
    from prn_cli.models.prn.postprocess import PostProcessConfig
    from prn_cli.models.prn.render import RenderConfig

    torch.manual_seed(0)
    config = prn_model_config("tiny")
    config.boundary_channels = 4
    model = build_model(config, synth_categories())
    with torch.no_grad():
        model.boundary.prior.zero_()
        model.boundary.read_out.bias.fill_(bias)
    post = PostProcessConfig(use_pred_bbox=True, center_threshold=0.0, top_k=20, restore_base_segments="all")
    save_checkpoint(path, kind="prn", config={"model": config.to_dict(), "render": plain_dataclass(RenderConfig()),
                                              "postprocess": plain_dataclass(post)},
                    categories=synth_categories(), model_state=model)
    return path


@pytest.mark.parametrize("bias", [20.0, -20.0])
def test_the_boundary_radius_moves_thing_boundaries_only_and_only_that_far(setup, tmp_path, bias):
    """A refiner that calls every pixel a thing (bias +20) grows every thing by exactly the radius into stuff; one
    that calls none a thing (-20) shrinks them; segments, ids and categories stay; radius 0 is the plain output."""
    import numpy as np

    from prn_cli.models.prn.boundary import boundary_band

    root, _, summary, base = setup
    weights = _boundary_checkpoint(tmp_path / "boundary.pt", bias)
    outs = {}
    for radius in (0, 2):
        refine(base, summary["images_dir"], weights, tmp_path / f"r{radius}",
               options=RefineOptions(overrides=Post(boundary_radius=radius)))
        outs[radius] = load_set(tmp_path / f"r{radius}")
    assert validate_set(outs[2]) == []
    things = {c["id"] for c in synth_categories() if c["isthing"]}
    moved = 0
    for plain_ann, cut_ann in zip(outs[0].annotations, outs[2].annotations):
        plain, cut = outs[0].read_ids(plain_ann), outs[2].read_ids(cut_ann)
        thing_ids = [s["id"] for s in plain_ann["segments_info"] if s["category_id"] in things]
        was, now = np.isin(plain, thing_ids), np.isin(cut, thing_ids)
        band = boundary_band(torch.from_numpy(was)[None], 2)[0].numpy()
        changed = plain != cut
        assert not (changed & ~band).any()                    # nothing moves further than the radius
        if bias > 0:
            assert not (was & changed).any() and changed[band & ~was].all()   # the whole outer band joined
            assert now[changed].all()
        else:
            assert not (~was & changed).any() and not now[changed].any()
        moved += int(changed.sum())
        cats = {s["id"]: s["category_id"] for s in plain_ann["segments_info"]}
        assert {s["id"]: s["category_id"] for s in cut_ann["segments_info"]}.items() <= cats.items()
        assert {s["id"] for s in cut_ann["segments_info"] if s["category_id"] in things} == set(thing_ids)
    assert moved > 0


def test_the_boundary_refiner_runs_only_when_the_post_processing_uses_it_and_only_near_things(setup, tmp_path):
    from prn_cli.predictors import Refiner

    root, _, summary, base = setup
    weights = _boundary_checkpoint(tmp_path / "boundary.pt", 1.0)      # stores boundary_radius 0
    base_set = load_set(base)
    ann = base_set.annotations[0]
    rgb = np.asarray(Image.open(Path(summary["images_dir"]) / ann["file_name"].replace(".png", ".jpg")).convert("RGB"))
    item = (rgb, base_set.read_ids(ann), ann["segments_info"])
    calls = []
    for radius in (0, 2):
        refiner = Refiner(weights, device="cpu", overrides=Post(boundary_radius=radius))
        assert not refiner.model.run_boundary       # never inside the network: the post-processing asks for it
        forward = refiner.model.boundary.forward
        refiner.model.boundary.forward = lambda *a, **k: calls.append((radius, k.get("region"))) or forward(*a, **k)
        refiner.predict_batch([item])
    assert [r for r, _ in calls] == [2]
    region = calls[0][1]
    # the region is a band around the things' boundaries: most of the image is left out
    assert region.dtype == torch.bool and 0 < region.float().mean() < 0.6


@pytest.mark.parametrize("override, message", [({"boundary_radius": 2}, "no boundary refiner"),
                                               ({"classifier_confidence": 0.5}, "no thing classifier")])
def test_asking_for_a_part_the_prn_lacks_is_an_error(setup, tmp_path, override, message):
    root, weights, summary, base = setup
    with pytest.raises(InvalidInputError, match=message):
        refine(base, summary["images_dir"], weights, tmp_path / "o", options=RefineOptions(overrides=Post(**override)))
    assert not (tmp_path / "o" / "panoptic.json").exists()


def test_a_base_checkpoint_is_refused(setup, tmp_path):
    from prn_cli.models.ms_panoptic_fpn.config import MSPanopticFPNConfig
    from prn_cli.models.ms_panoptic_fpn.model import build_model as build_base

    root, _, summary, base = setup
    config = MSPanopticFPNConfig.tiny()
    weights = save_checkpoint(tmp_path / "base.pt", kind="base", config=config.to_dict(),
                              categories=synth_categories(), model_state=build_base(config, synth_categories()))
    with pytest.raises(InvalidInputError, match="base"):
        refine(base, summary["images_dir"], weights, tmp_path / "o")


def test_shipped_checkpoints_store_the_settings_chosen_on_training_images():
    """models/README.md: the base's instance-score threshold 0.4; PRN's foreground branch, stuff area 16384, and the
    do-no-harm fusion with the base (things and stuff restored, boundaries snapped below confidence 0.9, swallowed
    things of other classes reclaimed, joins of base things separated below a contact of 10, base thing classes
    kept); the boundary re-cut within 2 px, kept for things of at least 128 px whose expected gain is at least
    0.02; the thing classifier's relabelling above 0.7."""
    from prn_cli.checkpoint import load_checkpoint
    from prn_cli.predictors import Refiner
    from prn_cli.shipped import shipped_weights

    post = Refiner(device="cpu").postprocess_config
    assert (post.foreground_source, post.use_pred_bbox, post.stuff_area) == ("foreground", True, 16384)
    assert (post.restore_base_segments, post.base_snap_confidence) == ("all", 0.9)
    assert (post.reclaim_other_classes, post.min_join_contact, post.keep_base_thing_class) == (True, 10.0, True)
    # its boundary refiner re-cuts thing boundaries, gated per thing so that masks already sharp keep theirs
    refiner = Refiner(device="cpu")
    assert refiner.model.config.boundary_channels == 24
    assert (post.boundary_radius, post.boundary_confidence) == (2, 0.5)
    assert (post.boundary_min_area, post.boundary_min_gain, post.boundary_min_coverage) == (128, 0.02, 0.4)
    # its thing classifier relabels a thing where it gives another class a probability above 0.7, above 0.9 for a
    # thing of fewer than 400 pixels
    assert refiner.model.config.classifier_channels == (32, 64, 128) and post.classifier_confidence == 0.7
    assert (post.classifier_small_area, post.classifier_small_confidence) == (400, 0.9)
    # and, having a "no thing" class learnt from every base thing that matches no object, removes a thing it is
    # 0.8 sure is none (a false detection, a split's smaller half), which joins a thing of its class along which a
    # fifth of its boundary lies
    assert refiner.model.config.classifier_background and post.classifier_remove_confidence == 0.8
    assert refiner.model.config.classifier_background_examples == "unmatched" and post.classifier_join_share == 0.2
    # and cuts a thing in two where it reads both parts of a cut as things above 0.9 and surer than the whole
    assert post.classifier_split_confidence == 0.9
    # and it names the things PRN reads where it leaves void: regions of 50+ pixels it is 0.8 sure of
    assert (post.void_thing_confidence, post.void_thing_min_area) == (0.8, 50)
    assert refiner.model.config.trainable == "all"
    base = load_checkpoint(shipped_weights("base"), kind="base")
    assert base["config"]["inference"]["instance_score_threshold"] == 0.4


def test_two_image_records_with_one_id_are_refused_before_any_work(setup, tmp_path):
    # issue 10, problem 1: refine paired a base PNG with the wrong photo when two image records shared an id
    root, weights, summary, base = setup
    dup = tmp_path / "dup"
    shutil.copytree(base, dup)
    data = json.loads((dup / "panoptic.json").read_text())
    data["images"][1]["id"] = data["images"][0]["id"]
    data["annotations"][1]["image_id"] = data["images"][0]["id"]
    (dup / "panoptic.json").write_text(json.dumps(data))
    with pytest.raises(InvalidInputError) as err:
        refine(dup, summary["images_dir"], weights, tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(dup / "panoptic.json"))
    assert f"image id {data['images'][0]['id']!r} is used by two image records" in message
    assert data["images"][0]["file_name"] in message and data["images"][1]["file_name"] in message
    assert not (tmp_path / "out").exists()


def test_resume_finishes_the_same_work_and_refuses_other_work(setup, tmp_path, monkeypatch, capsys):
    # issue 10, problem 3: refine resumes only what it was asked (inputs and options), naming what differs
    import prn_cli.refine as ref
    from prn_cli.resume import ResumeMismatchError

    root, weights, summary, base = setup
    straight = refine(base, summary["images_dir"], weights, tmp_path / "straight")
    real = ref._refine_batch
    calls = {"n": 0}

    def dies_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ref, "_refine_batch", dies_on_second)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        refine(base, summary["images_dir"], weights, out)
    monkeypatch.setattr(ref, "_refine_batch", real)
    assert not (out / "panoptic.json").exists()                       # nothing half-written
    progress = (out / ".refine-progress.jsonl").read_bytes()
    with pytest.raises(OutputExistsError, match="interrupted prn refine run; pass --resume"):
        refine(base, summary["images_dir"], weights, out)
    for kwargs, needle in [(dict(options=RefineOptions(overrides=Post(center_threshold=0.5))),
                            "--center-threshold None there, 0.5 now"),
                           (dict(base=summary["json"]), "--base"),
                           (dict(weights=_checkpoint(tmp_path / "other.pt", box_head=False)), "--weights")]:
        args = {"base": base, "weights": weights, **kwargs}
        with pytest.raises(ResumeMismatchError) as err:
            refine(args.pop("base"), summary["images_dir"], args.pop("weights"), out, resume=True, **args)
        assert needle in str(err.value) and str(out / ".refine-progress.jsonl") in str(err.value)
        assert err.value.exit_code == 2 and (out / ".refine-progress.jsonl").read_bytes() == progress
    capsys.readouterr()
    resumed = refine(base, summary["images_dir"], weights, out, resume=True, options=RefineOptions(batch_size=2))
    assert "resuming with --batch-size 1 there, 2 now" in capsys.readouterr().err
    assert (resumed.adopted, resumed.written) == (1, 2) and not (out / ".refine-progress.jsonl").exists()
    # the same set and the same change summary as a run that was never interrupted
    assert resumed.changes == straight.changes
    a, b = load_set(tmp_path / "straight"), load_set(out)
    assert sorted(x["image_id"] for x in a.annotations) == sorted(x["image_id"] for x in b.annotations)
    by_id = {x["image_id"]: x for x in b.annotations}
    for x in a.annotations:
        assert (a.read_ids(x) == b.read_ids(by_id[x["image_id"]])).all()
    with pytest.raises(OutputExistsError, match="complete; nothing to resume"):
        refine(base, summary["images_dir"], weights, out, resume=True)


def test_the_refiner_region_leaves_out_things_below_the_minimum_area_and_changes_no_pixel(setup, tmp_path):
    """With a minimum area, the tiles are chosen around the larger things only; the re-cut is the same as with the
    refiner computed on the whole map."""
    from prn_cli.predictors import Refiner

    root, _, summary, base = setup
    weights = _boundary_checkpoint(tmp_path / "boundary.pt", 0.5)     # joins pixels, where the prior alone would not
    base_set = load_set(base)
    items = []
    for ann in base_set.annotations:
        rgb = np.asarray(Image.open(Path(summary["images_dir"]) / ann["file_name"].replace(".png", ".jpg")).convert("RGB"))
        items.append((rgb, base_set.read_ids(ann), ann["segments_info"]))
    post = Post(boundary_radius=2, boundary_min_area=150)
    tiled = Refiner(weights, device="cpu", overrides=post)
    regions = []
    forward = tiled.model.boundary.forward
    tiled.model.boundary.forward = lambda *a, **k: regions.append(k["region"]) or forward(*a, **k)
    whole = Refiner(weights, device="cpu", overrides=post)
    everywhere = whole.model.boundary.forward
    whole.model.boundary.forward = lambda image, base_maps, region=None: everywhere(image, base_maps)
    moved = 0
    for item in items:
        a, b = tiled.predict_batch([item])[0], whole.predict_batch([item])[0]
        assert np.array_equal(a.ids, b.ids) and a.segments == b.segments
        moved += int((a.ids != Refiner(weights, device="cpu").predict_batch([item])[0].ids).sum())
    assert moved > 0                                     # the re-cut did move pixels
    everything = Refiner(weights, device="cpu", overrides=Post(boundary_radius=2))
    full_regions = []
    forward_all = everything.model.boundary.forward
    everything.model.boundary.forward = lambda *a, **k: full_regions.append(k["region"]) or forward_all(*a, **k)
    for item in items:
        everything.predict_batch([item])
    # small things' bands are left out
    assert sum(int(r.sum()) for r in regions) < sum(int(r.sum()) for r in full_regions)
