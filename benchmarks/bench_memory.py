"""Peak memory and wall time of ``prn segment`` and ``prn refine`` on large photos (issue 10: bounded memory at any
photo size).

For each --sizes WxH it writes, under --work (default: a temporary folder):

- ``images/000000000001.jpg``: a synthetic photo (``prn synth``'s generator at 1/4 of the size, enlarged
  bicubically, JPEG quality 90), so the networks see textured regions and shapes, not noise;
- ``base/``: a panoptic set of that photo at full size (the synthetic ground truth enlarged by nearest
  neighbour, written by prn's own writer): the base that ``prn refine`` reads.

Then it runs ``python -m prn_cli segment`` and ``python -m prn_cli refine`` (the shipped models, --threads) on it,
each in its own subprocess, and reports the child's peak RSS (``os.wait4``'s ``ru_maxrss``) and wall time.
Options after ``--`` go to both commands (e.g. ``-- --max-size 1024``).

Usage: python benchmarks/bench_memory.py [--sizes 3000x3000 6000x4000] [--threads 2] [--work DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_inputs(root: Path, width: int, height: int) -> tuple[Path, Path]:
    """The photo folder and the base set of one WxH photo (see the module docstring)."""
    from PIL import Image

    from prn_cli.panoptic import PanopticWriter
    from prn_cli.resize import resize_ids
    from prn_cli.synth import SynthConfig, generate_sample, synth_categories

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    small = SynthConfig(width=max(64, width // 4), height=max(64, height // 4), seed=3, max_things=12)
    rgb, ids, segs = generate_sample(small, 0)
    Image.fromarray(rgb).resize((width, height), Image.BICUBIC).save(images / "000000000001.jpg", quality=90)
    big_ids = resize_ids(np.asarray(ids, dtype=np.uint32), (height, width))
    base = root / "base"
    writer = PanopticWriter(base / "panoptic.json", base / "panoptic", synth_categories(), overwrite=True)
    present = set(np.unique(big_ids).tolist())
    writer.add({"id": 1, "file_name": "000000000001.jpg", "width": width, "height": height}, big_ids,
               [{"id": int(s["id"]), "category_id": int(s["category_id"]), "iscrowd": int(s.get("iscrowd", 0))}
                for s in segs if int(s["id"]) in present])
    writer.commit()
    return images, base


def run_child(args: list[str]) -> dict:
    """Run ``python -m prn_cli ARGS``; its exit code, wall time and peak RSS (MB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "prn_cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    row = {"exit_code": code, "wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024)}
    if code != 0:
        row["stderr_tail"] = stderr.strip().splitlines()[-3:]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["3000x3000", "6000x4000"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", help="keep the inputs and outputs here (default: a temporary folder)")
    ap.add_argument("--commands", nargs="+", default=["segment", "refine"], choices=["segment", "refine"])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("extra", nargs="*", help="options for both commands, after --")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="prn-bench-memory-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        rows = []
        for size in args.sizes:
            width, height = (int(v) for v in size.lower().split("x"))
            root = work / size
            images, base = make_inputs(root, width, height)
            common = ["--threads", str(args.threads), "--overwrite", *args.extra]
            for command in args.commands:
                if command == "segment":
                    cli = ["segment", "--images", str(images), "--out", str(root / "segmented"), *common]
                else:
                    cli = ["refine", "--base", str(base), "--images", str(images), "--out", str(root / "refined"),
                           *common]
                rows.append({"size": size, "command": command, **run_child(cli)})
                if not args.json:
                    r = rows[-1]
                    print(f"{size:>10s}  prn {command:7s}  peak RSS {r['peak_rss_mb']:6d} MB  wall {r['wall_s']:7.1f} s"
                          f"  exit {r['exit_code']}" + (f"  {r['stderr_tail']}" if "stderr_tail" in r else ""),
                          flush=True)
    if args.json:
        print(json.dumps({"threads": args.threads, "extra": args.extra, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
