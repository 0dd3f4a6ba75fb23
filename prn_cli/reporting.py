"""Rich tables and JSON for PQ reports (the presentation half of ``prn eval``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from .evaluate import GROUPS, GT_OUTCOMES, EvalReport, image_deltas, outcome_totals


def _pct(value: Any, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _delta_style(value: Any) -> str:
    if value is None or abs(value) < 5e-4:
        return ""
    return "green" if value > 0 else "red"


def summary_table(report: EvalReport) -> Table:
    """One prediction: the reference's layout (groups x PQ SQ RQ N, percent). Several: a column per set + deltas."""
    results = report.results
    if len(results) == 1:
        r = results[0]
        table = Table(title=f"PQ of {r.name}", title_justify="left")
        table.add_column("")
        for col in ("PQ", "SQ", "RQ", "N"):
            table.add_column(col, justify="right")
        for g in GROUPS:
            v = r.groups[g]
            table.add_row(g, _pct(v["pq"]), _pct(v["sq"]), _pct(v["rq"]), str(v["n"]))
        return table
    base = results[0]
    table = Table(title=f"PQ, deltas against {base.name}", title_justify="left")
    table.add_column("")
    table.add_column("")
    for r in results:
        table.add_column(r.name, justify="right")
    for r in results[1:]:
        table.add_column(f"Δ {r.name}", justify="right")
    for g in GROUPS:
        for k, metric in enumerate(("pq", "sq", "rq", "n")):
            cells = [g if k == 0 else "", metric.upper()]
            values = [r.groups[g][metric] for r in results]
            if metric == "n":
                cells += [str(v) for v in values] + [f"{v - values[0]:+d}" for v in values[1:]]
            else:
                cells += [_pct(v) for v in values]
                for v in values[1:]:
                    d = None if v is None or values[0] is None else v - values[0]
                    style = _delta_style(d)
                    cells.append(f"[{style}]{_pct(d, True)}[/{style}]" if style else _pct(d, True))
            table.add_row(*cells, end_section=(metric == "n"))
    return table


def per_class_table(report: EvalReport) -> Table:
    """Per category (GT order): PQ SQ RQ TP FP FN of each set; categories with no segment anywhere are left out."""
    results = report.results
    several = len(results) > 1
    table = Table(title="Per class" + (f" (PQ; deltas against {results[0].name})" if several else ""),
                  title_justify="left")
    for col, justify in (("id", "right"), ("category", "left"), ("kind", "left")):
        table.add_column(col, justify=justify)
    if several:
        for r in results:
            table.add_column(f"PQ {r.name}", justify="right")
        for r in results[1:]:
            table.add_column(f"Δ {r.name}", justify="right")
    else:
        for col in ("PQ", "SQ", "RQ", "TP", "FP", "FN"):
            table.add_column(col, justify="right")
    hidden = 0
    for cat in report.categories:
        cid = cat["id"]
        rows = [r.per_class[cid] for r in results]
        if all(v["tp"] + v["fp"] + v["fn"] == 0 for v in rows):
            hidden += 1
            continue
        kind = "thing" if cat.get("isthing") == 1 else "stuff"
        cells = [str(cid), str(cat.get("name", cid)), kind]
        if several:
            cells += [_pct(v["pq"]) for v in rows]
            for v in rows[1:]:
                d = v["pq"] - rows[0]["pq"]
                style = _delta_style(d)
                cells.append(f"[{style}]{_pct(d, True)}[/{style}]" if style else _pct(d, True))
        else:
            v = rows[0]
            cells += [_pct(v["pq"]), _pct(v["sq"]), _pct(v["rq"]), str(v["tp"]), str(v["fp"]), str(v["fn"])]
        table.add_row(*cells)
    if hidden:
        table.caption = f"{hidden} categories with no segment in the ground truth or any prediction are not shown"
    return table


_OUTCOME_LABELS = {"matched": "matched (TP)", "wrong_class": "wrong class", "merged": "merged with another",
                   "split": "split into pieces", "mislocated": "mislocated (0.1 <= IoU <= 0.5)",
                   "missed": "missed", "crowd": "crowd (not counted)"}


def outcomes_table(report: EvalReport) -> Table:
    """What happened to the GT segments, counted over the set, a column per prediction set (``per_image``)."""
    results = report.results
    table = Table(title="Ground-truth segments: what each prediction set made of them", title_justify="left")
    table.add_column("outcome")
    totals = [outcome_totals(r.per_image or [])["gt"] for r in results]
    for r in results:
        table.add_column(r.name, justify="right")
    for r in results[1:]:
        table.add_column(f"Δ {r.name}", justify="right")
    for name in GT_OUTCOMES:
        values = [t[name] for t in totals]
        table.add_row(_OUTCOME_LABELS[name], *[str(v) for v in values], *[f"{v - values[0]:+d}" for v in values[1:]])
    return table


def images_table(report: EvalReport, rows: int = 10) -> Table:
    """Per image PQ: with several sets the images where they differ most (largest |ΔPQ| first), with one set the
    images with the lowest PQ; each set's TP/FP/FN and the GT segments it missed / merged / split / mislabelled."""
    results = report.results
    several = len(results) > 1
    if several:
        order = [(row["image_id"]) for row in image_deltas(report)]
        title = f"Images where the sets differ most (PQ, deltas against {results[0].name})"
    else:
        records = results[0].per_image or []
        ranked = sorted(range(len(records)), key=lambda k: (records[k]["All"]["pq"] is None,
                                                             records[k]["All"]["pq"] or 0.0, k))
        order = [records[k]["image_id"] for k in ranked]
        title = f"Images with the lowest PQ of {results[0].name}"
    position = {rec["image_id"]: k for k, rec in enumerate(results[0].per_image or [])}
    table = Table(title=title, title_justify="left")
    table.add_column("image", justify="right")
    for r in results:
        table.add_column(f"PQ {r.name}", justify="right")
    for r in results[1:]:
        table.add_column(f"Δ {r.name}", justify="right")
    arrow = " → " if several else ""
    table.add_column("TP/FP/FN", justify="right")
    table.add_column("GT missed/merged/split/class", justify="right")
    shown = order[:max(0, rows)]
    for image_id in shown:
        recs = [r.per_image[position[image_id]] for r in results]
        pqs = [rec["All"]["pq"] for rec in recs]
        cells = [str(image_id)] + [_pct(v) for v in pqs]
        for v in pqs[1:]:
            d = None if v is None or pqs[0] is None else v - pqs[0]
            style = _delta_style(d)
            cells.append(f"[{style}]{_pct(d, True)}[/{style}]" if style else _pct(d, True))
        cells.append(arrow.join(f"{rec['tp']}/{rec['fp']}/{rec['fn']}" for rec in recs))
        cells.append(arrow.join("{missed}/{merged}/{split}/{wrong_class}".format(**rec["outcomes"]["gt"])
                                for rec in recs))
        table.add_row(*cells)
    if len(order) > len(shown):
        table.caption = (f"{len(order) - len(shown)} more image(s) in the --json output (per_image"
                         + (", image_deltas)" if several else ")"))
    return table


def show_report(report: EvalReport, *, per_class: bool = False, json_out: str | None = None,
                out: Console | None = None, err: Console | None = None, image_rows: int | None = None) -> None:
    """Print the tables (stdout; stderr when the JSON goes to stdout), warnings (stderr), and write the JSON.
    ``image_rows``: with a per-image report, the rows of the per-image table (and the outcomes table)."""
    from .console import emit_json, stderr, stdout, warn

    out = out or stdout
    err = err or stderr
    tables_to = err if json_out == "-" else out
    for line in report.warnings:
        warn(line)
    for r in report.results:
        for line in r.warnings:
            warn(line)
    tables_to.print(summary_table(report))
    if per_class:
        tables_to.print(per_class_table(report))
    if image_rows is not None and all(r.per_image is not None for r in report.results):
        tables_to.print(outcomes_table(report))
        tables_to.print(images_table(report, image_rows))
    emit_json(report.to_dict(), json_out)


_CHANGE_ROWS = (("segments_base", "segments in the base"), ("segments_refined", "segments after refining"),
                ("added", "added"), ("removed", "removed"), ("split", "split (one base segment -> several)"),
                ("merged", "merged (several base segments -> one)"), ("relabelled", "relabelled (same mask, "
                "other class)"))


def changes_table(changes: dict, images: int) -> Table:
    """What ``prn refine`` changed, summed over ``images`` images (keys of ``refine.CHANGE_KEYS``)."""
    table = Table(title=f"prn refine: changes over {images} image(s)", title_justify="left")
    table.add_column("change")
    table.add_column("count", justify="right")
    for key, label in _CHANGE_ROWS:
        table.add_row(label, str(changes.get(key, 0)))
    pixels = max(1, changes.get("pixels", 0))
    table.add_row("pixels changed", f"{changes.get('pixels_changed', 0)} ({100 * changes.get('pixels_changed', 0) / pixels:.1f}%)")
    return table


def show_changes(changes: dict, images: int, out: Console | None = None) -> None:
    from .console import stdout

    (out or stdout).print(changes_table(changes, images))


def checkpoint_table(info: dict) -> Table:
    """``checkpoint.describe_checkpoint``'s summary as a table: facts first, then one row per category."""
    title = f"{info['path']} ({'MS-PanopticFPN' if info['kind'] == 'base' else 'PRN'})"
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("")
    bb = info.get("backbone") or {}
    table.add_row("backbone", f"ResNet-{bb.get('depth', '?')}, width {bb.get('width', '?')}, {bb.get('norm', '?')}")
    table.add_row("parameters", f"{info['parameters'] / 1e6:.2f} M")
    if info.get("step") is not None:
        table.add_row("training step", str(info["step"]))
    for key, value in (info.get("switches") or {}).items():
        table.add_row(key, "on" if value else "off")
    for key, channels in (info.get("refiners") or {}).items():
        table.add_row(f"{key} refiner", f"{channels} channels" if channels else "none")
    if "thing_classifier" in info:
        widths = info["thing_classifier"]
        table.add_row("thing classifier", (" / ".join(map(str, widths)) + " channels"
                                           + (", with a 'no thing' class" if info.get("thing_classifier_background")
                                              else "")) if widths else "none")
    post = info.get("postprocess") or {}
    if post:
        table.add_row("post-processing", ", ".join(f"{k}={v}" for k, v in post.items() if k != "chunk_elements"))
    cats = info["categories"]
    table.add_row("categories", ", ".join(f"{c['id']} {c['name']}{'' if c['isthing'] else ' (stuff)'}" for c in cats))
    data = info.get("training_data")
    if data:
        size = f", {data['mean'][0]:.0f} px on the long side" if data.get("mean") else ""
        table.add_row("trained on", f"{data.get('description') or data.get('source')}: {data.get('images')} images, "
                      f"{data.get('categories')} categories ({data.get('things')} thing){size}")
    else:
        table.add_row("trained on", "not recorded (a checkpoint from before prn recorded its training data)")
    if info.get("intended_use"):
        table.add_row("[bold]intended use[/bold]", info["intended_use"])
    return table
