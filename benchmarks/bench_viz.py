"""Rendering speed of ``prn viz``: one 640x480 overlay (with and without a photo, boundaries, labels) and a panel.

Usage: python benchmarks/bench_viz.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from prn_cli.visualize import VizOptions, compose_panel, render_overlay


def best_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    h, w = 480, 640
    yy, xx = np.mgrid[:h, :w]
    ids = ((yy // 40) * 16 + (xx // 40) + 1).astype(np.uint32)  # 192 segments
    ids[(yy - 240) ** 2 + (xx - 320) ** 2 < 100 ** 2] = 0
    cats = {1: {"id": 1, "name": "square", "isthing": 1, "color": [200, 30, 30]},
            2: {"id": 2, "name": "sky", "isthing": 0, "color": [70, 130, 180]}}
    segs = [{"id": int(i), "category_id": 1 + int(i) % 2, "iscrowd": 0} for i in np.unique(ids) if i]
    photo = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    cases = {
        "overlay, no photo, boundaries": lambda: render_overlay(None, ids, segs, cats, VizOptions()),
        "overlay, photo, boundaries": lambda: render_overlay(photo, ids, segs, cats, VizOptions()),
        "overlay, photo, boundaries, labels": lambda: render_overlay(photo, ids, segs, cats,
                                                                     VizOptions(labels=True)),
    }
    tile = render_overlay(photo, ids, segs, cats, VizOptions())
    cases["panel of 4 tiles"] = lambda: compose_panel([photo, tile, tile, tile], ["image", "base", "refined", "GT"])
    print(f"640x480, {len(segs)} segments, best of {args.repeat}")
    for name, fn in cases.items():
        print(f"  {name:38s} {best_ms(fn, args.repeat):7.1f} ms")


if __name__ == "__main__":
    main()
