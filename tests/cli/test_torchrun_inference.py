"""``torchrun --nproc_per_node 2 -m prn_cli segment|refine``: two CPU processes (gloo) write the same bytes as
one process, and ``--resume`` finishes a run that two processes left half done, with any number of processes;
progress files of two different groups, or of another request, are refused with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import prn, synth

pytestmark = pytest.mark.slow

# one intra-op thread everywhere: the same floats in every process, whatever torchrun would pick
ENV = {"OMP_NUM_THREADS": "1"}


def torchrun(*args, timeout=400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "prn_cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **ENV}, timeout=timeout)


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def interrupt(complete: Path, stem: str, request: dict, lines_of: dict[str, dict]) -> None:
    """Turn a complete set into what an interrupted two-process run leaves: no JSON, the PNGs of images 0, 1
    and 3 with their progress lines split over the two ranks' files (each headed by the run's request and the
    rank; one cut line), the others missing."""
    data = json.loads((complete / "panoptic.json").read_text())
    (complete / "panoptic.json").unlink()
    names = [a["file_name"] for a in data["annotations"]]
    rank_files = {0: complete / f"{stem}.jsonl", 1: complete / f"{stem}.rank1.jsonl"}
    for rank, path in rank_files.items():
        header = {"request": request, "shard": {"rank": rank, "world_size": 2}}
        path.write_text(json.dumps(header) + "\n", encoding="utf-8")
    for k, name in enumerate(names):
        if k in (0, 1, 3):
            with open(rank_files[k % 2], "a", encoding="utf-8") as f:
                f.write(json.dumps(lines_of[name]) + "\n")
        else:
            (complete / "panoptic" / name).unlink()
    with open(rank_files[0], "a", encoding="utf-8") as f:
        f.write('{"image": {"id": 9')   # the line an interruption cut


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun")
    synth(root / "data", "--n", "6", "--seed", "4", "--split", "val", "--size", "96x64")
    return root


def _segment_args(root: Path, out: Path) -> list:
    return ["segment", "--images", root / "data/images/val", "--out", out, "--device", "cpu",
            "--images-json", root / "data/annotations/panoptic_val.json"]


def _segment_request(root: Path) -> dict:
    """The request ``_segment_args`` makes (what its progress files start with)."""
    from prn_cli.segment import SegmentOptions, segment_request
    from prn_cli.shipped import shipped_weights

    return segment_request([root / "data/images/val"], shipped_weights("base"),
                           SegmentOptions(device="cpu", images_json=str(root / "data/annotations/panoptic_val.json")))


def _refine_request(root: Path, base: Path) -> dict:
    from prn_cli.refine import RefineOptions, refine_request
    from prn_cli.shipped import shipped_weights

    return refine_request(base / "panoptic.json", [root / "data/images/val"], shipped_weights("prn"),
                          RefineOptions(device="cpu"))


def test_segment_on_two_processes_is_byte_identical_and_resumes(data):
    one = prn(*_segment_args(data, data / "seg1"), env=ENV, timeout=400)
    assert one.returncode == 0, one.stderr
    two = torchrun(*_segment_args(data, data / "seg2"), "--json", data / "seg2.json")
    assert two.returncode == 0, two.stderr
    reference = files_of(data / "seg1")
    assert len(reference) == 7 and files_of(data / "seg2") == reference
    assert json.loads((data / "seg2.json").read_text())["written"] == 6    # rank 0 reports the whole run

    done = json.loads((data / "seg1" / "panoptic.json").read_text())
    lines = {a["file_name"]: {"image": img, "annotation": a} for img, a in zip(done["images"], done["annotations"])}
    interrupt(data / "seg2", ".segment-progress", _segment_request(data), lines)
    left = files_of(data / "seg2")

    other = torchrun(*_segment_args(data, data / "seg2"), "--resume", "--score-threshold", "0.9")
    errors = [line for line in other.stderr.splitlines() if "was started with other options" in line]
    # torchrun exits 1 when a process fails, whatever the process's code (2 here); one line, from rank 0 only
    assert other.returncode != 0 and len(errors) == 1, other.stderr
    assert "--score-threshold" in errors[0] and ".segment-progress.jsonl" in errors[0]
    assert files_of(data / "seg2") == left                               # nothing touched

    resumed = torchrun(*_segment_args(data, data / "seg2"), "--resume", "--json", data / "resumed.json")
    assert resumed.returncode == 0, resumed.stderr
    assert "processes" not in resumed.stderr                              # same group size: nothing to log
    assert files_of(data / "seg2") == reference                          # progress files gone, JSON in order
    report = json.loads((data / "resumed.json").read_text())
    assert (report["written"], report["adopted"]) == (3, 3)


def test_refine_on_two_processes_is_byte_identical_and_resumes_on_one(data):
    base = data / "seg1"
    if not (base / "panoptic.json").exists():
        assert prn(*_segment_args(data, base), env=ENV, timeout=400).returncode == 0
    args = ["refine", "--base", base, "--images", data / "data/images/val", "--device", "cpu"]
    one = prn(*args, "--out", data / "ref1", "--json", data / "ref1.json", env=ENV, timeout=400)
    assert one.returncode == 0, one.stderr
    two = torchrun(*args, "--out", data / "ref2", "--json", data / "ref2.json")
    assert two.returncode == 0, two.stderr
    reference = files_of(data / "ref1")
    assert len(reference) == 7 and files_of(data / "ref2") == reference
    report_one = json.loads((data / "ref1.json").read_text())
    report_two = json.loads((data / "ref2.json").read_text())
    assert report_two["per_image"] == report_one["per_image"] and report_two["changes"] == report_one["changes"]

    done = json.loads((data / "ref1" / "panoptic.json").read_text())
    changes = {c["file_name"]: c for c in report_one["per_image"]}
    lines = {a["file_name"]: {"image": img, "annotation": a, "changes": changes[a["file_name"]]}
             for img, a in zip(done["images"], done["annotations"])}
    interrupt(data / "ref2", ".refine-progress", _refine_request(data, base), lines)
    refused = prn(*args, "--out", data / "ref2", env=ENV)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    # a rank file of another group (three processes) beside this group's: not one interrupted run
    stray = data / "ref2" / ".refine-progress.rank1.jsonl"
    kept = stray.read_text()
    header, _, rest = kept.partition("\n")
    stray.write_text(header.replace('"world_size": 2', '"world_size": 3') + "\n" + rest)
    mixed = prn(*args, "--out", data / "ref2", "--resume", env=ENV, timeout=400)
    assert mixed.returncode == 2 and "3 processes" in mixed.stderr and "2" in mixed.stderr, mixed.stderr
    assert not (data / "ref2" / "panoptic.json").exists()
    stray.write_text(kept)

    resumed = prn(*args, "--out", data / "ref2", "--resume", "--json", data / "resumed.json", env=ENV, timeout=400)
    assert resumed.returncode == 0, resumed.stderr
    assert "processes 2 there, 1 now" in resumed.stderr                  # another group size is logged
    assert files_of(data / "ref2") == reference
    report = json.loads((data / "resumed.json").read_text())
    assert report["per_image"] == report_one["per_image"] and report["changes"] == report_one["changes"]
    assert (report["written"], report["adopted"]) == (3, 3)
