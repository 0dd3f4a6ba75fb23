"""``prn report``: an interactive HTML report of prediction sets against their ground truth (one folder that
works opened from disk: no server, no network, no external scripts or styles).

Per image, the panels image | set 1 | set 2 | ... | ground truth, with each set's PQ on that image and the
delta of the last set against the first; the page sorts by that delta (worst first), filters by class, shows a
class legend, names the segment under the pointer (class, id, area, its GT match and IoU, what the evaluator
made of it) and toggles a "what changed" layer (pixels whose segment or class differs between the first and
the last set). The numbers are :func:`prn_cli.evaluate.evaluate`'s with ``per_image=True``, so they are those
of ``prn eval --per-image``.

Colours agree across panels: stuff in its category's colour, each GT thing in a shade of its category's colour
(:func:`.colors.jittered_color`), and a predicted thing in the shade of the GT instance it matches (or, for a
wrong class, overlaps by IoU > 0.5), so one object has one colour in every panel; other predicted things get
shades of their own.

Output folder::

    out_dir/
      index.html          the page (inline CSS and script; the segment maps for hovering are embedded)
      tiles/<stem>/*.png  image.png, set-<k>.png, gt.png, changes.png (transparent but the changed pixels)
      report.json         what was drawn, the per-image numbers; written last, marks the folder as a report
"""

from __future__ import annotations

import base64
import html as htmlmod
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import quote

import numpy as np

from ..evaluate import EvalOptions, EvalReport, evaluate
from ..io import (atomic_output, prepare_output_dir, read_photo, write_json_atomic, write_png_atomic,
                  write_text_atomic)
from ..panoptic import VOID, PanopticSet, load_set
from .colors import category_color, jittered_color
from .options import VizOptions
from .overlay import render_overlay
from .selection import find_photos, plan_images

HTML_NAME = "index.html"
MARKER_NAME = "report.json"
TILES_DIRNAME = "tiles"
GT_TITLE = "ground truth"
CHANGE_COLOR = (255, 0, 255, 200)
#: Salt of an unmatched predicted thing's shade, so it does not borrow the shade of a GT id that equals its id.
_UNMATCHED_SALT = 0x2C1B3C6D


@dataclass(frozen=True)
class ReportOptions:
    """How the report looks and what it holds."""

    #: Opacity of segment colours over the photos.
    alpha: float = 0.55
    boundaries: bool = True
    #: Draw at most this many images (GT order); None = all. The numbers in the page are per image anyway.
    limit: int | None = None

    def __post_init__(self):
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], not {self.alpha}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, not {self.limit}")


def write_report(gt: PanopticSet | str | os.PathLike, preds: Sequence[PanopticSet | str | os.PathLike],
                 out_dir: str | os.PathLike, *, images_dir: str | os.PathLike | None = None,
                 names: Sequence[str] | None = None, options: ReportOptions = ReportOptions(),
                 eval_options: EvalOptions = EvalOptions(), workers: int | None = None, overwrite: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Evaluate ``preds`` against ``gt`` image by image and write the report folder ``out_dir``.

    ``images_dir``: the photos (found by the GT ``images`` records' ``file_name``, else ``<PNG stem>.jpg``...);
    without it segments are drawn on grey and the panels have no image column. Refuses a folder holding an
    earlier report unless ``overwrite`` (then its tiles are replaced). Returns ``{"out_dir", "index_html",
    "images", "sets", "summary"}``, ``summary`` being the evaluation's ``to_dict()`` without per-image records.
    """
    gt_set = gt if isinstance(gt, PanopticSet) else load_set(gt)
    pred_sets = [p if isinstance(p, PanopticSet) else load_set(p, need_categories=False) for p in preds]
    out = Path(out_dir)
    found = prepare_output_dir(out, overwrite=overwrite, marker_names=[MARKER_NAME, HTML_NAME],
                               what="a prn report")
    photos_dir = Path(images_dir) if images_dir is not None else None
    report = evaluate(gt_set, pred_sets, options=eval_options, workers=workers, names=names, per_image=True)
    anns = list(gt_set.annotations)[:options.limit] if options.limit else list(gt_set.annotations)
    plan = plan_images([gt_set], anns)
    if photos_dir is not None:
        from ..errors import fail

        if not photos_dir.is_dir():
            raise fail(photos_dir, "images folder does not exist", "pass the folder that holds the photos")
        find_photos(photos_dir, [gt_set], plan)

    if found and (out / MARKER_NAME).exists() and (out / TILES_DIRNAME).is_dir():
        shutil.rmtree(out / TILES_DIRNAME)
    categories = gt_set.categories_by_id
    by_image = [{str(k): v for k, v in p.annotations_by_image().items()} for p in pred_sets]
    cards = []
    total = len(plan)
    if progress is not None:
        progress(0, total)
    for position, job in enumerate(plan):
        records = [r.per_image[position] for r in report.results]
        pred_anns = [lookup[str(job.ann["image_id"])] for lookup in by_image]
        cards.append(_draw_image(out, position, job, gt_set, pred_sets, pred_anns, records, categories, options))
        if progress is not None:
            progress(position + 1, total)
    page = report_html(report, cards, [c for c in gt_set.categories], has_photos=photos_dir is not None)
    write_text_atomic(out / HTML_NAME, page)
    summary = report.to_dict()
    for pred in summary.get("predictions", [summary]):
        pred.pop("per_image", None)
    manifest = {"tool": "prn report", "gt": str(gt_set.json_path), "images_dir": str(photos_dir) if photos_dir
                else None, "sets": [{"name": r.name, "json": r.pred_path} for r in report.results],
                "images": [{"image_id": c["image_id"], "file_name": c["file_name"], "pq": c["pq"], "delta": c["delta"],
                            "changed_pixels": c["changed_pixels"], "files": [t["src"] for t in c["tiles"]]
                            + ([c["changes"]] if c["changes"] else [])} for c in cards],
                "summary": summary}
    write_json_atomic(out / MARKER_NAME, manifest)
    return {"out_dir": str(out), "index_html": str(out / HTML_NAME), "images": len(cards),
            "sets": [r.name for r in report.results], "summary": summary}


# --------------------------------------------------------------------------------------------------------------
# one image


def _segment_colors(segments: Sequence[dict], categories: dict[int, dict], *, gt: bool,
                    salt: int = 0) -> dict[int, tuple[int, int, int]]:
    colors = {}
    for seg in segments:
        cat = categories.get(seg["category_id"], {"id": seg["category_id"]})
        if not cat.get("isthing", 1):
            colors[seg["id"]] = category_color(cat)
        elif gt:
            colors[seg["id"]] = jittered_color(cat, seg["id"])
        elif seg["match"] is not None:
            colors[seg["id"]] = jittered_color(cat, seg["match"])
        elif seg["best"] is not None and seg["best_iou"] > 0.5:
            colors[seg["id"]] = jittered_color(cat, seg["best"])
        else:
            colors[seg["id"]] = jittered_color(cat, seg["id"] ^ _UNMATCHED_SALT ^ salt)
    return colors


def segment_runs(ids: np.ndarray, segment_ids: Sequence[int]) -> str:
    """The map "pixel -> 1 + position of its segment in ``segment_ids``" (0: void or unlisted) as runs in raster
    order, base64 of little-endian uint16 pairs (value, length), runs longer than 65535 pixels cut in pieces:
    what the page decodes to name the segment under the pointer."""
    if len(segment_ids) >= 2 ** 16:
        raise ValueError(f"{len(segment_ids)} segments in one image; at most 65535 can be described")
    flat = ids.reshape(-1).astype(np.int64)
    order = np.argsort(np.asarray(segment_ids, dtype=np.int64), kind="stable")
    sorted_ids = np.asarray(segment_ids, dtype=np.int64)[order]
    if len(sorted_ids):
        at = np.minimum(np.searchsorted(sorted_ids, flat), len(sorted_ids) - 1)
        value = np.where((sorted_ids[at] == flat) & (flat != VOID), order[at] + 1, 0)
    else:
        value = np.zeros_like(flat)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(value)) + 1])
    lengths = np.diff(np.append(starts, len(value)))
    pieces = (lengths + 0xFFFF - 1) // 0xFFFF
    values = np.repeat(value[starts], pieces)
    cut = np.full(int(pieces.sum()), 0xFFFF, dtype=np.int64)
    last = np.cumsum(pieces) - 1
    cut[last] = lengths - (pieces - 1) * 0xFFFF
    pairs = np.stack([values, cut], axis=1).astype("<u2")
    return base64.b64encode(pairs.tobytes()).decode("ascii")


def changed_pixels(first: np.ndarray, first_cats: dict[int, int], last: np.ndarray,
                   last_cats: dict[int, int]) -> np.ndarray:
    """Pixels whose segment or class changed from ``first`` to ``last``: those of prn refine's
    ``pixels_changed`` (a segment is the same when the two overlap with IoU > 0.5; void to void is no change)."""
    a_uniq, a_inv = np.unique(first.ravel(), return_inverse=True)
    b_uniq, b_inv = np.unique(last.ravel(), return_inverse=True)
    na, nb = len(a_uniq), len(b_uniq)
    inter = np.bincount(a_inv.astype(np.int64) * nb + b_inv, minlength=na * nb).reshape(na, nb)
    union = inter.sum(1)[:, None] + inter.sum(0)[None, :] - inter
    iou = inter / np.maximum(union, 1)
    iou[a_uniq == VOID, :] = 0
    iou[:, b_uniq == VOID] = 0
    a_cat = np.array([first_cats.get(int(i), -1) for i in a_uniq])
    b_cat = np.array([last_cats.get(int(i), -1) for i in b_uniq])
    same = (iou > 0.5) & (a_cat[:, None] == b_cat[None, :])
    same[np.ix_(a_uniq == VOID, b_uniq == VOID)] = True
    return ~same[a_inv, b_inv].reshape(first.shape)


def _write_rgba_png(path: Path, rgba: np.ndarray) -> None:
    from PIL import Image

    with atomic_output(path, "wb") as f:
        Image.fromarray(np.ascontiguousarray(rgba, dtype=np.uint8), mode="RGBA").save(f, format="PNG")


def _draw_image(out: Path, position: int, job, gt_set: PanopticSet, pred_sets: Sequence[PanopticSet],
                pred_anns: Sequence[dict], records: Sequence[dict], categories: dict[int, dict],
                options: ReportOptions) -> dict[str, Any]:
    """Write one image's tiles; return its card: numbers, tiles (with segments and runs), classes present."""
    stem = job.rel[:-len(".png")]
    folder = out / TILES_DIRNAME / stem
    photo = read_photo(job.photo) if job.photo is not None else None
    viz = VizOptions(color_by="panoptic", alpha=options.alpha, boundaries=options.boundaries)
    tiles: list[dict[str, Any]] = []
    if photo is not None:
        # the photo's own file, copied: smaller than a PNG of its pixels, and the folder stays self-contained
        name = "image" + job.photo.suffix.lower()
        with atomic_output(folder / name, "wb") as f:
            f.write(job.photo.read_bytes())
        tiles.append({"title": "image", "src": f"{TILES_DIRNAME}/{stem}/{name}", "kind": "image"})
    gt_ids = gt_set.read_ids(job.ann)
    if photo is not None and photo.shape[:2] != gt_ids.shape:
        from ..errors import InvalidInputError

        raise InvalidInputError(f"{job.photo} is {photo.shape[1]}x{photo.shape[0]} but its panoptic PNG "
                                f"{gt_set.png_path(job.ann)} is {gt_ids.shape[1]}x{gt_ids.shape[0]}; the PNG must "
                                "have the photo's size")
    pred_ids = [p.read_ids(a) for p, a in zip(pred_sets, pred_anns)]
    for k, (pset, ann, ids, rec) in enumerate(zip(pred_sets, pred_anns, pred_ids, records)):
        segs = rec["segments"]["pred"]
        tile = render_overlay(photo, ids, ann["segments_info"], categories, viz,
                              colors=_segment_colors(segs, categories, gt=False, salt=k))
        name = f"set-{k + 1}.png"
        write_png_atomic(folder / name, tile)
        tiles.append({"title": None, "src": f"{TILES_DIRNAME}/{stem}/{name}", "kind": "pred", "set": k,
                      "segments": segs, "runs": segment_runs(ids, [s["id"] for s in segs])})
    # the GT segments as each set saw them: the same ids and areas, one outcome per set
    gt_segs = [dict(seg, per_set=[rec["segments"]["gt"][i] for rec in records])
               for i, seg in enumerate(records[0]["segments"]["gt"])]
    tile = render_overlay(photo, gt_ids, job.ann["segments_info"], categories, viz,
                          colors=_segment_colors(gt_segs, categories, gt=True))
    write_png_atomic(folder / "gt.png", tile)
    tiles.append({"title": GT_TITLE, "src": f"{TILES_DIRNAME}/{stem}/gt.png", "kind": "gt", "segments": gt_segs,
                  "runs": segment_runs(gt_ids, [s["id"] for s in gt_segs])})
    change_src = None
    changed = 0
    if len(pred_sets) >= 2:
        cats = [{s["id"]: s["category_id"] for s in a["segments_info"]} for a in (pred_anns[0], pred_anns[-1])]
        mask = changed_pixels(pred_ids[0], cats[0], pred_ids[-1], cats[1])
        changed = int(mask.sum())
        layer = np.zeros(mask.shape + (4,), dtype=np.uint8)
        layer[mask] = CHANGE_COLOR
        _write_rgba_png(folder / "changes.png", layer)
        change_src = f"{TILES_DIRNAME}/{stem}/changes.png"
    pqs = [rec["All"]["pq"] for rec in records]
    delta = pqs[-1] - pqs[0] if len(pqs) >= 2 and pqs[0] is not None and pqs[-1] is not None else None
    classes = sorted({s["category_id"] for rec in records for s in rec["segments"]["pred"]}
                     | {s["category_id"] for s in gt_segs})
    return {"order": position, "image_id": job.ann["image_id"], "file_name": job.ann.get("file_name"),
            "height": int(gt_ids.shape[0]), "width": int(gt_ids.shape[1]), "pq": pqs, "delta": delta,
            "outcomes": [rec["outcomes"] for rec in records], "counts": [[rec["tp"], rec["fp"], rec["fn"]]
                                                                         for rec in records],
            "classes": classes, "tiles": tiles, "changes": change_src, "changed_pixels": changed}


# --------------------------------------------------------------------------------------------------------------
# the page


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _signed(value) -> str:
    return "" if value is None else f"{100 * value:+.1f}"


def _delta_class(value) -> str:
    if value is None or abs(value) < 5e-4:
        return "zero"
    return "up" if value > 0 else "down"


def _card_html(card: dict, set_names: Sequence[str]) -> str:
    e = htmlmod.escape
    several = len(set_names) >= 2
    scores = " · ".join(f"{e(n)} PQ <b>{_pct(pq)}</b>" for n, pq in zip(set_names, card["pq"]))
    delta = (f' <span class="delta {_delta_class(card["delta"])}">Δ {_signed(card["delta"]) or "-"}</span>'
             if several else "")
    outcome_line = " → ".join(
        "{missed} missed, {merged} merged, {split} split, {wrong_class} wrong class".format(**o["gt"])
        for o in card["outcomes"])
    figures = []
    for t, tile in enumerate(card["tiles"]):
        if tile["kind"] == "pred":
            title = f"{set_names[tile['set']]} · PQ {_pct(card['pq'][tile['set']])}"
        else:
            title = tile["title"]
        layer = ""
        if card["changes"] and tile["kind"] == "pred" and tile["set"] == len(set_names) - 1:
            layer = f'<img class="changes" src="{e(quote(card["changes"]))}" alt="what changed">'
        hover = ' data-hover="1"' if "segments" in tile else ""
        figures.append(f'<figure class="tile"><div class="frame" data-tile="{t}"{hover}>'
                       f'<img class="panel" src="{e(quote(tile["src"]))}" alt="{e(title)}" loading="lazy" '
                       f'width="{card["width"]}" height="{card["height"]}">{layer}</div>'
                       f'<figcaption>{e(title)}</figcaption></figure>')
    delta_attr = "" if card["delta"] is None else repr(float(card["delta"]))
    pq_attr = "" if card["pq"][-1] is None else repr(float(card["pq"][-1]))
    classes = " ".join(str(c) for c in card["classes"])
    changed = (f' · {card["changed_pixels"]} pixels changed' if card["changes"] else "")
    return (f'<section class="card" data-order="{card["order"]}" data-delta="{delta_attr}" data-pq="{pq_attr}" '
            f'data-classes=" {classes} ">'
            f'<header><span class="name">image {e(str(card["image_id"]))}</span> '
            f'<span class="file">{e(str(card["file_name"]))}</span> <span class="scores">{scores}{delta}</span>'
            f'<div class="outcomes">GT segments: {e(outcome_line)}{changed}</div></header>'
            f'<div class="tiles">{"".join(figures)}</div></section>')


def _legend_html(categories: Sequence[dict], present: set[int]) -> str:
    e = htmlmod.escape
    items = []
    for cat in categories:
        if cat["id"] not in present:
            continue
        r, g, b = category_color(cat)
        kind = "thing" if cat.get("isthing") else "stuff"
        items.append(f'<li data-class="{cat["id"]}" title="show only images with {e(str(cat.get("name")))}">'
                     f'<span class="swatch" style="background: rgb({r}, {g}, {b})"></span>'
                     f'{e(str(cat.get("name", cat["id"])))} <small>{kind}</small></li>')
    return "".join(items)


def report_html(report: EvalReport, cards: Sequence[dict], categories: Sequence[dict], *,
                has_photos: bool) -> str:
    """The page: cards pre-sorted worst delta first (so it reads the same without scripts), controls, legend,
    the data for hovering (a JSON script element) and the inline script."""
    e = htmlmod.escape
    names = [r.name for r in report.results]
    several = len(names) >= 2
    present = {c for card in cards for c in card["classes"]}

    def worst_first(card):
        key = card["delta"] if several else card["pq"][-1]
        return (key is None, key if key is not None else 0.0, card["order"])

    ordered = sorted(cards, key=worst_first)
    totals = " · ".join(f"{e(r.name)} PQ <b>{_pct(r.groups['All']['pq'])}</b>" for r in report.results)
    data = {"sets": names, "gt": GT_TITLE,
            "categories": [{"id": c["id"], "name": str(c.get("name", c["id"])), "isthing": bool(c.get("isthing"))}
                           for c in categories],
            "images": [{"order": c["order"], "width": c["width"], "height": c["height"],
                        "tiles": [{"kind": t["kind"], "set": t.get("set"),
                                   "segments": [[s["id"], s["category_id"], s["area"],
                                                 [[o["outcome"], o["match"], o["iou"], o["best"], o["best_iou"]]
                                                  for o in s.get("per_set", [s])]] for s in t["segments"]],
                                   "runs": t["runs"]} if "segments" in t else {"kind": t["kind"]}
                                  for t in c["tiles"]]} for c in cards]}
    # "</" cannot end the script element early when escaped this way; JSON.parse reads it back unchanged.
    data_json = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    class_options = "".join(f'<option value="{c["id"]}">{e(str(c.get("name", c["id"])))}</option>'
                            for c in categories if c["id"] in present)
    sort_options = (('<option value="delta-asc">Δ PQ, worst first</option>'
                     '<option value="delta-desc">Δ PQ, best first</option>') if several else "") + \
        ('<option value="pq-asc">PQ, lowest first</option><option value="pq-desc">PQ, highest first</option>'
         '<option value="image">image order</option>')
    change_toggle = ('<label><input type="checkbox" id="changes"> what changed '
                     f'({e(names[0])} → {e(names[-1])})</label>') if several else ""
    columns = (["image"] if has_photos else []) + names + [GT_TITLE]
    return _PAGE.format(title=e(" | ".join(columns)), totals=totals, n=len(cards), sort_options=sort_options,
                        class_options=class_options, change_toggle=change_toggle,
                        legend=_legend_html(categories, present),
                        cards="\n".join(_card_html(c, names) for c in ordered), data=data_json, script=_SCRIPT)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>prn report: {title}</title>
<style>
body {{ font-family: sans-serif; margin: 0; background: #f4f4f4; color: #222; }}
#top {{ position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid #ccc; padding: 8px 16px; }}
#top h1 {{ font-size: 18px; margin: 0 0 6px 0; }}
#controls {{ display: flex; gap: 16px; flex-wrap: wrap; align-items: center; font-size: 14px; }}
#legend {{ list-style: none; margin: 6px 0 0 0; padding: 0; display: flex; flex-wrap: wrap; gap: 4px 12px;
  font-size: 13px; }}
#legend li {{ cursor: pointer; white-space: nowrap; }}
#legend li.active {{ font-weight: bold; text-decoration: underline; }}
#legend small {{ color: #777; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; border: 1px solid #555; margin-right: 4px;
  vertical-align: -2px; }}
#cards {{ padding: 8px 16px; }}
.card {{ background: #fff; border: 1px solid #ddd; margin: 0 0 12px 0; padding: 8px; }}
.card header {{ font-size: 14px; margin-bottom: 6px; }}
.card .name {{ font-weight: bold; }}
.card .file, .card .outcomes {{ color: #666; font-size: 12px; }}
.delta {{ font-weight: bold; padding: 0 4px; }}
.delta.up {{ color: #087f23; }} .delta.down {{ color: #c62828; }} .delta.zero {{ color: #666; }}
.tiles {{ display: flex; gap: 4px; flex-wrap: wrap; }}
.tile {{ margin: 0; }}
.frame {{ position: relative; line-height: 0; }}
.frame img {{ width: 256px; height: auto; image-rendering: pixelated; }}
.frame img.changes {{ position: absolute; left: 0; top: 0; display: none; pointer-events: none; }}
body.show-changes .frame img.changes {{ display: block; }}
.frame[data-hover] {{ cursor: crosshair; }}
figcaption {{ font-size: 12px; text-align: center; padding: 2px 0; }}
#tip {{ position: fixed; z-index: 3; display: none; background: rgba(20, 20, 20, 0.92); color: #fff;
  font-size: 12px; padding: 6px 8px; border-radius: 3px; pointer-events: none; white-space: pre; }}
.hidden {{ display: none; }}
</style>
</head>
<body>
<div id="top">
<h1>prn report: {title}</h1>
<div id="controls">
<span>{n} images · {totals}</span>
<label>sort <select id="sort">{sort_options}</select></label>
<label>class <select id="class"><option value="">all classes</option>{class_options}</select></label>
{change_toggle}
<span id="shown"></span>
</div>
<ul id="legend">{legend}</ul>
</div>
<div id="cards">
{cards}
</div>
<div id="tip"></div>
<script type="application/json" id="prn-data">{data}</script>
<script>
{script}
</script>
</body>
</html>
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("prn-data").textContent);
  var categories = {};
  data.categories.forEach(function (c) { categories[c.id] = c; });
  var grid = document.getElementById("cards");
  var cards = Array.prototype.slice.call(grid.querySelectorAll(".card"));
  var images = {};
  data.images.forEach(function (im) { images[im.order] = im; });

  function value(card, name, missing) {
    var text = card.getAttribute("data-" + name);
    return text === "" ? missing : Number(text);
  }
  var keys = {
    "delta-asc": function (c) { return value(c, "delta", Infinity); },
    "delta-desc": function (c) { return -value(c, "delta", -Infinity); },
    "pq-asc": function (c) { return value(c, "pq", Infinity); },
    "pq-desc": function (c) { return -value(c, "pq", -Infinity); },
    "image": function (c) { return Number(c.getAttribute("data-order")); }
  };
  function sortCards(mode) {
    var key = keys[mode];
    var sorted = cards.slice().sort(function (a, b) {
      var ka = key(a), kb = key(b);
      if (ka < kb) { return -1; }
      if (ka > kb) { return 1; }
      return Number(a.getAttribute("data-order")) - Number(b.getAttribute("data-order"));
    });
    sorted.forEach(function (c) { grid.appendChild(c); });
  }
  function filterCards(cls) {
    var shown = 0;
    cards.forEach(function (c) {
      var keep = !cls || c.getAttribute("data-classes").indexOf(" " + cls + " ") >= 0;
      c.classList.toggle("hidden", !keep);
      shown += keep ? 1 : 0;
    });
    document.getElementById("shown").textContent = "showing " + shown + " of " + cards.length;
    Array.prototype.forEach.call(document.querySelectorAll("#legend li"), function (li) {
      li.classList.toggle("active", li.getAttribute("data-class") === cls);
    });
  }
  var sortSelect = document.getElementById("sort");
  var classSelect = document.getElementById("class");
  sortSelect.addEventListener("change", function () { sortCards(sortSelect.value); });
  classSelect.addEventListener("change", function () { filterCards(classSelect.value); });
  Array.prototype.forEach.call(document.querySelectorAll("#legend li"), function (li) {
    li.addEventListener("click", function () {
      var cls = li.getAttribute("data-class");
      classSelect.value = classSelect.value === cls ? "" : cls;
      filterCards(classSelect.value);
    });
  });
  var toggle = document.getElementById("changes");
  if (toggle) {
    toggle.addEventListener("change", function () {
      document.body.classList.toggle("show-changes", toggle.checked);
    });
  }

  // hovering: decode a tile's runs once, then find the run that holds the pixel (binary search)
  function decode(tile) {
    if (tile.starts) { return; }
    var bytes = atob(tile.runs);
    var words = new Uint16Array(bytes.length / 2);
    for (var i = 0; i < words.length; i++) {
      words[i] = bytes.charCodeAt(2 * i) | (bytes.charCodeAt(2 * i + 1) << 8);
    }
    var n = words.length / 2;
    tile.starts = new Float64Array(n);
    tile.values = new Uint16Array(n);
    var at = 0;
    for (var r = 0; r < n; r++) {
      tile.starts[r] = at;
      tile.values[r] = words[2 * r];
      at += words[2 * r + 1];
    }
  }
  function segmentAt(tile, index) {
    decode(tile);
    var lo = 0, hi = tile.starts.length - 1;
    while (lo < hi) {
      var mid = (lo + hi + 1) >> 1;
      if (tile.starts[mid] <= index) { lo = mid; } else { hi = mid - 1; }
    }
    var v = tile.values[lo];
    return v ? tile.segments[v - 1] : null;
  }
  function describe(tile, seg) {
    var cat = categories[seg[1]] || {name: String(seg[1]), isthing: false};
    var owner = tile.kind === "gt" ? data.gt : data.sets[tile.set];
    var lines = [owner + ": " + cat.name + (cat.isthing ? " (thing)" : " (stuff)"),
                 "id " + seg[0] + ", area " + seg[2] + " px"];
    var other = tile.kind === "gt" ? "segment" : "GT segment";
    seg[3].forEach(function (o, k) {
      var head = tile.kind === "gt" ? data.sets[k] + ": " : "";
      var text = head + o[0].replace("_", " ");
      if (o[1] !== null) {
        text += ", matches " + other + " " + o[1] + ", IoU " + o[2].toFixed(3);
      } else if (o[3] !== null) {
        text += ", best overlap " + other + " " + o[3] + ", IoU " + o[4].toFixed(3);
      }
      lines.push(text);
    });
    return lines.join("\n");
  }
  var tip = document.getElementById("tip");
  Array.prototype.forEach.call(document.querySelectorAll(".frame[data-hover]"), function (frame) {
    var card = frame.closest(".card");
    var image = images[Number(card.getAttribute("data-order"))];
    var tile = image.tiles[Number(frame.getAttribute("data-tile"))];
    frame.addEventListener("mousemove", function (event) {
      var box = frame.getBoundingClientRect();
      var x = Math.floor((event.clientX - box.left) * image.width / box.width);
      var y = Math.floor((event.clientY - box.top) * image.height / box.height);
      if (x < 0 || y < 0 || x >= image.width || y >= image.height) { tip.style.display = "none"; return; }
      var seg = segmentAt(tile, y * image.width + x);
      tip.textContent = seg ? describe(tile, seg) : "void";
      tip.style.display = "block";
      // beside the pointer, on the side where it fits
      var left = event.clientX + 14, top = event.clientY + 14;
      if (left + tip.offsetWidth > window.innerWidth) { left = Math.max(0, event.clientX - 14 - tip.offsetWidth); }
      if (top + tip.offsetHeight > window.innerHeight) { top = Math.max(0, event.clientY - 14 - tip.offsetHeight); }
      tip.style.left = left + "px";
      tip.style.top = top + "px";
    });
    frame.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  });
  sortCards(sortSelect.value);
  filterCards("");
})();
"""


__all__ = ["ReportOptions", "write_report", "report_html", "segment_runs", "changed_pixels", "HTML_NAME",
           "MARKER_NAME", "TILES_DIRNAME"]
