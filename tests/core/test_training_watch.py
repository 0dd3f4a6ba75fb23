"""Training you can watch: progress lines in logs, TensorBoard events, the curves PNG, and the record of the
training data that segment / refine compare their inputs with."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prn_cli.console import LineLog, training_progress
from prn_cli.curves import plot_curves, read_metrics, training_summary
from prn_cli.tensorboard_events import scalar_tags
from prn_cli.training_data import FEATURES, InputCheck, far_statistics, image_statistics, summarize


def test_line_log_prints_when_the_losses_change_and_at_the_end():
    lines, now = [], [100.0]
    log = LineLog("train base", clock=lambda: now[0], write=lines.append)
    progress = training_progress(log)
    progress(0, 6, {})                                  # the engine's first call: start the clock
    for step in range(1, 7):
        now[0] += 2.0
        losses = {"loss_box": 1.0 / step} if step % 2 == 0 else ({"loss_box": 1.0 / (step - 1)} if step > 1 else {})
        progress(step, 6, losses)
    assert lines == ["train base: step 2/6 (33%) · box 0.500 · 2.00 s/step · ETA 8s",
                     "train base: step 4/6 (66%) · box 0.250 · 2.00 s/step · ETA 4s",
                     "train base: step 6/6 (100%) · box 0.167 · 2.00 s/step · took 12s"]


def test_line_log_rate_counts_only_this_runs_steps():
    lines, now = [], [0.0]
    log = LineLog("train prn", clock=lambda: now[0], write=lines.append)
    log(500, 1000, "")                                  # resumed at step 500
    now[0] = 300.0
    log(600, 1000, "total 1.000")
    assert lines == ["train prn: step 600/1000 (60%) · total 1.000 · 3.00 s/step · ETA 20m00s"]


def test_scalar_tags_of_metrics_lines():
    assert scalar_tags({"step": 20, "lr": 0.001, "loss_box": 0.5, "total": 1.5, "grad_norm": 2.0, "acc": 0.9,
                        "s_per_iter": 3.0, "elapsed_s": 60.0}) == {
        "train/lr": 0.001, "loss/box": 0.5, "loss/total": 1.5, "train/grad_norm": 2.0, "train/acc": 0.9,
        "time/s_per_iter": 3.0}
    assert scalar_tags({"step": 20, "val": {"pq": 43.5, "pq_th": None, "val_images": 50}}) == {"val/pq": 43.5}


def _write_metrics(path, steps=(2, 4, 6), val_steps=(3, 6)):
    lines = [{"step": s, "lr": 0.01 * s, "loss_box": 2.0 / s, "loss_mask": 1.0 / s, "total": 3.0 / s,
              "elapsed_s": float(s)} for s in steps]
    lines += [{"step": s, "val": {"pq": 10.0 * s, "pq_th": 5.0 * s, "pq_st": 20.0 * s}} for s in val_steps]
    lines.sort(key=lambda r: r["step"])
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 8, "lr"')   # a cut last line
    return path


def test_curves_png_and_training_summary(tmp_path):
    metrics = _write_metrics(tmp_path / "metrics.jsonl")
    train, val = read_metrics(metrics)
    assert [r["step"] for r in train] == [2, 4, 6] and [r["step"] for r in val] == [3, 6]
    image = plot_curves(metrics)
    assert image.shape == (600, 1040, 3) and image.dtype == np.uint8
    colours = {tuple(c) for c in image.reshape(-1, 3)[::7]}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours           # the first two series are drawn
    assert (image[300:, 520:] == 255).all()                                   # three charts: the 4th cell is empty
    summary = training_summary(metrics)
    assert summary["steps"] == 6 and summary["total_loss"] == 0.5 and summary["losses"] == {
        "loss_box": 2.0 / 6, "loss_mask": 1.0 / 6}
    assert summary["val_best"]["step"] == 6 and summary["val_best"]["val"]["pq"] == 60.0
    no_val = _write_metrics(tmp_path / "m2.jsonl", val_steps=())
    assert plot_curves(no_val).shape == (300, 1040, 3)


def test_engine_writes_tensorboard_events_readable_by_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_engine import _cfg, _run

    panel = np.zeros((20, 30, 3), dtype=np.uint8)
    panel[:, :15] = (255, 0, 0)

    def evaluate(model, step):
        return {"pq": step * 1.5, "pq_th": None, "panels": [("image 1: image | prediction | ground truth", panel)]}

    summary = _run(_cfg(tmp_path / "run", iters=6, val_every=3, log_every=2, tensorboard=True),
                   evaluate_fn=evaluate)
    assert summary.val == {"pq": 9.0, "pq_th": None}                         # panels stay out of the results
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "panels" not in metrics
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/sem", "loss/reg", "loss/total", "train/lr", "train/acc", "val/pq"} <= set(tags["scalars"])
    assert [(e.step, e.value) for e in events.Scalars("val/pq")] == [(3, 4.5), (6, 9.0)]
    lines = [json.loads(l) for l in metrics.splitlines() if '"val"' not in l]
    assert [e.step for e in events.Scalars("loss/total")] == [r["step"] for r in lines] == [2, 4, 6]
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([r["lr"] for r in lines])
    images = events.Images("val_panels/0")
    assert [(e.step, e.width, e.height) for e in images] == [(3, 30, 20), (6, 30, 20)]


def test_checkpoints_record_their_training_data(tmp_path):
    from prn_cli.checkpoint import load_checkpoint
    from test_engine import _cfg, _run

    record = summarize([np.zeros((16, 16, 3), dtype=np.uint8)], source="toy", total_images=12)
    _run(_cfg(tmp_path / "run", iters=2), checkpoint_extra={"training_data": record})
    for name in ("model_final.pt", "last.pt"):
        assert load_checkpoint(tmp_path / "run" / name)["training_data"] == record


# --------------------------------------------------------------------------------------------------------------
# inputs unlike the training data


def _textured(rng, h=256, w=256):
    """Images like prn synth's: mid-grey, coloured, noisy."""
    base = rng.integers(60, 200, size=3)
    return np.clip(base + rng.normal(0, 30, size=(h, w, 3)), 0, 255).astype(np.uint8)


def test_input_check_warns_once_for_images_unlike_the_training_data():
    rng = np.random.default_rng(0)
    training = summarize([_textured(rng) for _ in range(16)], source="synthetic")
    assert training["features"] == list(FEATURES) and training["mean"][0] == 256.0
    assert far_statistics(training, np.stack([image_statistics(_textured(rng)) for _ in range(4)])) == []

    photo = np.zeros((480, 640, 3), dtype=np.uint8)
    photo[..., 0] = np.linspace(0, 255, 640)[None, :]          # smooth and large: nothing like the training set
    far = far_statistics(training, image_statistics(photo)[None])
    assert far[0] == "images of about 640 px on the long side (trained on 256 px)"
    flat = np.full((256, 256, 3), 128, dtype=np.uint8)          # the right size, but no colour or texture at all
    assert [f.split()[0] for f in far_statistics(training, image_statistics(flat)[None])] == ["contrast", "edges"]

    warnings = []
    check = InputCheck(training, "model.pt", warn=warnings.append)
    for _ in range(20):
        check.observe(photo)
    check.finish()
    assert len(warnings) == 1 and warnings[0].startswith("these images look unlike what model.pt was trained on "
                                                          "(synthetic): images of about 640 px")
    quiet = InputCheck(training, "model.pt", warn=warnings.append)
    quiet.observe(_textured(rng))
    quiet.finish()                                              # fewer images than CHECK_IMAGES: decided at the end
    assert len(warnings) == 1
    InputCheck(None, "old.pt", warn=warnings.append).observe(photo)   # nothing recorded: nothing to say
    assert len(warnings) == 1
