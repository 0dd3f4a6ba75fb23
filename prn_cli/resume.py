"""Resumed work is the same work: what a resumable run was asked, and the check that a resume asks the same.

``prn segment``, ``prn refine``, ``prn train base|prn`` and ``prn ablate`` store a *request* with the work they
start: the inputs and options that decide the result, as a JSON object (paths made absolute). A resume builds its
own request and hands both to :func:`check_same_request`:

- an option outside ``may_change`` that differs stops the resume with one line naming the option, both values
  and the fix (:class:`ResumeMismatchError`, exit 2), before anything is written;
- options in ``may_change`` (where to run, how many workers, how often to checkpoint: nothing that changes the
  result) may differ; each change is returned as a line for the command to log.

This module imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import IO, Iterable

from .errors import UsageError

#: Record keys (the last part of a dotted name) whose command-line option is spelt differently from
#: ``--<key with dashes>``, or that have no option of their own.
_LABELS = {
    "config_file": "--config",
    "config_file_sha256": "--config (the file's content)",
    "postprocess": "the post-processing options",
    "images": "--images",
    "image_files": "the images (--images)",
    "model": "the model configuration",
}

#: Keys that only the Python API sets: named by their dotted key, not as a made-up option.
_API_ONLY = {"weight_decay", "optimizer", "momentum", "warmup_factor", "schedule", "milestones", "gamma",
             "poly_power", "min_lr_factor", "grad_clip", "scale_range", "find_unused_parameters", "format"}


class ResumeMismatchError(UsageError):
    """A resume that asks for other work than the run it continues (exit 2, as other option problems)."""


def absolute(path: str | os.PathLike | None) -> str | None:
    """``path`` as an absolute string (``None`` stays ``None``): a request must not depend on the working folder."""
    return None if path is None else str(Path(path).expanduser().resolve())


def file_digest(path: str | os.PathLike | None) -> str | None:
    """The first 16 hex digits of a file's SHA-256 (``None`` for no file): a checkpoint replaced at the same path
    is other work."""
    if path is None or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def flatten(record: dict, prefix: str = "", *, whole: Iterable[str] = ("postprocess",)) -> dict:
    """``{"schedule": {"iters": 2}}`` -> ``{"schedule.iters": 2}``; the keys in ``whole`` stay one value (a set of
    overrides is compared, and reported, as one option)."""
    whole = tuple(whole)
    out = {}
    for key, value in record.items():
        if isinstance(value, dict) and key not in whole:
            out.update(flatten(value, f"{prefix}{key}.", whole=whole))
        else:
            out[f"{prefix}{key}"] = value
    return out


def option_label(key: str) -> str:
    """How a message names the option behind a dotted record key: ``schedule.batch_size`` -> ``--batch-size``."""
    last = key.rpartition(".")[2]
    if last in _LABELS:
        return _LABELS[last]
    if last in _API_ONLY or not last:
        return key
    return "--" + last.replace("_", "-")


def differences(before: dict, now: dict) -> list[str]:
    """Dotted keys whose values differ between two (nested) records, sorted."""
    a, b = flatten(before), flatten(now)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def describe_difference(before: dict, now: dict, key: str | None = None) -> str:
    """``--lr 0.002 there, 0.02 now`` for ``key`` (default: the first differing key) of two (nested) records."""
    if key is None:
        keys = differences(before, now)
        if not keys:
            return "no difference"
        key = keys[0]
    a, b = flatten(before), flatten(now)
    return f"{option_label(key)} {_show(a.get(key))} there, {_show(b.get(key))} now"


def _show(value) -> str:
    if isinstance(value, list) and len(value) > 4:
        return repr(value[:3])[:-1] + f", ... ({len(value)} in all)]"
    return repr(value)


def _covered(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def check_same_request(before: dict, now: dict, *, where: str | os.PathLike, may_change: Iterable[str] = (),
                       fix: str = "rerun with the same options to resume, or pass --overwrite to start again"
                       ) -> list[str]:
    """Refuse a resume whose request ``now`` differs from the stored ``before`` outside ``may_change`` (dotted
    keys or prefixes of them); return one line per allowed change (``--device 'cpu' there, 'cuda' now``).

    The error names ``where`` (the run's folder or file), the first differing option with both values, and ``fix``.
    """
    may_change = tuple(may_change)
    changed = differences(before, now)
    refused = [k for k in changed if not _covered(k, may_change)]
    if refused:
        raise ResumeMismatchError(f"{where}: was started with other options "
                                  f"({describe_difference(before, now, refused[0])}); {fix}")
    return [describe_difference(before, now, k) for k in changed]


# --------------------------------------------------------------------------------------------------------------
# the progress file of prn segment and prn refine


class ProgressLog:
    """``DIR/.<command>-progress.jsonl``: its first line holds the request (and, under torchrun, which rank of how
    many processes writes the file: :mod:`prn_cli.sharding`), then one JSON line per finished image (appended
    after the image's PNG is written, so a line names a file that exists)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    @staticmethod
    def header_record(request: dict, shard: dict | None = None) -> dict:
        """The first line: ``{"request": ..., "shard": {"rank": r, "world_size": n}}`` (no shard: one process)."""
        return {"request": request, **({"shard": shard} if shard is not None else {})}

    def header(self) -> dict:
        """The first line's record (empty for a missing file or one written before requests were stored)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                item = json.loads(f.readline())
        except (OSError, ValueError):
            return {}
        return item if isinstance(item, dict) and "request" in item else {}

    def read(self) -> tuple[dict | None, list[dict]]:
        """``(request, records)``; request is None for a file written before requests were stored. A line cut
        by an interruption ends the records (that image is simply done again)."""
        request, records = None, []
        if not self.path.exists():
            return request, records
        for k, line in enumerate(self.path.read_text(encoding="utf-8").splitlines()):
            try:
                item = json.loads(line)
            except ValueError:
                break
            if k == 0 and isinstance(item, dict) and "request" in item:
                request = item["request"]
            else:
                records.append(item)
        return request, records

    def open(self, request: dict, *, resume: bool, shard: dict | None = None) -> "_LogFile":
        """The file to append records to (``write``, ``flush``, a context manager): a resume continues it, a new
        run starts it with ``request`` (and ``shard``, see :meth:`header_record`). A write the disk refuses is an
        ``OutputWriteError`` naming the file."""
        from .io import naming_write_errors

        with naming_write_errors(self.path):
            if resume and self.path.exists():
                return _LogFile(self.path, open(self.path, "a", encoding="utf-8"))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            log = _LogFile(self.path, open(self.path, "w", encoding="utf-8"))
        log.write(json.dumps(self.header_record(request, shard)) + "\n")
        log.flush()
        return log

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class _LogFile:
    """A progress file open for appending, whose write errors name it."""

    def __init__(self, path: Path, f: IO):
        self.path, self._f = path, f

    def write(self, text: str) -> None:
        from .io import naming_write_errors

        with naming_write_errors(self.path):
            self._f.write(text)

    def flush(self) -> None:
        from .io import naming_write_errors

        with naming_write_errors(self.path):
            self._f.flush()

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass        # the write that failed was reported; closing must not hide it

    def __enter__(self) -> "_LogFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["ResumeMismatchError", "ProgressLog", "absolute", "file_digest", "flatten", "option_label", "differences", "describe_difference",
           "check_same_request"]


def check_resume(run, json_path: Path, request: dict, *, command: str, resume: bool, overwrite: bool,
                 may_change: Iterable[str]) -> list[dict]:
    """Before ``prn <command>`` writes into ``run.out_dir`` (``run``: a ``sharding`` run with its progress files):
    with ``resume``, check the interrupted run's request (logging the options it may change) and return the
    records of the images it finished; without, refuse a folder holding an interrupted run unless ``overwrite``."""
    from .errors import OutputExistsError

    if not resume:
        if run.progress_files() and not overwrite:
            raise OutputExistsError(f"{run.out_dir} holds an interrupted prn {command} run; pass --resume to finish "
                                    "it or --overwrite to start again")
        return []
    if json_path.exists() and not run.progress_files():
        raise OutputExistsError(f"{json_path} is complete; nothing to resume (pass --overwrite to redo it)")
    finished, changes = run.read_progress(request, may_change=tuple(may_change),
                                          fix="rerun with the inputs and options of the interrupted run, or "
                                          "pass --overwrite to start again")
    if changes:
        from .console import info

        info("resuming with " + "; ".join(changes))
    return finished
