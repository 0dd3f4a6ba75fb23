"""Shared fixtures: paths to the versioned test data and a builder for small hand-made panoptic sets."""

from __future__ import annotations

import os
from pathlib import Path

# Tiny tensors thrash with several intra-op threads on a shared 2-core machine (measured: a 4x slower suite).
# Set before torch is imported, so it holds here and in every subprocess the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

from prn_cli.panoptic import PanopticWriter, category_dict

DATA = Path(__file__).parent / "data"
PQ_REFERENCE = DATA / "pq_reference"
COCO_SAMPLE = DATA / "coco_panoptic_sample"

#: Two things in two super-categories and two stuff classes; ids are deliberately not contiguous.
CATEGORIES = [
    category_dict(1, "square", True, (200, 30, 30), "polygon"),
    category_dict(2, "disc", True, (30, 200, 30), "round"),
    category_dict(101, "sky", False, (70, 130, 180), "sky"),
    category_dict(102, "grass", False, (60, 160, 60), "ground"),
]


def write_set(json_path: Path, png_dir: Path, images: list[tuple[np.ndarray, list[dict]]],
              categories=CATEGORIES) -> Path:
    """Write a set of (ids, segments_info) images; image ids 1..n, PNG names 000001.png..."""
    with PanopticWriter(json_path, png_dir, categories) as writer:
        for k, (ids, segs) in enumerate(images, start=1):
            h, w = ids.shape
            writer.add({"id": k, "file_name": f"{k:06d}.jpg", "width": w, "height": h}, ids, segs)
    return json_path


@pytest.fixture
def make_set(tmp_path):
    """``make_set(name, images)`` -> JSON path of a set written under tmp_path (COCO layout: name.json + name/)."""

    def make(name: str, images, categories=CATEGORIES) -> Path:
        return write_set(tmp_path / f"{name}.json", tmp_path / name, images, categories)

    return make


def scene(h: int = 24, w: int = 32) -> tuple[np.ndarray, list[dict]]:
    """A small scene: sky over grass, one square (id 11) and one disc (id 12) on the grass."""
    ids = np.zeros((h, w), dtype=np.uint32)
    ids[: h // 2] = 1001
    ids[h // 2:] = 1002
    ids[14:20, 3:9] = 11
    yy, xx = np.mgrid[:h, :w]
    ids[(yy - 17) ** 2 + (xx - 22) ** 2 <= 9] = 12
    segs = [{"id": 1001, "category_id": 101}, {"id": 1002, "category_id": 102},
            {"id": 11, "category_id": 1}, {"id": 12, "category_id": 2}]
    return ids, segs
