"""Training curves of a run as one PNG (``prn info RUN_DIR`` writes ``RUN_DIR/curves.png``), drawn with Pillow
from ``metrics.jsonl``, for people without TensorBoard: the losses (log scale), the learning rate and, when the
run validated, val PQ / PQth / PQst (and the base's PQ for PRN runs)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import fail

CURVES_NAME = "curves.png"
_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
_CHART = (520, 300)          # width, height of one chart
_MARGIN = (64, 16, 34, 30)   # left, right, top, bottom: room for the title and the axis labels


def read_metrics(path: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(training lines, validation lines) of a ``metrics.jsonl``; a line cut by an interruption ends it."""
    train, val = [], []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(path, f"cannot be read ({exc.strerror or exc})", "name a run folder written by prn train") from None
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            break
        if not isinstance(record, dict) or "step" not in record:
            continue
        (val if isinstance(record.get("val"), dict) else train).append(record)
    return train, val


def _series(records: Sequence[dict], keys: Sequence[str], source=lambda r: r) -> list[tuple[str, list, list]]:
    out = []
    for key in keys:
        points = [(r["step"], source(r).get(key)) for r in records]
        points = [(x, float(y)) for x, y in points if isinstance(y, (int, float)) and math.isfinite(y)]
        if points:
            out.append((key, [p[0] for p in points], [p[1] for p in points]))
    return out


def _format(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.1e}"
    return f"{value:.3g}"


def _chart(title: str, series: list[tuple[str, list, list]], *, log: bool = False, markers: bool = False):
    """One chart: the series as lines over a light grid, min/max on the axes, a legend under the title;
    ``markers``: a dot on every point as well (validations are few)."""
    from PIL import Image, ImageDraw

    from .visualize.text import get_font

    width, height = _CHART
    left, right, top, bottom = _MARGIN
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = get_font(12)
    draw.text((left, 4), title, fill=(0, 0, 0), font=get_font(14))
    xs = [x for _, sx, _ in series for x in sx]
    ys = [y for _, _, sy in series for y in sy if not log or y > 0]
    if not xs or not ys:
        draw.text((left, height // 2), "no data", fill=(120, 120, 120), font=font)
        return image
    # the legend first (wrapped into rows), so that the plot starts below it
    legend, x, row = [], left, 0
    for k, (name, _, _) in enumerate(series):
        label = name.removeprefix("loss_")
        room = 17 + draw.textlength(label, font=font) + 12
        if x + room > width - right and x > left:
            x, row = left, row + 1
        legend.append((x, top + 16 * row, label, _PALETTE[k % len(_PALETTE)]))
        x += room
    for lx, ly, label, colour in legend:
        draw.line([(lx, ly + 7), (lx + 14, ly + 7)], fill=colour, width=3)
        draw.text((lx + 17, ly), label, fill=(40, 40, 40), font=font)
    transform = (lambda v: math.log10(v)) if log else (lambda v: v)
    x0, x1 = min(xs), max(xs)
    y0, y1 = transform(min(ys)), transform(max(ys))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) * 0.1 or 1), y1 + (abs(y1) * 0.1 or 1)
    plot = (left, top + 16 * (row + 1), width - right, height - bottom)

    def to_px(x, y):
        px = plot[0] + (x - x0) / (x1 - x0) * (plot[2] - plot[0])
        py = plot[3] - (transform(y) - y0) / (y1 - y0) * (plot[3] - plot[1])
        return px, py

    for k in range(5):   # grid and y labels
        fy = y0 + (y1 - y0) * k / 4
        py = plot[3] - (plot[3] - plot[1]) * k / 4
        draw.line([(plot[0], py), (plot[2], py)], fill=(230, 230, 230))
        label = _format(10 ** fy if log else fy)
        tw = draw.textlength(label, font=font)
        draw.text((plot[0] - 6 - tw, py - 7), label, fill=(80, 80, 80), font=font)
    draw.rectangle(plot, outline=(160, 160, 160))
    for x in (x0, x1):
        label = f"step {int(x)}" if x == x1 else str(int(x))
        tw = draw.textlength(label, font=font)
        px = to_px(x, 10 ** y0 if log else y0)[0]
        draw.text((min(px - tw / 2, width - right - tw) if x == x1 else px, plot[3] + 6), label,
                  fill=(80, 80, 80), font=font)
    for k, (name, sx, sy) in enumerate(series):
        colour = _PALETTE[k % len(_PALETTE)]
        points = [to_px(x, y) for x, y in zip(sx, sy) if not log or y > 0]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        if len(points) <= 12 if markers else len(points) == 1:
            for px, py in points:
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
    return image


def plot_curves(metrics_path: str | os.PathLike) -> np.ndarray:
    """The curves of one run, (H, W, 3) uint8: losses | learning rate on the first row, val PQ below when the
    run validated."""
    from PIL import Image

    train, val = read_metrics(metrics_path)
    if not train and not val:
        raise fail(metrics_path, "holds no training steps yet", "wait for the first log line (every --log-every "
                   "steps), or name another run")
    loss_keys = ["total"] + sorted({k for r in train for k in r if k.startswith("loss")})
    charts = [_chart("losses (log scale)", _series(train, loss_keys), log=True),
              _chart("learning rate", _series(train, ["lr"]))]
    if val:
        val_keys = [k for k in ("pq", "pq_th", "pq_st", "base_pq") if any(k in r["val"] for r in val)]
        charts.append(_chart("val PQ (%)", _series(val, val_keys, source=lambda r: r["val"]), markers=True))
    columns = 2
    rows = (len(charts) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * _CHART[0], rows * _CHART[1]), (255, 255, 255))
    for k, chart in enumerate(charts):
        sheet.paste(chart, ((k % columns) * _CHART[0], (k // columns) * _CHART[1]))
    return np.asarray(sheet).copy()


def training_summary(metrics_path: str | os.PathLike) -> dict:
    """Steps logged, the last window's losses and LR, and the last and best validation (by PQ)."""
    train, val = read_metrics(metrics_path)
    last = train[-1] if train else {}
    best = max((r for r in val if isinstance(r["val"].get("pq"), (int, float))), key=lambda r: r["val"]["pq"],
               default=None)
    return {"steps": last.get("step"), "lr": last.get("lr"), "total_loss": last.get("total"),
            "losses": {k: v for k, v in last.items() if k.startswith("loss")},
            "elapsed_s": last.get("elapsed_s"), "val_last": val[-1] if val else None, "val_best": best}


__all__ = ["CURVES_NAME", "read_metrics", "plot_curves", "training_summary"]
