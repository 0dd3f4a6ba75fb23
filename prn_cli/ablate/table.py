"""The table: table.json's content from the per-seed results, its Markdown (table.md) and the Rich table.

With several seeds every PRN row gives the mean and the sample standard deviation (ddof 1; 0 with one seed) of
PQ / PQth / PQst over its seeds, and its deltas are the differences of the means to the base row (which is
evaluated once: it does not train).

Every PRN row but ForegroundSem is also compared with the row it adds one part to (rows.paired_reference), seed by
seed: a seed fixes the training samples, their order and their augmentation (engine.py), so the two runs of one
seed differ in the switch and in the initial weights only, and the spread of the differences is what tells
whether the switch changes anything. Rows whose means lie within each other's spread can still differ by more
than the spread of their paired differences.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Mapping, Sequence

from .folder import FORMAT_VERSION, TABLE_JSON, TABLE_MD
from .options import AblationOptions
from .rows import BASE_ROW, TABLE1_ROWS, paired_reference

#: the scores every result holds, and the ones whose mean and std the table gives
SCORES = ("pq", "sq", "rq", "pq_th", "sq_th", "rq_th", "pq_st", "sq_st", "rq_st")
SPREAD = ("pq", "pq_th", "pq_st")

MD_COLUMNS = ("Method", "Foreground", "ForegroundSem", "CoordConvDec", "CoordConvEnc", "PredBbox", "PQ", "PQth",
              "PQst", "ΔPQ vs base", "ΔPQ vs its reference row, seed by seed", "Paper PQ (COCO)")


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """The mean and the sample standard deviation (ddof 1; 0.0 for one value) of the values that are not None."""
    known = [float(v) for v in values if v is not None]
    if not known:
        return None, None
    return statistics.fmean(known), (statistics.stdev(known) if len(known) > 1 else 0.0)


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def paired_deltas(found: Sequence[dict], reference: Sequence[dict]) -> dict | None:
    """The differences of a row's results to its reference row's, seed by seed, over the seeds both have:
    ``{"seeds": [...], "pq": mean, "pq_std": sample std, ...}`` for PQ / PQth / PQst (None: no common seed)."""
    theirs = {r.get("seed"): r for r in reference}
    pairs = [(r, theirs[r.get("seed")]) for r in found if r.get("seed") in theirs]
    if not pairs:
        return None
    out: dict = {"seeds": [r.get("seed") for r, _ in pairs]}
    for key in SPREAD:
        out[key], out[f"{key}_std"] = mean_std([_delta(a.get(key), b.get(key)) for a, b in pairs])
    return out


def build_table(results: Mapping[str, Sequence[dict]], options: AblationOptions, val_images: int) -> dict:
    """table.json's content: one entry per Table 1 row that has a result, in table order. ``results`` maps a
    row's slug to its result.json contents (the base row: one; a PRN row: one per seed, in seed order)."""
    base_results = results.get(BASE_ROW.slug) or []
    base = {k: mean_std([r.get(k) for r in base_results])[0] for k in SPREAD}
    entries = []
    for row in TABLE1_ROWS:
        found = list(results.get(row.slug) or [])
        if not found:
            continue
        entry = {"row": row.index, "slug": row.slug, "method": "PRN" if row.prn else "Base", "prn": row.prn,
                 **row.switches.given(), **row.postprocess.given(), "marks": row.marks, "seeds": len(found),
                 "per_seed": [{"seed": r.get("seed"), **{k: r.get(k) for k in SCORES},
                               "train_steps": (r.get("train") or {}).get("steps")} for r in found]}
        for key in SCORES:
            mean, std = mean_std([r.get(key) for r in found])
            entry[key] = mean
            if key in SPREAD:
                entry[f"{key}_std"] = std
        for key in SPREAD:
            entry[f"delta_{key}"] = _delta(entry[key], base[key])
        reference = paired_reference(row)
        paired = paired_deltas(found, results.get(reference.slug) or []) if reference else None
        entry["paired"] = {"against": reference.slug, "method": _method_name(reference), **paired} if paired else None
        entry["paper"] = {"method": row.method, "pq": row.paper_pq / 100, "pq_th": row.paper_pq_th / 100,
                          "pq_st": row.paper_pq_st / 100,
                          "delta_pq": round(row.paper_pq - BASE_ROW.paper_pq, 1) / 100}
        entry["train_steps"] = entry["per_seed"][0]["train_steps"]
        entries.append(entry)
    record = options.record()
    return {"format": FORMAT_VERSION, "table": "Table 1 of the PRN supplementary (docs/design.md)",
            "units": "PQ, SQ, RQ, their standard deviations and the deltas as fractions (0-1); a PRN row gives the "
                     "mean over its seeds and the sample std (ddof 1, 0 with one seed), its deltas are differences "
                     "of the means to the base row; 'paired': the row minus its reference row seed by seed, mean "
                     "and sample std over the seeds both have; the paper's figures are COCO val",
            "val": record["val"], "val_images": val_images,
            "base": record["val_base"] if options.val_base else {"weights": record["base_weights"]},
            "seeds": options.seed_values, "options": record, "rows": entries}


def _method_name(row) -> str:
    """A row's name as the table's text gives it: the ticked column of ForegroundSem and Foreground."""
    return {"fgsem": "ForegroundSem", "fg": "Foreground"}.get(row.slug, row.slug)


def _paired_score(entry: dict, sep: str = " ± ") -> str:
    """The row's paired PQ difference, ``+0.12 ± 0.05`` (percent, two decimals: the differences it resolves are
    tenths; ± std with several common seeds), or "" without one."""
    paired = entry.get("paired")
    if not paired or paired["pq"] is None:
        return ""
    spread = f"{sep}{100 * paired['pq_std']:.2f}" if len(paired["seeds"]) > 1 else ""
    return f"{100 * paired['pq']:+.2f}{spread}"


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _score(entry: dict, key: str, sep: str = " ± ") -> str:
    """``mean ± std`` (percent) for a row of several seeds, the plain number otherwise."""
    if entry["seeds"] > 1 and entry[key] is not None:
        return f"{_fmt(entry[key])}{sep}{_fmt(entry[f'{key}_std'])}"
    return _fmt(entry[key])


def _fewer_seeds(table: dict) -> list[dict]:
    return [e for e in table["rows"] if e["prn"] and e["seeds"] < len(table["seeds"])]


def table_markdown(table: dict) -> str:
    seeds = table["seeds"]
    lines = [f"PRN ablation (Table 1, docs/design.md) on {table['val']} ({table['val_images']} images); "
             "PQ in percent" + (f", PRN rows as mean ± sample std over {len(seeds)} seeds" if len(seeds) > 1 else "")
             + "; the paper's COCO val PQ (and its gain over MS-PFPN) for reference.", "",
             "| " + " | ".join(MD_COLUMNS) + " |", "|" + "---|" * len(MD_COLUMNS)]
    for e in table["rows"]:
        marks = ["✓" if e["marks"][c] else "" for c in MD_COLUMNS[1:6]]
        paper = e["paper"]
        paper_text = f"{100 * paper['pq']:.1f}" + (f" ({100 * paper['delta_pq']:+.1f})" if e["prn"] else "")
        paired = _paired_score(e)
        cells = [e["method"], *marks, _score(e, "pq"), _score(e, "pq_th"), _score(e, "pq_st"),
                 _fmt(e["delta_pq"], True) if e["prn"] else "",
                 f"{paired} vs {e['paired']['method']}" if paired else "", paper_text]
        lines.append("| " + " | ".join(cells) + " |")
    o = table["options"]
    training, schedule = o["training"], o["schedule"]
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
    lines += ["", f"PRN {training['arch']}, {schedule['iters']} iterations, batch {schedule['batch_size']}, "
              f"lr {schedule['lr']}, crop {training['crop']}, {seed_text}; training data {o['data']}"
              + (f"; post-processing {_plain_overrides(o['postprocess'])}" if o.get("postprocess") else "")
              + (f"; every PRN row refined with the boundary refiner and thing classifier of "
                 f"{o['extensions_from']['path']}" if o.get("extensions_from") else "") + "."]
    if any(e.get("paired") for e in table["rows"]):
        lines.append("ΔPQ vs its reference row: the row's PQ minus that of the row it adds one part to, seed by seed "
                     "(one seed gives both the same training samples in the same order)"
                     + (", mean ± sample std over the seeds both have." if len(seeds) > 1 else "."))
    fewer = _fewer_seeds(table)
    if fewer:
        lines.append("Rows with fewer seeds so far: " + ", ".join(f"{e['slug']} ({e['seeds']} of {len(seeds)})"
                                                                 for e in fewer) + ".")
    return "\n".join(lines) + "\n"


def _plain_overrides(overrides: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(overrides.items()))


def write_table(run: Path, table: dict) -> tuple[Path, Path]:
    """Write RUN/table.md and RUN/table.json (each atomically)."""
    from ..io import atomic_output, write_json_atomic

    md, js = Path(run) / TABLE_MD, Path(run) / TABLE_JSON
    with atomic_output(md) as f:
        f.write(table_markdown(table))
    write_json_atomic(js, table)
    return md, js


def ablation_table(table: dict):
    """A Rich table of table.json's rows: the switches, PQ / PQth / PQst (with several seeds: their means, PQ as
    mean±std; table.md has every std), the gain over the base and the paired difference to the reference row (green
    up, red down), and the paper's COCO PQ; narrow enough for an 80-column terminal."""
    from rich import box
    from rich.table import Table

    def delta(value):
        if value is None:
            return "-"
        text = _fmt(value, True)
        if abs(value) < 5e-4:
            return text
        return f"[{'green' if value > 0 else 'red'}]{text}[/]"

    def paired(entry):
        text = _paired_score(entry, "±")
        if not text or abs(entry["paired"]["pq"]) < 5e-5:
            return text
        return f"[{'green' if entry['paired']['pq'] > 0 else 'red'}]{text}[/]"

    seeds = table.get("seeds") or [None]
    spread = f"; PRN rows: mean over {len(seeds)} seeds, PQ±std" if len(seeds) > 1 else ""
    caption = ("Fg Foreground, Sem ForegroundSem, Dec/Enc CoordConv in the decoder/encoder, Box PredBbox; ΔPQ "
               "against the base; Δref: PQ minus that of the row it adds one part to (Fg for Dec, Enc and Box; Sem "
               f"for Fg), seed by seed{', mean±std' if len(seeds) > 1 else ''}; COCO: the paper's PQ{spread}")
    t = Table(title=f"PRN ablation (Table 1), {table['val_images']} val image(s)", title_justify="left",
              box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0), caption=caption, caption_justify="left")
    # no Method column: row 1 is the base and every other row PRN, which the section line shows
    for name, justify in (("#", "right"), ("Fg", "center"), ("Sem", "center"), ("Dec", "center"),
                          ("Enc", "center"), ("Box", "center"), ("PQ", "right"), ("PQth", "right"),
                          ("PQst", "right"), ("ΔPQ", "right"), ("Δref", "right"), ("COCO", "right")):
        t.add_column(name, justify=justify, no_wrap=True)
    for e in table["rows"]:
        marks = ["✓" if e["marks"][c] else "" for c in MD_COLUMNS[1:6]]
        t.add_row(str(e["row"]), *marks, _score(e, "pq", "±"), _fmt(e["pq_th"]), _fmt(e["pq_st"]),
                  delta(e["delta_pq"]) if e["prn"] else "", paired(e), f"{100 * e['paper']['pq']:.1f}",
                  end_section=not e["prn"])
    return t
