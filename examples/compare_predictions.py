"""Compare two prediction sets against one ground truth from Python, without the CLI.

Makes a small synthetic validation set, two stand-in predictions of different quality (ground truth corrupted
the way base models fail, at two strengths), evaluates both in one pass (each GT PNG decoded once) and prints
the categories whose PQ changed most.

    python examples/compare_predictions.py [--out DIR] [--n 12]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from prn_cli.evaluate import evaluate
from prn_cli.perturb import CorruptionConfig, write_corrupted_set
from prn_cli.synth import SynthConfig, write_dataset


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="where to write the data (default: a temporary folder)")
    ap.add_argument("--n", type=int, default=12)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        data = write_dataset(root / "data", SynthConfig(n=args.n, width=256, height=192, seed=7, split="val"))
        worse = write_corrupted_set(data["json"], root / "worse", seed=1, config=CorruptionConfig(strength=0.8))
        better = write_corrupted_set(data["json"], root / "better", seed=1, config=CorruptionConfig(strength=0.3))
        report = evaluate(data["json"], [worse.parent, better.parent], names=["worse", "better"], workers=0)

    first, second = report.results
    for group in ("All", "Things", "Stuff"):
        a, b = first.groups[group]["pq"], second.groups[group]["pq"]
        print(f"{group:7s} PQ {100 * a:5.1f} -> {100 * b:5.1f} ({100 * (b - a):+.1f})")
    names = {c["id"]: c["name"] for c in report.categories}
    changes = sorted(((second.per_class[c]["pq"] - first.per_class[c]["pq"], c) for c in names), reverse=True)
    print("largest per-class gains:", ", ".join(f"{names[c]} {100 * d:+.1f}" for d, c in changes[:3]))
    return report.to_dict()


if __name__ == "__main__":
    main()
