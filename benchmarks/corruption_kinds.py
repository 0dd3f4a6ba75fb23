"""PRN on each way a base model fails, alone: does refinement help, and does it ever hurt things?

For every corruption kind of :class:`prn_cli.perturb.CorruptionConfig` (coarse boundaries, dropped things,
merged neighbours, split things, wrong classes, false positives, warped stuff, dropped crowds) this writes the
ground truth corrupted by that kind ALONE at ``--strength`` (the other kinds' probabilities set to 0), refines it
with a PRN checkpoint, evaluates base and refined against the ground truth, and prints one Markdown row per kind
(PQ, PQth, PQst of base and refined, and the deltas). ``all`` is the default mix of every kind.

    python benchmarks/corruption_kinds.py --gt data/annotations/panoptic_val.json --images data/images/val \
        --out /tmp/kinds [--weights PRN.pt] [--strength 0.5] [--limit 100] [--json PATH|-] \
        [--refine-option --restore-base-segments ...]

Post-processing options of ``prn refine`` can be passed with repeated ``--refine-option`` (e.g.
``--refine-option=--base-snap-confidence --refine-option=0.9``). Runs ``prn refine`` / ``prn eval`` as
subprocesses, so what it measures is exactly what a user gets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

KINDS = ("coarse_boundary", "drop", "merge", "split", "wrong_class", "false_positive", "stuff_boundary",
         "crowd_drop")


def _prn(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "prn_cli", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"prn {' '.join(args)} failed: {out.stderr.strip()}")
    return out


def _subset(gt_json: Path, limit: int, out: Path) -> Path:
    """The first ``limit`` annotations of ``gt_json`` as a set whose PNG folder is the GT's (a symlink)."""
    data = json.loads(gt_json.read_text())
    anns = data["annotations"][:limit]
    keep = {a["image_id"] for a in anns}
    subset = out / "gt.json"
    out.mkdir(parents=True, exist_ok=True)
    subset.write_text(json.dumps({**data, "annotations": anns, "images": [i for i in data["images"]
                                                                           if i["id"] in keep]}))
    link = out / "gt"
    if not link.exists():
        link.symlink_to(gt_json.with_suffix("").resolve(), target_is_directory=True)
    return subset


def main(argv: list[str] | None = None) -> int:
    from prn_cli.perturb import CorruptionConfig, write_corrupted_set

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gt", type=Path, required=True, help="GT panoptic JSON (COCO layout: PNGs beside it)")
    ap.add_argument("--images", type=Path, required=True, help="folder of the GT's images")
    ap.add_argument("--out", type=Path, required=True, help="work folder (corrupted and refined sets)")
    ap.add_argument("--weights", type=Path, default=None, help="PRN checkpoint (default: the shipped one)")
    ap.add_argument("--strength", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="first N images (0: all)")
    ap.add_argument("--kinds", default=",".join(KINDS + ("all",)))
    ap.add_argument("--refine-option", action="append", default=[], help="extra prn refine argument (repeat)")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--json", default=None, metavar="PATH|-")
    args = ap.parse_args(argv)

    gt = _subset(args.gt, args.limit, args.out) if args.limit else args.gt
    rows = []
    for kind in args.kinds.split(","):
        if kind == "all":
            config = CorruptionConfig(strength=args.strength)
        else:
            zeros = {k: 0.0 for k in KINDS if k != kind}
            config = dataclasses.replace(CorruptionConfig(strength=args.strength), **zeros)
        base, refined = args.out / f"base_{kind}", args.out / f"refined_{kind}"
        write_corrupted_set(gt, base, seed=args.seed, config=config, overwrite=True)
        _prn("refine", "--base", str(base), "--images", str(args.images), "--out", str(refined), "--overwrite",
             "--threads", args.threads, *(["--weights", str(args.weights)] if args.weights else []),
             *args.refine_option)
        report = json.loads(_prn("eval", "--gt", str(gt), "--pred", str(base), "--pred", str(refined),
                                 "--json", "-", "--workers", "0").stdout)
        b, r = report["predictions"]
        row = {"kind": kind}
        for name, p in (("base", b), ("refined", r)):
            for g, key in (("All", "pq"), ("Things", "pq_th"), ("Stuff", "pq_st")):
                value = p[g]["pq"]
                row[f"{name}_{key}"] = None if value is None else round(100 * value, 2)
        for key in ("pq", "pq_th", "pq_st"):
            if row[f"base_{key}"] is not None and row[f"refined_{key}"] is not None:
                row[f"delta_{key}"] = round(row[f"refined_{key}"] - row[f"base_{key}"], 2)
        rows.append(row)
        print(f"{kind}: {row}", file=sys.stderr)
    lines = ["| corruption (alone) | base PQ | PQth | PQst | refined PQ | PQth | PQst | ΔPQ | ΔPQth | ΔPQst |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = [r["kind"]] + [f"{r.get(k):.1f}" if r.get(k) is not None else "-" for k in
                               ("base_pq", "base_pq_th", "base_pq_st", "refined_pq", "refined_pq_th",
                                "refined_pq_st")]
        cells += [f"{r[k]:+.1f}" if r.get(k) is not None else "-" for k in ("delta_pq", "delta_pq_th", "delta_pq_st")]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    if args.json == "-":
        print(json.dumps(rows, indent=2))
        print(table, file=sys.stderr)
    else:
        print(table)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
