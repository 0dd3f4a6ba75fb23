"""Property-based tests (hypothesis) of the panoptic format layer and of ``prn eval``.

- Random valid GT/prediction pairs (random category ids, things and stuff, segment ids anywhere in [1, 2^24),
  crowd regions, void, several images of different sizes, predictions that shift, merge, split, relabel and
  invent segments) give exactly the numbers of the COCO reference evaluator: the same TP/FP/FN per class, and the
  same floats, bit for bit (prn sums IoUs in the reference's single-process order by default).
- Random corruptions of a valid pair are refused by ``prn eval`` with one line naming the file and exit code 3.

The reference is cocodataset/panopticapi's ``evaluation.py``, installed as ``panopticapi-lite`` with
``pip install --no-deps panopticapi-lite`` (its metadata pins numpy<2 and pulls packages ``evaluation.py`` does
not use); these tests skip where it or hypothesis is absent.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
reference = pytest.importorskip("panopticapi.evaluation")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from prn_cli.cli import app  # noqa: E402
from prn_cli.cli._errors import run_app  # noqa: E402
from prn_cli.evaluate import evaluate  # noqa: E402
from prn_cli.panoptic import PanopticWriter, category_dict  # noqa: E402

#: fast enough for every run of the suite (the whole file: about 10 s of CPU), no flaky deadlines on a
#: loaded machine
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
                database=None)

MAX_ID = 256 ** 3 - 1


# --------------------------------------------------------------------------------------------------------------
# random valid panoptic pairs


@st.composite
def categories(draw) -> list[dict]:
    n_things = draw(st.integers(1, 3))
    n_stuff = draw(st.integers(1, 3))
    ids = draw(st.lists(st.integers(1, 250), min_size=n_things + n_stuff, max_size=n_things + n_stuff, unique=True))
    return [category_dict(cid, f"c{cid}", k < n_things) for k, cid in enumerate(ids)]


@st.composite
def painted(draw, h: int, w: int, n_labels: int, base: np.ndarray | None = None) -> np.ndarray:
    """A label map (0 = void, 1..n_labels) painted with rectangles, over ``base`` or over one background label
    (or void)."""
    labels = base.copy() if base is not None else np.full((h, w), draw(st.integers(0, n_labels)), np.int64)
    for _ in range(draw(st.integers(0 if base is not None else 1, 5))):
        y0, y1 = sorted(draw(st.lists(st.integers(0, h), min_size=2, max_size=2)))
        x0, x1 = sorted(draw(st.lists(st.integers(0, w), min_size=2, max_size=2)))
        labels[y0:y1, x0:x1] = draw(st.integers(0, n_labels))
    return labels


def _segments(draw, labels: np.ndarray, cats: list[dict], crowd: bool,
              like: dict[int, int] | None = None) -> tuple[np.ndarray, list[dict]]:
    """Random segment ids and categories for the labels present in ``labels`` (ids, segments_info); a label in
    ``like`` (label -> category id) mostly keeps that category (a prediction that gets the class right)."""
    present = [int(v) for v in np.unique(labels) if v != 0]
    ids = draw(st.lists(st.integers(1, MAX_ID), min_size=len(present), max_size=len(present), unique=True))
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.uint32)
    by_id = {c["id"]: c for c in cats}
    segs = []
    for label, sid in zip(present, ids):
        lut[label] = sid
        if like and label in like and draw(st.integers(0, 3)) > 0:
            cat = by_id[like[label]]
        else:
            cat = draw(st.sampled_from(cats))
        segs.append({"id": sid, "category_id": cat["id"],
                     "iscrowd": int(crowd and bool(cat["isthing"]) and draw(st.integers(0, 5)) == 0)})
    return lut[labels], segs


@st.composite
def panoptic_pairs(draw) -> tuple[list[dict], list[tuple], list[tuple]]:
    """(categories, GT images, prediction images); an image is (image record, ids, segments_info)."""
    cats = draw(categories())
    gt, pred = [], []
    for image_id in draw(st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=3, unique=True)):
        h, w = draw(st.integers(2, 12)), draw(st.integers(2, 12))
        record = {"id": image_id, "file_name": f"img_{image_id}.jpg", "width": w, "height": h}
        n = draw(st.integers(1, 6))
        gt_labels = draw(painted(h, w, n))
        # the prediction: the GT's layout moved about (repainted rectangles, new labels), with its own ids and
        # categories, so that matches, near misses, merges, splits and inventions all occur
        pred_labels = draw(painted(h, w, n + 3, base=gt_labels))
        gt_ids, gt_segs = _segments(draw, gt_labels, cats, crowd=True)
        label_of = {}
        for label in np.unique(gt_labels):
            if label:
                sid = int(gt_ids[gt_labels == label][0])
                label_of[int(label)] = next(seg["category_id"] for seg in gt_segs if seg["id"] == sid)
        gt.append((record, gt_ids, gt_segs))
        pred.append((record, *_segments(draw, pred_labels, cats, crowd=False, like=label_of)))
    return cats, gt, pred


def _write(folder: Path, name: str, images, cats) -> Path:
    json_path = folder / f"{name}.json"
    with PanopticWriter(json_path, folder / name, cats) as writer:
        for record, ids, segs in images:
            writer.add(record, ids, segs, file_name=f"img_{record['id']}.png")
    return json_path


def _reference(gt_json: Path, pred_json: Path):
    """What panopticapi's pq_compute computes, in one process (its own code; its printing silenced):
    ``(groups or None where it divides by zero, per_class, raw per-class stats)``."""
    gt_data, pred_data = json.loads(gt_json.read_text()), json.loads(pred_json.read_text())
    cats = {c["id"]: c for c in gt_data["categories"]}
    by_image = {a["image_id"]: a for a in pred_data["annotations"]}
    pairs = [(a, by_image[a["image_id"]]) for a in gt_data["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        stat = reference.pq_compute_single_core(0, pairs, str(gt_json.with_suffix("")),
                                                str(pred_json.with_suffix("")), cats)
    groups, per_class = {}, None
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        try:
            groups[name], classes = stat.pq_average(cats, isthing=isthing)
        except ZeroDivisionError:       # no category of the group occurs: prn reports it as undefined
            groups[name], classes = None, None
        if name == "All":
            per_class = classes
    return groups, per_class, stat


@FAST
@given(panoptic_pairs())
def test_prn_eval_gives_exactly_the_reference_numbers(pair):
    cats, gt_images, pred_images = pair
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        gt_json, pred_json = _write(folder, "gt", gt_images, cats), _write(folder, "pred", pred_images, [])
        groups, per_class, stat = _reference(gt_json, pred_json)
        result = evaluate(gt_json, [pred_json], workers=0).results[0]

        for cid in (c["id"] for c in cats):
            ref, mine = stat.pq_per_cat[cid], result.per_class[cid]
            assert (mine["tp"], mine["fp"], mine["fn"]) == (ref.tp, ref.fp, ref.fn), cid
            assert mine["iou_sum"] == ref.iou, cid
        got = result.reference_dict()
        for name in ("All", "Things", "Stuff"):
            if groups[name] is None:
                assert got[name]["n"] == 0 and got[name]["pq"] is None
            else:
                assert got[name] == groups[name], name
        if per_class is not None:
            assert got["per_class"] == per_class

        # the command gives the same numbers (its JSON on stdout)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = run_app(app, ["eval", "--gt", str(gt_json), "--pred", str(pred_json), "--workers", "0",
                                 "--json", "-"], debug=lambda: False)
        assert code == 0
        printed = json.loads(out.getvalue())
        for name in ("All", "Things", "Stuff"):
            expected = groups[name] or {"pq": None, "sq": None, "rq": None, "n": 0}
            assert {k: printed[name][k] for k in ("pq", "sq", "rq", "n")} == expected


# --------------------------------------------------------------------------------------------------------------
# random corruptions: one line, exit 3


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _first_png(folder: Path, name: str) -> Path:
    return sorted((folder / name).glob("*.png"))[0]


def _segments_of(data: dict) -> list:
    """The segments_info of the first annotation that has segments (the corruptions below edit one)."""
    return next(a["segments_info"] for a in data["annotations"] if a["segments_info"])


def _rewrite_png(path: Path, change) -> None:
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    change(rgb).save(path)


def _unused_id(data: dict) -> int:
    used = {s["id"] for s in _segments_of(data)}
    return next(i for i in range(1, MAX_ID) if i not in used)


#: name -> (which set it breaks, what it does to the folder, a fragment of the message)
CORRUPTIONS = {
    "png id not listed": ("pred", lambda f: _edit(f / "pred.json", lambda d: _segments_of(d).pop()), "not in segments_info"),
    "listed id without pixels": ("pred", lambda f: _edit(f / "pred.json", lambda d: _segments_of(d).append(
                                     {"id": _unused_id(d), "category_id": _segments_of(d)[0]["category_id"]})),
                                 "no pixels"),
    "unknown category": ("pred", lambda f: _edit(f / "pred.json", lambda d: _segments_of(d)[0].update(category_id=999)), "unknown category_id 999"),
    "segment listed twice": ("pred", lambda f: _edit(f / "pred.json", lambda d: _segments_of(d).append(
                                 dict(_segments_of(d)[0]))),
                             "twice"),
    "segment id out of range": ("gt", lambda f: _edit(f / "gt.json", lambda d: _segments_of(d)[0].update(id=MAX_ID + 5)), "[0, 2^24)"),
    "png of another size": ("pred", lambda f: _rewrite_png(_first_png(f, "pred"), lambda a: Image.fromarray(
        np.ascontiguousarray(np.pad(a, ((0, 1), (0, 0), (0, 0)))))), "size"),
    "png is grey": ("pred", lambda f: _rewrite_png(_first_png(f, "pred"), lambda a: Image.fromarray(a[..., 0])),
                    "png"),
    "png missing": ("pred", lambda f: _first_png(f, "pred").unlink(), "png"),
    "png is not a png": ("gt", lambda f: _first_png(f, "gt").write_bytes(b"\xff\xd8\xff\xe0 not a png"), "png"),
    "json truncated": ("pred", lambda f: (f / "pred.json").write_text((f / "pred.json").read_text()[:-7]),
                       "malformed JSON"),
    "file name escapes": ("pred", lambda f: _edit(f / "pred.json", lambda d: d["annotations"][0]
                                                  .update(file_name="../gt.json")), "escapes its folder"),
    "image without prediction": ("pred", lambda f: _edit(f / "pred.json", lambda d: d["annotations"].pop(0)),
                                 "no prediction for the image"),
    "two image records, one id": ("gt", lambda f: _edit(f / "gt.json", lambda d: d["images"].append(
        dict(d["images"][0], file_name="other.jpg"))), "two image records"),
    "category listed twice": ("gt", lambda f: _edit(f / "gt.json", lambda d: d["categories"].append(
        dict(d["categories"][0]))), "listed twice"),
}


#: corruptions that edit a segment need an image with one
NEEDS_A_SEGMENT = {"png id not listed", "listed id without pixels", "unknown category", "segment listed twice",
                   "segment id out of range"}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@settings(FAST, max_examples=8)
@given(pair=panoptic_pairs())
def test_a_corrupted_set_is_refused_with_one_line_and_exit_3(pair, corruption):
    cats, gt_images, pred_images = pair
    broken, corrupt, fragment = CORRUPTIONS[corruption]
    if corruption in NEEDS_A_SEGMENT:
        hypothesis.assume(any(segs for _, _, segs in (gt_images if broken == "gt" else pred_images)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        gt_json, pred_json = _write(folder, "gt", gt_images, cats), _write(folder, "pred", pred_images, [])
        corrupt(folder)
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = run_app(app, ["eval", "--gt", str(gt_json), "--pred", str(pred_json), "--workers", "0"],
                           debug=lambda: False)
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        assert code == 3, (corruption, err.getvalue())
        assert len(lines) == 1 and lines[0].startswith("error: "), (corruption, lines)
        assert str(folder / broken) in lines[0] and "internal error" not in lines[0], (corruption, lines[0])
        assert fragment.lower() in lines[0].lower(), (corruption, lines[0])
