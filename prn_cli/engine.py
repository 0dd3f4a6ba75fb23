"""The training loop shared by both networks: optimizer, LR schedule, AMP, DDP, checkpoints, exact resume.

Contract with a network: in train mode ``model(images, targets)`` (plus ``image_sizes=`` when its ``forward``
takes that argument and the collate function returns a third element) returns a dict whose scalar tensors
are logged; the ones whose key starts with ``loss`` are already weighted and summed into the total that is
minimised. Other entries (lists, non-scalar tensors) are ignored.

Reproducibility: every batch is a pure function of ``(seed, step, rank, world size)``. The sample order of
"epoch" e is ``torch.randperm`` seeded with ``(seed, e)``, sharded across ranks like DistributedSampler; the
transform of the sample in slot j of step s on rank r is seeded with :func:`sample_seed`. Nothing depends on
how many batches a DataLoader iterator has produced, so ``resume`` only needs the step number, and the model's
own randomness is covered by the saved RNG states.

Run directory: ``last.pt`` (full training state, every ``checkpoint_every`` steps and at the end),
``model_final.pt`` (weights, config and categories only) and ``metrics.jsonl``. Only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import os
import random
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import FINAL_NAME, LAST_NAME, METRICS_NAME, check_run_dir, load_checkpoint, save_checkpoint
from .errors import InvalidInputError, PrnError
from .io import naming_write_errors
from .resume import check_same_request, differences, flatten
from .runtime import (DistributedContext, barrier, check_device_name, init_distributed, resolve_device,
                      shutdown_distributed)


SCHEDULES = ("cosine", "step", "poly")
AMP_MODES = ("off", "bf16", "fp16")
CHANNELS_LAST = ("cuda", "always", "never")
OPTIMIZERS = ("adamw", "sgd")
# Keys of a metrics line that a model's loss dict may not overwrite.
_RESERVED = {"step", "lr", "total", "grad_norm", "s_per_iter", "eta_s", "elapsed_s", "max_mem_gb", "val"}


class TrainingDivergedError(PrnError):
    """The loss became NaN or infinite."""


@dataclass
class TrainSummary:
    """What a finished (or resumed-and-finished) training run returns, on every rank."""

    steps: int                      # optimizer steps done in all (the run's ``iters``)
    start_step: int                 # where this call started (0, or the resumed step)
    seconds: float                  # wall time of this call's steps
    losses: dict[str, float]        # averages of the last log window
    val: dict | None                # the last validation result (rank 0), else None
    last_checkpoint: Path           # full training state (resume from it)
    final_checkpoint: Path          # weights, config and categories only: what segment / refine load
    metrics: Path                   # metrics.jsonl
    world_size: int
    device: str
    amp: str
    main: bool = True               # rank 0 (the process that wrote the files)


# --------------------------------------------------------------------------------------------------------------
# configuration


@dataclass
class TrainConfig:
    """Options of one training run. ``batch_size`` is global: each of N processes takes batch_size / N."""

    out_dir: str
    iters: int = 1000                 # optimizer steps in total
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.05        # not applied to norm weights and biases
    optimizer: str = "adamw"          # "adamw" | "sgd"
    momentum: float = 0.9             # SGD only
    warmup_iters: int = 100
    warmup_factor: float = 0.001     # LR factor at step 0, rising linearly to 1 at warmup_iters
    schedule: str = "cosine"          # after warmup: "cosine" | "step" | "poly"
    milestones: tuple = (0.67, 0.89)  # "step": fractions of iters at which the LR is multiplied by gamma
    gamma: float = 0.1
    poly_power: float = 0.9
    min_lr_factor: float = 0.0        # "cosine"/"poly" end at lr * min_lr_factor
    grad_clip: float | None = 1.0     # max global gradient norm; None or 0 = off
    amp: str = "off"                  # "off" | "bf16" | "fp16" (CUDA only; CPU always runs fp32)
    #: NHWC memory format for the model and its inputs: "cuda" (on CUDA only), "always" or "never". On a CPU it
    #: speeds PRN's step up ~16% and slows MS-PanopticFPN's ~5% (benchmarks/bench_train_step.py), so prn train
    #: prn asks for "always" and prn train base for "cuda"
    channels_last: str = "cuda"
    checkpoint_every: int = 500       # 0 = only at the end
    log_every: int = 20
    val_every: int = 0                # 0 = only at the end (when an evaluate_fn is given)
    seed: int = 0
    num_workers: int = 2
    device: str = "auto"              # "auto" | "cpu" | "cuda"
    resume: bool = False
    overwrite: bool = False           # start again: rank 0 removes an earlier run's checkpoints and metrics
    find_unused_parameters: bool = True   # DDP: the networks skip branches on some batches (no positives)
    tensorboard: bool = False         # also write TensorBoard events to out_dir/tensorboard (tensorboard_events.py)

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(self.iters >= 1, f"iters must be at least 1, got {self.iters}")
        need(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}")
        need(self.lr > 0, f"lr must be positive, got {self.lr}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(self.warmup_iters >= 0, f"warmup_iters must be >= 0, got {self.warmup_iters}")
        need(0 < self.warmup_factor <= 1, f"warmup_factor must be in (0, 1], got {self.warmup_factor}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(all(0 <= m <= 1 for m in self.milestones), f"milestones are fractions of iters, got {self.milestones}")
        need(0 <= self.min_lr_factor <= 1, f"min_lr_factor must be in [0, 1], got {self.min_lr_factor}")
        need(self.grad_clip is None or self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}")
        need(self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if isinstance(self.channels_last, bool):   # the form of runs written before the three-way setting
            self.channels_last = "cuda" if self.channels_last else "never"
        need(self.channels_last in CHANNELS_LAST, f"channels_last must be one of {CHANNELS_LAST}, "
                                                  f"got {self.channels_last!r}")
        need(self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        need(self.log_every >= 1, f"log_every must be at least 1, got {self.log_every}")
        need(self.val_every >= 0, f"val_every must be >= 0, got {self.val_every}")
        need(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        check_device_name(self.device)
        need(0 <= self.seed < 2 ** 62, f"seed must be a non-negative integer, got {self.seed}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["out_dir"] = str(d["out_dir"])
        d["milestones"] = list(d["milestones"])
        return d


# --------------------------------------------------------------------------------------------------------------
# learning rate


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` for the optimizer step with 0-based index ``step``.

    Linear warmup from ``warmup_factor`` to 1 over ``warmup_iters`` steps, then the schedule over the
    remaining steps (progress t from 0 to 1); "step" drops by ``gamma`` at each milestone (fraction of iters).
    """
    if step < cfg.warmup_iters:
        return cfg.warmup_factor + (1.0 - cfg.warmup_factor) * step / cfg.warmup_iters
    if cfg.schedule == "step":
        return cfg.gamma ** sum(step >= round(m * cfg.iters) for m in cfg.milestones)
    t = min(1.0, (step - cfg.warmup_iters) / max(1, cfg.iters - cfg.warmup_iters))
    shape = 0.5 * (1.0 + math.cos(math.pi * t)) if cfg.schedule == "cosine" else (1.0 - t) ** cfg.poly_power
    return cfg.min_lr_factor + (1.0 - cfg.min_lr_factor) * shape


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """The LR used by the optimizer step with 0-based index ``step``."""
    return cfg.lr * lr_factor(step, cfg)


# --------------------------------------------------------------------------------------------------------------
# optimizer


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed group and a group without weight decay.

    Norm-layer weights and all biases (every parameter of 1 dimension or less) are not decayed: shrinking a
    norm's scale or a bias towards zero is not a useful prior and hurts detection heads.
    """
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if isinstance(module, norm_types) or p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


# --------------------------------------------------------------------------------------------------------------
# data order


def sample_seed(seed: int, step: int, rank: int, slot: int, index: int) -> int:
    """A 63-bit seed for the augmentation of one sample, a hash of where it sits in the run."""
    digest = hashlib.blake2b(struct.pack("<5q", seed, step, rank, slot, index), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class StepBatchSampler:
    """Batches of ``(dataset index, sample seed)`` for steps ``start_step .. end_step - 1`` of one rank.

    Each rank reads an endless stream: epoch e is a permutation of the dataset drawn from a generator seeded
    with ``(seed, e)``, padded to a multiple of ``world_size`` by repeating its start, and rank r takes every
    ``world_size``-th element from position r (as DistributedSampler does). Step s takes positions
    ``s * batch_size ..`` of that stream, so any step's batch can be computed without replaying earlier ones.
    """

    def __init__(self, dataset_len: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, end_step: int):
        if dataset_len < 1:
            raise ValueError("the training set is empty")
        self.n = dataset_len
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_step = start_step
        self.end_step = end_step
        self.per_rank = -(-dataset_len // world_size)
        self._epoch = -1
        self._shard: list[int] = []

    def shard(self, epoch: int) -> list[int]:
        """This rank's dataset indices for ``epoch``, in order."""
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
            total = self.per_rank * self.world_size
            while len(perm) < total:
                perm += perm[: total - len(perm)]
            self._shard = perm[self.rank: total: self.world_size]
            self._epoch = epoch
        return self._shard

    def batch(self, step: int) -> list[tuple[int, int]]:
        out = []
        for slot in range(self.batch_size):
            epoch, k = divmod(step * self.batch_size + slot, self.per_rank)
            index = self.shard(epoch)[k]
            out.append((index, sample_seed(self.seed, step, self.rank, slot, index)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.end_step):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)


class _SeededDataset(Dataset):
    """Serves ``(index, seed)`` keys: ``dataset.sample(index, seed)`` when the dataset has that method (its
    augmentation then follows the seed), else ``dataset[index]``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        sample = getattr(self.dataset, "sample", None)
        return sample(index, seed) if callable(sample) else self.dataset[index]


# --------------------------------------------------------------------------------------------------------------
# processes and devices


def _to_device(obj, device: torch.device, channels_last: bool = False):
    """Move every tensor inside nested tuples/lists/dicts to ``device``."""
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device, non_blocking=True)
        if channels_last and obj.ndim == 4 and obj.is_floating_point():
            obj = obj.contiguous(memory_format=torch.channels_last)
        return obj
    if isinstance(obj, dict):
        return {k: _to_device(v, device, channels_last) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device, channels_last) for v in obj)
    return obj


# --------------------------------------------------------------------------------------------------------------
# RNG states (saved per rank so that the model's own randomness resumes exactly)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(obj):
    # random.setstate needs tuples; keep them so even if a checkpoint stored lists
    return tuple(_as_tuples(v) for v in obj) if isinstance(obj, (list, tuple)) else obj


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)


# --------------------------------------------------------------------------------------------------------------
# losses and logging


def loss_terms(output: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(scalar tensors of the model's output, total = sum of those whose key starts with "loss")."""
    if not isinstance(output, dict):
        raise TypeError(f"in train mode the model must return a dict of losses, got {type(output).__name__}")
    scalars = {k: v for k, v in output.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
    losses = [v.reshape(()) for k, v in scalars.items() if k.startswith("loss")]
    if not losses:
        raise ValueError(f"the model returned no loss terms (keys starting with 'loss'): {sorted(output)}")
    return scalars, torch.stack([v.float() for v in losses]).sum()


class _Window:
    """Sums of the logged values since the last log line, kept on the device to avoid a sync per step."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}   # finite steps that reported each key
        self.bad: torch.Tensor | int = 0              # steps with a non-finite total
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, scalars: dict[str, torch.Tensor], total: torch.Tensor, grad_norm: torch.Tensor | None) -> None:
        # A non-finite step (an fp16 overflow that the GradScaler skips) is counted, not averaged in.
        finite = torch.isfinite(total.detach())
        values = dict(scalars, total=total)
        if grad_norm is not None:
            values["grad_norm"] = grad_norm
        for k, v in values.items():
            v = v.detach().float().reshape(())
            ok = finite & torch.isfinite(v)
            v = torch.where(ok, v, torch.zeros_like(v))
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts[k] + ok.float() if k in self.counts else ok.float()
        self.bad = self.bad + (~finite).int()
        self.steps += 1

    def averages(self, d: DistributedContext, device: torch.device) -> tuple[dict[str, float], int]:
        """(mean of each value over the window's finite steps on all ranks, non-finite steps on all ranks)."""
        keys = sorted(self.sums)
        if d.world_size > 1:
            # ranks may have logged different keys (a branch without positives): agree on the union
            gathered: list = [None] * d.world_size
            dist.all_gather_object(gathered, keys)
            keys = sorted(set().union(*gathered))
        zero = torch.zeros((), device=device)
        vec = torch.stack([self.sums.get(k, zero).to(device) for k in keys]
                          + [self.counts.get(k, zero).to(device) for k in keys]
                          + [torch.as_tensor(self.bad, device=device).float().reshape(())])
        if d.world_size > 1:
            dist.all_reduce(vec)
        vals = vec.tolist()
        n = len(keys)
        averages = {k: vals[i] / vals[n + i] for i, k in enumerate(keys) if vals[n + i] > 0}
        return averages, int(vals[2 * n])


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop metrics lines written after the checkpoint a run resumes from (they will be written again)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except ValueError:
            continue   # a line cut by the interruption
    path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")


def _comparable(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _with_defaults(stored, defaults):
    """``stored`` (a nested record of a resumed run) with the keys it lacks taken from ``defaults``, recursively."""
    if not isinstance(stored, dict) or not isinstance(defaults, dict):
        return stored
    out = dict(stored)
    for key, value in defaults.items():
        out[key] = _with_defaults(out[key], value) if key in out else value
    return out


#: TrainConfig fields that say where and how a run goes, not what it learns: a resume may change them (each
#: change is logged). Everything else in the schedule, and every option in the caller's ``request`` outside
#: its own ``may_change``, must be what the run was started with.
RESUME_MAY_CHANGE = ("device", "channels_last", "num_workers", "checkpoint_every", "log_every", "val_every",
                     "find_unused_parameters")
#: TrainConfig fields that are no part of the work (where it is written, how this call was asked to start).
_NOT_WORK = ("out_dir", "resume", "overwrite")


def training_request(cfg: TrainConfig, request: dict | None = None) -> dict:
    """What a run was asked (stored in last.pt, checked on resume): the schedule, and the caller's ``request``
    (its data and data options) under ``training``."""
    schedule = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_WORK}
    return json.loads(json.dumps({"schedule": schedule, "training": dict(request or {})}, default=str))


# --------------------------------------------------------------------------------------------------------------
# the loop


def train(model_factory: Callable[[], nn.Module], dataset, cfg: TrainConfig, *, kind: str, model_config: dict,
          categories: Sequence[dict], collate_fn: Callable, evaluate_fn: Callable[[nn.Module, int], dict] | None = None,
          progress: Callable[[int, int, dict], None] | None = None, request: dict | None = None,
          request_may_change: Sequence[str] = (), checkpoint_extra: dict | None = None,
          defaults: dict | None = None) -> TrainSummary:
    """Train ``model_factory()`` on ``dataset`` for ``cfg.iters`` optimizer steps; return a :class:`TrainSummary`.

    - ``dataset``: a map-style dataset; if it has ``sample(index, seed)`` its augmentation follows the seed
      the engine passes (see the module docstring), else ``dataset[index]`` is used.
    - ``collate_fn(list of items) -> (inputs, targets[, image_sizes])``; everything in it is moved to the
      device.
    - ``kind``/``model_config``/``categories`` go into the checkpoints (see checkpoint.py).
    - ``evaluate_fn(model, step) -> dict`` runs on rank 0 (model unwrapped, in eval mode, under no_grad)
      every ``val_every`` steps and at the end; its results go to metrics.jsonl and the summary.
    - ``progress(step, total, losses)`` is called on rank 0 after every step; ``losses`` are the averages of
      the latest log window (empty before the first).
    - ``request``: the caller's options that decide the result beside ``cfg`` (data, crop, ...; JSON values),
      stored with the schedule in every last.pt. A resume whose schedule or request differs is refused with
      one line naming the option (``prn_cli.resume``), except for :data:`RESUME_MAY_CHANGE` and the request's
      keys in ``request_may_change``, whose changes are logged.
    - ``checkpoint_extra``: more top-level entries of both checkpoints (e.g. ``training_data``).
    - ``defaults``: ``{"config": ..., "request": ...}``, what a key missing from a resumed run's stored model
      configuration or request means (nested like them): a run started before an option existed resumes when the
      option is at the value the run had without it.

    Launched by ``torchrun``, each process joins the process group, takes its shard of every global batch,
    and the model is wrapped in DistributedDataParallel.
    """
    out = Path(cfg.out_dir)
    if cfg.overwrite and not cfg.resume and int(os.environ.get("RANK", "0")) == 0:
        for name in (LAST_NAME, FINAL_NAME, METRICS_NAME):
            (out / name).unlink(missing_ok=True)
    check_run_dir(out, resume=cfg.resume, overwrite=cfg.overwrite)
    if len(dataset) == 0:
        raise InvalidInputError("the training set holds no images; check the dataset path")

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    d = init_distributed(device)
    try:
        run = _Run(model_factory, dataset, cfg, d, device, kind=kind, model_config=model_config,
                   categories=list(categories), collate_fn=collate_fn, evaluate_fn=evaluate_fn, progress=progress,
                   request=training_request(cfg, request),
                   may_change=[f"schedule.{k}" for k in RESUME_MAY_CHANGE]
                   + [f"training.{k}" for k in request_may_change], defaults=defaults)
        run.checkpoint_extra = dict(checkpoint_extra or {})
        return run.run()
    finally:
        shutdown_distributed(d)


class _Run:
    """One process's share of a training run: model, optimizer, data, and what it writes (rank 0)."""

    def __init__(self, model_factory, dataset, cfg: TrainConfig, d: DistributedContext, device: torch.device, *,
                 kind: str, model_config: dict, categories: list[dict], collate_fn, evaluate_fn, progress,
                 request: dict | None = None, may_change: Sequence[str] = (), defaults: dict | None = None):
        if cfg.batch_size % d.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of processes "
                             f"({d.world_size})")
        self.cfg, self.d, self.device = cfg, d, device
        self.kind, self.model_config, self.categories = kind, model_config, categories
        self.evaluate_fn, self.progress = evaluate_fn, progress
        self.request, self.may_change = request if request is not None else training_request(cfg), tuple(may_change)
        self.events = None
        self.checkpoint_extra: dict = {}
        self.defaults: dict = dict(defaults or {})
        out = Path(cfg.out_dir)
        self.last_path, self.final_path, self.metrics_path = out / LAST_NAME, out / FINAL_NAME, out / METRICS_NAME
        cuda = device.type == "cuda"
        self.amp = cfg.amp if cuda else "off"
        self.channels_last = cfg.channels_last == "always" or (cfg.channels_last == "cuda" and cuda)
        if cuda:
            torch.backends.cudnn.benchmark = True   # fixed crop sizes: the fastest kernels are found once

        # Same initial weights on every rank (DDP also broadcasts rank 0's), then one random stream per rank.
        _seed_everything(cfg.seed)
        self.raw_model = model_factory().to(device)
        if self.channels_last:
            self.raw_model = self.raw_model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.raw_model, cfg)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None
        _seed_everything(cfg.seed + 1 + d.rank)
        self.start_step = self.restore() if cfg.resume else 0

        self.model = self.raw_model
        if d.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.raw_model, device_ids=[device.index] if cuda else None,
                find_unused_parameters=cfg.find_unused_parameters)
        self.takes_sizes = "image_sizes" in inspect.signature(self.raw_model.forward).parameters
        sampler = StepBatchSampler(len(dataset), cfg.batch_size // d.world_size, seed=cfg.seed, rank=d.rank,
                                   world_size=d.world_size, start_step=self.start_step, end_step=cfg.iters)
        # The loader gets its own generator: by default it draws its workers' base seed from the global RNG when
        # iteration starts, which would shift the model's random stream between a straight and a resumed run.
        self.loader = DataLoader(_SeededDataset(dataset), batch_sampler=sampler, collate_fn=collate_fn,
                                 num_workers=cfg.num_workers, pin_memory=cuda,
                                 generator=torch.Generator().manual_seed(cfg.seed))

    # ---- state

    def restore(self) -> int:
        """Load last.pt into the model, optimizer, scaler and RNGs; return the step to continue from."""
        path = self.last_path
        ckpt = load_checkpoint(path, kind=self.kind, map_location="cpu")
        stored_config = _with_defaults(ckpt["config"], self.defaults.get("config"))
        if _comparable(stored_config) != _comparable(self.model_config):
            stored, now = json.loads(_comparable(stored_config)), json.loads(_comparable(self.model_config))
            keys = differences(stored, now) if isinstance(stored, dict) and isinstance(now, dict) else []
            what = (f" ({keys[0]} {flatten(stored).get(keys[0])!r} there, {flatten(now).get(keys[0])!r} now)"
                    if keys else "")
            raise InvalidInputError(f"{path}: was trained with a different model configuration{what}; resume with "
                                    "the same model options or choose another --out")
        if _comparable(ckpt["categories"]) != _comparable(self.categories):
            raise InvalidInputError(f"{path}: was trained on different categories; resume with the same dataset "
                                    "or choose another --out")
        if "optimizer" not in ckpt or "step" not in ckpt:
            raise InvalidInputError(f"{path}: holds no training state (optimizer, step); it cannot be resumed")
        stored = ckpt.get("request")
        if not isinstance(stored, dict):     # written before requests were stored: its schedule at least
            schedule = {k: v for k, v in (ckpt.get("train_config") or {}).items() if k not in _NOT_WORK}
            stored = {"schedule": schedule, "training": self.request.get("training", {})}
        stored = _with_defaults(stored, self.defaults.get("request"))
        changes = check_same_request(stored, self.request, where=path, may_change=self.may_change,
                                     fix="rerun with the options the run was started with, or pass --overwrite "
                                     "to start it again")
        if self.d.main and changes:
            from .console import info

            info("resuming with " + "; ".join(changes))
        self.raw_model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        rng = ckpt.get("rng") or []
        if len(rng) == self.d.world_size:   # with another process count the order cannot be exact anyway
            _set_rng_state(rng[self.d.rank])
        if self.d.main:
            _trim_metrics(self.metrics_path, int(ckpt["step"]))
        return int(ckpt["step"])

    def save(self, step: int, lr: float, *, final: bool = False) -> None:
        """Write last.pt (and model_final.pt when ``final``). A collective: every rank must call it."""
        # every rank's RNG state, so that each resumes its own stream
        states: list = [None] * self.d.world_size
        if self.d.world_size > 1:
            dist.all_gather_object(states, _rng_state())
        else:
            states = [_rng_state()]
        if not self.d.main:
            return
        cfg = self.cfg
        common = dict(kind=self.kind, config=self.model_config, categories=self.categories,
                      model_state=self.raw_model.state_dict())
        save_checkpoint(self.last_path, **common, extra={
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
            "scheduler": {"name": cfg.schedule, "last_step": step, "last_lr": lr}, "step": step,
            "train_config": cfg.to_dict(), "request": self.request, "rng": states,
            "data": {"seed": cfg.seed, "world_size": self.d.world_size, "batch_size": cfg.batch_size,
                     "next_step": step}, **self.checkpoint_extra})
        if final:
            save_checkpoint(self.final_path, **common, extra={"step": step, **self.checkpoint_extra})

    # ---- one step

    def autocast(self):
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    def step(self, step_index: int, batch, window: _Window) -> float:
        """One optimizer step on ``batch``; returns the LR it used."""
        lr = learning_rate(step_index, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        inputs, targets, *rest = _to_device(batch, self.device, self.channels_last)
        with self.autocast():
            if self.takes_sizes and rest:
                output = self.model(inputs, targets, image_sizes=rest[0])
            else:
                output = self.model(inputs, targets)
        scalars, total = loss_terms(output)
        self.optimizer.zero_grad(set_to_none=True)
        clip = self.cfg.grad_clip
        grad_norm = None
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            if clip:
                self.scaler.unscale_(self.optimizer)   # clip the true gradients, not the scaled ones
                grad_norm = nn.utils.clip_grad_norm_(self.params, clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if clip:
                grad_norm = nn.utils.clip_grad_norm_(self.params, clip)
            self.optimizer.step()
        window.add(scalars, total, grad_norm)
        return lr

    # ---- reporting

    def write_metrics(self, record: dict) -> None:
        with naming_write_errors(self.metrics_path):
            self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.events is not None:
            self.events.record(record)

    def log(self, step: int, lr: float, window: _Window, started: float) -> dict[str, float]:
        """Average the window over all ranks, check it is finite, write one metrics line; return the averages."""
        averages, bad = window.averages(self.d, self.device)
        # with fp16 a few overflowing steps are normal (the GradScaler skips them); otherwise any is divergence
        if bad and (self.scaler is None or bad >= window.steps * self.d.world_size):
            raise TrainingDivergedError(
                f"training diverged: the loss became NaN or infinite by step {step}; lower --lr, lengthen the "
                f"warmup or set --grad-clip, then resume from {self.last_path} or start again")
        s_per_iter = (time.perf_counter() - window.start) / max(1, window.steps)
        if self.d.main:
            record: dict[str, Any] = {"step": step, "lr": lr}
            record.update({k: v for k, v in averages.items() if k not in _RESERVED})
            record["total"] = averages["total"]
            if "grad_norm" in averages:
                record["grad_norm"] = averages["grad_norm"]
            record.update(s_per_iter=s_per_iter, eta_s=s_per_iter * (self.cfg.iters - step),
                          elapsed_s=time.perf_counter() - started)
            if bad:
                record["nonfinite_steps"] = bad
            if self.device.type == "cuda":
                record["max_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
            self.write_metrics(record)
        return {k: v for k, v in averages.items() if k != "grad_norm"}

    def validate(self, step: int) -> dict | None:
        """Run evaluate_fn on rank 0 (the others wait) and log its result."""
        result = None
        if self.d.main:
            self.raw_model.eval()
            with torch.no_grad():
                result = self.evaluate_fn(self.raw_model, step)
            self.raw_model.train()
            # images for TensorBoard only: (title, HxWx3 array) pairs have no place in metrics.jsonl
            panels = result.pop("panels", None) if isinstance(result, dict) else None
            if panels and self.events is not None:
                self.events.panels(step, panels)
            self.write_metrics({"step": step, "val": result})
        barrier(self.d, self.device)
        return result

    # ---- the loop

    def run(self) -> "TrainSummary":
        cfg, d = self.cfg, self.d
        every = lambda n, step: bool(n) and step % n == 0 and step != cfg.iters   # noqa: E731
        if d.main:
            Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
            if cfg.tensorboard:
                from .tensorboard_events import TrainingEvents

                self.events = TrainingEvents(cfg.out_dir, purge_step=self.start_step + 1 if self.start_step else None)
            if self.progress:
                self.progress(self.start_step, cfg.iters, {})
        self.model.train()
        started = time.perf_counter()
        window = _Window()
        losses: dict[str, float] = {}
        val = None
        step, lr = self.start_step, learning_rate(self.start_step, cfg)
        for step_index, batch in zip(range(self.start_step, cfg.iters), self.loader):
            lr = self.step(step_index, batch, window)
            step = step_index + 1
            if step % cfg.log_every == 0 or step == cfg.iters:
                losses = self.log(step, lr, window, started)
                window = _Window()
            if every(cfg.checkpoint_every, step):
                self.save(step, lr)
            if self.evaluate_fn is not None and every(cfg.val_every, step):
                val = self.validate(step)
            if d.main and self.progress:
                self.progress(step, cfg.iters, losses)
        # the end (reached at once when resuming a finished run)
        self.save(step, lr, final=True)
        if self.evaluate_fn is not None:
            val = self.validate(step)
        barrier(d, self.device)
        if self.events is not None:
            self.events.close()
        return TrainSummary(steps=step, start_step=self.start_step, seconds=time.perf_counter() - started,
                            losses=losses, val=val, last_checkpoint=self.last_path, final_checkpoint=self.final_path,
                            metrics=self.metrics_path, world_size=d.world_size, device=str(self.device),
                            amp=self.amp, main=d.main)
