"""One output set written by every process of a torchrun group: ``prn segment`` and ``prn refine`` on N ranks.

Under ``torchrun --nproc_per_node N -m prn_cli segment|refine ...`` (gloo on the CPU, NCCL on GPUs) every rank reads the same inputs, takes
every N-th image of the work left (rank r: images r, r+N, ...), and writes those images' PNGs itself. Rank 0
prepares the output folder first (``--overwrite``, ``--resume``), and at the end gathers every rank's records
and writes the one JSON, in input order, so the set is byte-identical to a single process's (same network,
same threads per process). Without torchrun this is one rank of one and nothing is exchanged.

Resume (:mod:`prn_cli.resume`): each rank keeps its own progress file (``<stem>.jsonl`` for rank 0,
``<stem>.rank<r>.jsonl`` for the others). Its first line is the run's request, the same on every rank, with the
rank and the number of processes that wrote it; then one line per image whose PNG the rank has written. A resumed
run (rank 0, before the others start) checks every file's request against its own, adopts the images that any
rank finished, and starts this run's files afresh: rank 0's holds the request and the adopted images, the other
ranks' are removed. So a run can be resumed on another number of processes; files that disagree on how many
processes wrote them (left over from different runs) are refused with one line. The files are removed once the
JSON is written.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

from .errors import PrnError
from .resume import ProgressLog, ResumeMismatchError, check_same_request
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
                if not self.main:
                    error.reported_elsewhere = True   # rank 0 says it; the command exits with its code everywhere
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

    @property
    def shard(self) -> dict:
        """What this rank's progress file records about who wrote it."""
        return {"rank": self.context.rank, "world_size": self.context.world_size}

    def progress_path(self, rank: int | None = None) -> Path:
        rank = self.context.rank if rank is None else rank
        suffix = ".jsonl" if rank == 0 else f".rank{rank}.jsonl"
        return self.out_dir / f"{self.progress_stem}{suffix}"

    def progress_log(self) -> ProgressLog:
        """This rank's progress file."""
        return ProgressLog(self.progress_path())

    def progress_files(self) -> list[Path]:
        if not self.out_dir.is_dir():
            return []
        pattern = re.compile(re.escape(self.progress_stem) + r"(\.rank[0-9]+)?\.jsonl")
        return sorted(p for p in self.out_dir.iterdir() if pattern.fullmatch(p.name) and p.is_file())

    def read_progress(self, request: dict, *, may_change: Iterable[str], fix: str) -> tuple[list[dict], list[str]]:
        """Rank 0, resuming: every finished image that any rank of the interrupted run recorded, and the allowed
        changes to log (``--device ...``, another number of processes). Each file's request must be ``request``
        up to ``may_change`` (:func:`~prn_cli.resume.check_same_request`, one line naming the option otherwise);
        files written before requests were stored are taken as they are."""
        records: list[dict] = []
        changes: list[str] = []
        writers: dict[int, Path] = {}
        for path in self.progress_files():
            log = ProgressLog(path)
            stored, finished = log.read()
            if stored is not None:
                for change in check_same_request(stored, request, where=path, may_change=may_change, fix=fix):
                    if change not in changes:
                        changes.append(change)
            shard = log.header().get("shard")
            if isinstance(shard, dict):
                rank = _rank_of(path, self.progress_stem)
                if shard.get("rank") != rank:
                    raise ResumeMismatchError(f"{path}: holds the progress of rank {shard.get('rank')}, not of rank "
                                              f"{rank} as its name says; {fix}")
                writers.setdefault(int(shard.get("world_size", 0)), path)
            records.extend(finished)
        if len(writers) > 1:
            (one, first), (other, second) = sorted(writers.items())[:2]
            raise ResumeMismatchError(f"{second}: was written by a run of {other} processes but {first} by a run of "
                                      f"{one}, so they are not one interrupted run; {fix}")
        if writers:
            before = next(iter(writers))
            if before != self.context.world_size:
                changes.append(f"processes {before} there, {self.context.world_size} now")
        return records, changes

    def restart_progress(self, request: dict, adopted: Sequence[dict]) -> None:
        """Rank 0, before the other ranks start: this run's progress files. Rank 0's holds ``request`` and the
        ``adopted`` records of the interrupted run (written whole, then renamed), the other ranks' are removed
        and start afresh, whatever number of processes wrote them."""
        from .io import atomic_output

        mine = self.progress_path(0)
        with atomic_output(mine, fsync=False) as f:
            f.write(json.dumps(ProgressLog.header_record(request, self.shard)) + "\n")
            for record in adopted:
                f.write(json.dumps(record) + "\n")
        for path in self.progress_files():
            if path != mine:
                path.unlink(missing_ok=True)

    def remove_progress(self) -> None:
        for path in self.progress_files():
            path.unlink(missing_ok=True)

    def report(self, progress: Callable[[int, int], None] | None, already: int, total: int
               ) -> Callable[[int], None] | None:
        """Rank 0 shows the run's progress (``already`` done before, then its own share's count scaled by the
        number of ranks: an estimate); the other ranks show none."""
        if progress is None or not self.main:
            return None
        world = self.context.world_size
        progress(already, total)
        return lambda done: progress(min(total, already + done * world), total)


def _rank_of(path: Path, stem: str) -> int:
    rest = path.name[len(stem):]
    return int(rest[len(".rank"):-len(".jsonl")]) if rest.startswith(".rank") else 0


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
