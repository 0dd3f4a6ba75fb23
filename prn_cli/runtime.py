"""Where prn runs: the device, CPU threads and the torchrun process group, with one behaviour in every command.

``--device`` takes ``auto`` (CUDA when a GPU is visible, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
Asking for CUDA on a machine without it is the same usage error everywhere (exit 2, one line). Under
``torchrun`` each process uses the GPU of its ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import UsageError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

NO_CUDA = "--device {choice}: no CUDA GPU is visible on this machine; use --device cpu (or auto)"


def check_device_name(choice: str) -> str:
    """``choice`` if it names a device prn understands (auto, cpu, cuda, cuda:N), else a usage error."""
    if not _DEVICE_PATTERN.match(str(choice)):
        raise UsageError(f"--device {choice}: not a device; use auto, cpu, cuda or cuda:N")
    return str(choice)


def check_device(choice: str) -> str:
    """:func:`check_device_name`, and, without importing torch, CUDA asked for on a machine with no NVIDIA
    driver at all fails at once (commands call this before loading anything); with a driver, torch decides in
    :func:`resolve_device`, with the same message."""
    check_device_name(choice)
    if str(choice).startswith("cuda") and not _nvidia_driver_present():
        raise UsageError(NO_CUDA.format(choice=choice))
    return str(choice)


def _nvidia_driver_present() -> bool:
    # the kernel driver's files; without them torch.cuda.is_available() is always False
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/nvidiactl"))


def resolve_device(choice: str = "auto", local_rank: int | None = None):
    """The ``torch.device`` for ``--device choice``; under torchrun ``cuda`` means the GPU of ``LOCAL_RANK``."""
    import torch

    check_device_name(choice)
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError(NO_CUDA.format(choice=choice))
    if choice == "cuda":
        return torch.device("cuda", local_rank)
    index = int(choice.split(":")[1])
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {choice}: this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                         "use cuda:0 .. cuda:N-1")
    return torch.device(choice)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch's intra-op work (``None`` keeps torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


@dataclass
class DistributedContext:
    """This process's place in a torchrun group (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_world_size() -> int:
    """The number of processes torchrun started (1 without torchrun); reads the environment only."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device) -> DistributedContext:
    """Join the process group that torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK, if any (NCCL on CUDA,
    gloo on the CPU). Call :func:`shutdown_distributed` with the result when done."""
    import torch
    import torch.distributed as dist

    world = launched_world_size()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        return DistributedContext()
    started = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        started = True
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local,
                              started_here=started)


def shutdown_distributed(context: DistributedContext | None) -> None:
    """Leave the process group if :func:`init_distributed` started it."""
    if context is None or not context.started_here:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext, device) -> None:
    """Wait for every process of the group (nothing to wait for in a single process)."""
    if context.world_size > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            dist.barrier(device_ids=[device.index])
        else:
            dist.barrier()


def broadcast_object(obj, context: DistributedContext):
    """Rank 0's ``obj`` on every rank."""
    if context.world_size <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
