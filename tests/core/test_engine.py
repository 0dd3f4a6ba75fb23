"""The training engine on a tiny stand-in network: schedule, learning, metrics, exact resume, 2-process DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prn_cli.checkpoint import load_checkpoint
from prn_cli.data import collate
from prn_cli.engine import (StepBatchSampler, TrainConfig, TrainingDivergedError, learning_rate, param_groups,
                            train)
from prn_cli.errors import InvalidInputError, OutputExistsError

CATS = [{"id": 1, "name": "dark", "isthing": 0}, {"id": 2, "name": "bright", "isthing": 0}]


class TinySegNet(nn.Module):
    """A few convs predicting a 2-class semantic map; dropout makes its training depend on the RNG state."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Dropout2d(0.1), nn.Conv2d(width, 2, 1))

    def forward(self, images, targets=None, image_sizes=None):
        logits = self.body(images)
        if not self.training:
            return logits
        sem = torch.full(logits.shape[:1] + logits.shape[2:], 255, dtype=torch.long, device=logits.device)
        for i, t in enumerate(targets):
            h, w = t["semantic"].shape
            sem[i, :h, :w] = t["semantic"]
        loss = F.cross_entropy(logits, sem, ignore_index=255)
        acc = (logits.argmax(1) == sem)[sem != 255].float().mean()
        return {"loss_sem": loss, "loss_reg": 1e-3 * logits.pow(2).mean(), "acc": acc,
                "positives": [len(t["semantic"]) for t in targets]}


class ToySet(torch.utils.data.Dataset):
    """Images whose semantic class is "red channel above zero"; ``sample`` adds seed-driven noise and flips."""

    def __init__(self, n: int = 12, size: int = 16):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return self.sample(index, index)

    def sample(self, index, seed):
        base = torch.Generator().manual_seed(index)
        image = torch.randn(3, self.size, self.size, generator=base)
        semantic = (image[0] > 0).long()
        aug = torch.Generator().manual_seed(seed)
        image = image + 0.1 * torch.randn(image.shape, generator=aug)
        if torch.rand((), generator=aug) < 0.5:
            image, semantic = image.flip(-1), semantic.flip(-1)
        return image, {"semantic": semantic, "index": index}


def toy_collate(batch):
    return collate(batch, size_divisibility=8)


def _cfg(out, **kw) -> TrainConfig:
    base = dict(out_dir=str(out), iters=8, batch_size=4, lr=0.05, weight_decay=0.01, warmup_iters=2,
                checkpoint_every=4, log_every=2, num_workers=0, device="cpu", seed=7)
    base.update(kw)
    return TrainConfig(**base)


def _run(cfg, dataset=None, **kw):
    return train(TinySegNet, dataset or ToySet(), cfg, kind="base", model_config={"width": 8}, categories=CATS,
                 collate_fn=toy_collate, **kw)


def _read_metrics(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# --------------------------------------------------------------------------------------------------------------
# schedule, optimizer groups, data order


def test_lr_warmup_then_schedules():
    cfg = TrainConfig(out_dir="x", iters=110, lr=0.1, warmup_iters=10, warmup_factor=0.01, schedule="cosine")
    assert learning_rate(0, cfg) == pytest.approx(0.001)
    assert learning_rate(5, cfg) == pytest.approx(0.1 * (0.01 + 0.99 * 0.5))
    assert learning_rate(10, cfg) == pytest.approx(0.1)
    assert learning_rate(60, cfg) == pytest.approx(0.05)          # half way through the cosine
    assert learning_rate(110, cfg) == pytest.approx(0.0, abs=1e-12)
    poly = TrainConfig(out_dir="x", iters=110, lr=0.1, warmup_iters=10, schedule="poly", poly_power=0.9,
                       min_lr_factor=0.1)
    assert learning_rate(60, poly) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 ** 0.9))
    step = TrainConfig(out_dir="x", iters=100, lr=0.1, warmup_iters=0, schedule="step", milestones=(0.5, 0.8),
                       gamma=0.1)
    assert [learning_rate(s, step) for s in (0, 49, 50, 79, 80, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(out_dir="x", schedule="linear")


def test_no_weight_decay_on_norms_and_biases():
    net = TinySegNet()
    decay, no_decay = param_groups(net, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(net.body[0].weight), id(net.body[4].weight)}
    assert len(no_decay["params"]) == 4   # two conv biases, BN weight and bias


def test_batch_sampler_is_a_pure_function_of_the_step():
    full = StepBatchSampler(10, 3, seed=1, end_step=12)
    later = StepBatchSampler(10, 3, seed=1, start_step=7, end_step=12)
    assert list(full)[7:] == list(later)
    # one epoch across 2 ranks covers the dataset (with padding to a multiple of 2)
    shards = [StepBatchSampler(9, 1, seed=3, rank=r, world_size=2, end_step=1).shard(0) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 5 and set(shards[0]) | set(shards[1]) == set(range(9))
    seeds = [s for batch in full for _, s in batch]
    assert len(set(seeds)) == len(seeds)
    assert StepBatchSampler(10, 3, seed=2, end_step=4).batch(0) != full.batch(0)


# --------------------------------------------------------------------------------------------------------------
# training


def test_tiny_model_learns_and_logs(tmp_path):
    calls = []
    cfg = _cfg(tmp_path / "run", iters=40, lr=0.05, log_every=5, checkpoint_every=20)
    summary = _run(cfg, progress=lambda s, t, losses: calls.append((s, t, dict(losses))))
    assert summary.steps == 40 and summary.start_step == 0 and summary.world_size == 1
    records = _read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(5, 41, 5))
    for r in records:
        assert {"step", "lr", "loss_sem", "loss_reg", "acc", "total", "grad_norm", "s_per_iter", "eta_s"} <= set(r)
        assert "positives" not in r
        assert r["total"] == pytest.approx(r["loss_sem"] + r["loss_reg"], rel=1e-5)
        assert r["lr"] == pytest.approx(learning_rate(r["step"] - 1, cfg))
    assert records[-1]["eta_s"] == 0
    assert records[-1]["loss_sem"] < 0.6 * records[0]["loss_sem"]
    assert records[-1]["acc"] > 0.9
    assert [c[0] for c in calls] == list(range(0, 41))
    assert calls[-1][1] == 40 and calls[-1][2]["total"] == pytest.approx(records[-1]["total"])
    assert summary.losses["loss_sem"] == pytest.approx(records[-1]["loss_sem"])

    final = load_checkpoint(summary.final_checkpoint, kind="base")
    assert final["config"] == {"width": 8} and final["categories"] == CATS and "optimizer" not in final
    last = load_checkpoint(tmp_path / "run" / "last.pt", kind="base")
    assert last["step"] == 40 and "optimizer" in last and last["scheduler"]["name"] == "cosine"
    assert all(torch.equal(final["state_dict"][k], last["state_dict"][k]) for k in final["state_dict"])


def test_exact_resume(tmp_path):
    straight = _run(_cfg(tmp_path / "straight"))

    class Stop(Exception):
        pass

    def stop_at_4(step, total, losses):
        if step == 4:
            raise Stop()

    with pytest.raises(Stop):
        _run(_cfg(tmp_path / "cut"), progress=stop_at_4)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["step"] == 4
    assert not (tmp_path / "cut" / "model_final.pt").exists()
    with pytest.raises(OutputExistsError, match="--resume"):
        _run(_cfg(tmp_path / "cut"))
    resumed = _run(_cfg(tmp_path / "cut", resume=True))
    assert resumed.start_step == 4 and resumed.steps == 8

    a = load_checkpoint(straight.final_checkpoint)["state_dict"]
    b = load_checkpoint(resumed.final_checkpoint)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    la, lb = (load_checkpoint(tmp_path / d / "last.pt") for d in ("straight", "cut"))
    assert all(torch.equal(x, y) for x, y in zip(la["rng"][0]["torch"], lb["rng"][0]["torch"]))
    ma = _read_metrics(tmp_path / "straight" / "metrics.jsonl")
    mb = _read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [m["step"] for m in mb] == [2, 4, 6, 8]
    for x, y in zip(ma, mb):
        assert x["lr"] == y["lr"] and x["total"] == pytest.approx(y["total"], abs=0, rel=0)


def test_resume_checks(tmp_path):
    with pytest.raises(InvalidInputError, match="no checkpoint to resume"):
        _run(_cfg(tmp_path / "none", resume=True))
    _run(_cfg(tmp_path / "run", iters=2))
    with pytest.raises(InvalidInputError, match="different model configuration"):
        train(TinySegNet, ToySet(), _cfg(tmp_path / "run", iters=2, resume=True), kind="base",
              model_config={"width": 9}, categories=CATS, collate_fn=toy_collate)
    with pytest.raises(InvalidInputError, match="refinement-network|base-model"):
        train(TinySegNet, ToySet(), _cfg(tmp_path / "run", iters=2, resume=True), kind="prn",
              model_config={"width": 8}, categories=CATS, collate_fn=toy_collate)
    # resuming a finished run just rewrites its final checkpoints
    assert _run(_cfg(tmp_path / "run", iters=2, resume=True)).steps == 2


def test_evaluate_fn_every_val_every_and_at_end(tmp_path):
    seen = []

    def evaluate(model, step):
        assert not model.training and not torch.is_grad_enabled()
        seen.append(step)
        return {"pq": step / 10}

    summary = _run(_cfg(tmp_path / "run", iters=6, val_every=2, log_every=3), evaluate_fn=evaluate)
    assert seen == [2, 4, 6] and summary.val == {"pq": 0.6}
    vals = [r for r in _read_metrics(tmp_path / "run" / "metrics.jsonl") if "val" in r]
    assert [(r["step"], r["val"]["pq"]) for r in vals] == [(2, 0.2), (4, 0.4), (6, 0.6)]


def test_divergence_is_reported(tmp_path):
    class NaNNet(TinySegNet):
        def forward(self, images, targets=None, image_sizes=None):
            out = super().forward(images, targets)
            out["loss_sem"] = out["loss_sem"] * float("nan")
            return out

    with pytest.raises(TrainingDivergedError, match="NaN"):
        train(NaNNet, ToySet(), _cfg(tmp_path / "run"), kind="base", model_config={}, categories=CATS,
              collate_fn=toy_collate)


def test_dataloader_workers_give_the_same_batches(tmp_path):
    a = _run(_cfg(tmp_path / "w0", iters=4, checkpoint_every=0))
    b = _run(_cfg(tmp_path / "w2", iters=4, checkpoint_every=0, num_workers=2))
    sa, sb = (load_checkpoint(s.final_checkpoint)["state_dict"] for s in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------------------------------------------
# DDP


DDP_SCRIPT = """
import os, sys, torch
import torch.distributed as dist
sys.path.insert(0, {tests!r})
from test_engine import TinySegNet, ToySet, toy_collate, _cfg, CATS
from prn_cli.engine import train

built = []   # the factory keeps the model each rank trains, so its final parameters can be compared


def factory():
    built.append(TinySegNet())
    return built[-1]


summary = train(factory, ToySet(), _cfg({out!r}, iters=6, checkpoint_every=3), kind="base",
                model_config={{"width": 8}}, categories=CATS, collate_fn=toy_collate)
assert summary.world_size == 2 and not dist.is_initialized(), summary
torch.save(built[0].state_dict(), os.path.join({params!r}, "rank%s.pt" % os.environ["RANK"]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_gloo(tmp_path):
    out, params = tmp_path / "run", tmp_path / "params"
    params.mkdir()
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out), params=str(params)))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    p0, p1 = (torch.load(params / f"rank{r}.pt", weights_only=True) for r in range(2))
    # parameters are identical; BatchNorm running statistics are each rank's own (DDP broadcasts rank 0's
    # buffers at the start of every forward, and checkpoints hold rank 0's)
    names = [n for n, _ in TinySegNet().named_parameters()]
    assert all(torch.equal(p0[k], p1[k]) for k in names)
    assert not all(torch.equal(p0[k], p1[k]) for k in p0)   # the ranks really saw different data
    # only rank 0 wrote the run directory, and its checkpoint holds the parameters both ranks ended with
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "metrics.jsonl", "model_final.pt"]
    final = load_checkpoint(out / "model_final.pt", kind="base")["state_dict"]
    assert all(torch.equal(final[k], p0[k]) for k in p0)
    last = load_checkpoint(out / "last.pt")
    assert last["step"] == 6 and last["data"]["world_size"] == 2 and len(last["rng"]) == 2
    assert [r["step"] for r in _read_metrics(out / "metrics.jsonl")] == [2, 4, 6]


def test_a_resume_with_other_options_is_refused_naming_the_option(tmp_path, capsys):
    from prn_cli.resume import ResumeMismatchError

    def stop_at_2(step, total, losses):
        if step == 2:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(_cfg(run, checkpoint_every=2), progress=stop_at_2, request={"crop": 64})
    last = (run / "last.pt").read_bytes()
    metrics = (run / "metrics.jsonl").read_bytes()
    assert load_checkpoint(run / "last.pt")["request"]["schedule"]["lr"] == 0.05
    for change, needle in [(dict(lr=0.5), "--lr 0.05 there, 0.5 now"), (dict(batch_size=2), "--batch-size 4 there"),
                           (dict(iters=9), "--iters 8 there, 9 now"), (dict(seed=1), "--seed 7 there, 1 now"),
                           (dict(weight_decay=0.1), "schedule.weight_decay 0.01 there")]:
        with pytest.raises(ResumeMismatchError) as err:
            _run(_cfg(run, checkpoint_every=2, resume=True, **change), request={"crop": 64})
        assert needle in str(err.value) and str(run / "last.pt") in str(err.value) and "--overwrite" in str(err.value)
        assert err.value.exit_code == 2
    with pytest.raises(ResumeMismatchError, match="--crop 64 there, 32 now"):
        _run(_cfg(run, checkpoint_every=2, resume=True), request={"crop": 32})
    # nothing was touched by the refused resumes
    assert (run / "last.pt").read_bytes() == last and (run / "metrics.jsonl").read_bytes() == metrics
    # where and how it runs may change, and the change is logged
    capsys.readouterr()
    done = _run(_cfg(run, checkpoint_every=4, resume=True), request={"crop": 64})
    assert done.start_step == 2 and done.steps == 8
    assert "resuming with --checkpoint-every 2 there, 4 now" in capsys.readouterr().err


@pytest.mark.parametrize("network", ["base", "prn"])
def test_every_training_option_is_in_the_resume_request(network, tmp_path, monkeypatch):
    # an option added to the training options is checked on resume without being listed anywhere
    import dataclasses

    import prn_cli.engine as engine
    from prn_cli.synth import SynthConfig, write_dataset
    from prn_cli.train import (RESUME_MAY_CHANGE, BaseTrainingOptions, PRNTrainingOptions, train_base, train_prn)

    seen = {}

    def capture(*args, request=None, request_may_change=(), **kwargs):
        seen.update(request=request, may_change=request_may_change)

    monkeypatch.setattr(engine, "train", capture)
    data = write_dataset(tmp_path / "d", SynthConfig(n=1, width=32, height=32, seed=0, split="train"))["json"]
    options = BaseTrainingOptions(crop=64) if network == "base" else PRNTrainingOptions(crop=64, base_mix=0.0)
    (train_base if network == "base" else train_prn)(data, _cfg(tmp_path / "run"), options)
    in_model_config = {"arch", "config_file", "switches", "postprocess"}
    assert set(seen["request"]) >= {f.name for f in dataclasses.fields(options)} - in_model_config
    assert seen["request"]["data"] == str(Path(data).resolve()) and seen["request"]["crop"] == 64
    assert set(seen["may_change"]) == set(RESUME_MAY_CHANGE)
    assert "crop" not in RESUME_MAY_CHANGE and "disagreement_weight" not in RESUME_MAY_CHANGE
