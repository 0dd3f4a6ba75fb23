"""One output set written by every process of a torchrun group: ``prn segment`` and ``prn refine`` on N ranks.

Under ``torchrun --nproc_per_node N -m prn_cli segment|refine ...`` (gloo on the CPU, NCCL on GPUs) every rank reads the same inputs, takes
every N-th image of the work left (rank r: images r, r+N, ...), and writes those images' PNGs itself. Rank 0
prepares the output folder first (``--overwrite``, ``--resume``), and at the end gathers every rank's records
and writes the one JSON, in input order, so the set is byte-identical to a single process's (same network,
same threads per process). Without torchrun this is one rank of one and nothing is exchanged.

Resume: each rank appends one line per finished image to its own progress file (``<stem>.jsonl`` for rank 0,
``<stem>.rank<r>.jsonl`` for the others) after the image's PNG is written. A resumed run reads all of them,
whatever the number of processes that wrote them, adopts those images and shares out the rest. The files are
removed once the JSON is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from .errors import PrnError
from .runtime import DistributedContext, barrier, init_distributed, resolve_device, shutdown_distributed

T = TypeVar("T")


class ShardedRun:
    """This process's share of a run whose output folder is ``out_dir`` (a context manager: joins and leaves
    the torchrun process group, if there is one)."""

    def __init__(self, device: str, out_dir: str | os.PathLike, progress_stem: str):
        self.device_choice = device
        self.out_dir = Path(out_dir)
        self.progress_stem = progress_stem
        self.context = DistributedContext()
        self.device = None

    def __enter__(self) -> "ShardedRun":
        from .runtime import launched_world_size

        # A caller that already runs in a process group (prn ablate segments and refines on rank 0 only) keeps
        # this run to itself: sharding is for a group that this run starts.
        if launched_world_size() > 1 and not _group_running():
            self.device = resolve_device(self.device_choice)
            self.context = init_distributed(self.device)
        return self

    def __exit__(self, *exc) -> None:
        shutdown_distributed(self.context)

    @property
    def main(self) -> bool:
        return self.context.main

    # -- work ------------------------------------------------------------------------------------------------

    def mine(self, items: Sequence[T]) -> list[T]:
        """This rank's items: every world_size-th, from its rank on (neighbouring images on different ranks)."""
        return list(items)[self.context.rank::self.context.world_size]

    def on_main(self, prepare: Callable[[], T]) -> T:
        """Run ``prepare`` on rank 0 only; every rank gets its result, or raises the error it raised."""
        result, error = None, None
        if self.main:
            try:
                result = prepare()
            except PrnError as exc:
                if not self.context.distributed:
                    raise
                error = exc
        if self.context.distributed:
            from .runtime import broadcast_object

            result, error = broadcast_object((result, error), self.context)
            if error is not None:
                raise error
        return result

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.context.distributed:
            return [obj]
        import torch.distributed as dist

        box: list[Any] = [None] * self.context.world_size
        dist.all_gather_object(box, obj)
        return box

    def wait(self) -> None:
        barrier(self.context, self.device)

    # -- progress files ----------------------------------------------------------------------------------------

    def progress_path(self) -> Path:
        rank = self.context.rank
        suffix = ".jsonl" if rank == 0 else f".rank{rank}.jsonl"
        return self.out_dir / f"{self.progress_stem}{suffix}"

    def progress_files(self) -> list[Path]:
        if not self.out_dir.is_dir():
            return []
        return sorted(p for p in self.out_dir.glob(f"{self.progress_stem}*.jsonl") if p.is_file())

    def read_progress(self) -> list[dict]:
        """Every finished image that any rank of an earlier run recorded."""
        done = []
        for path in self.progress_files():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    done.append(json.loads(line))
                except ValueError:
                    break   # a line cut by an interruption: that image is simply done again
        return done

    def remove_progress(self) -> None:
        for path in self.progress_files():
            path.unlink(missing_ok=True)


def _group_running() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def merge_into(writer, gathered: list[dict], order: dict[str, int]) -> None:
    """Rank 0: add the images the other ranks wrote (``gathered``: one ``{"images", "annotations"}`` per rank,
    rank 0's own first and skipped) to ``writer``, and order every image by ``order`` (PNG file name -> its
    position in the input), so that the JSON does not depend on who wrote what or on an interruption."""
    for part in gathered[1:]:
        writer.add_records(part["images"], part["annotations"])
    writer.reorder(lambda image, annotation: order.get(str(annotation["file_name"]), len(order)))
