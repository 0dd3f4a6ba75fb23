"""The rows of Table 1 (docs/design.md, "Table 1 and prn ablate"): each row's PRN switches, its post-processing
and the paper's figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import UsageError
from ..options import PostProcessOverrides, PRNSwitches


@dataclass(frozen=True)
class AblationRow:
    """One row of Table 1: the PRN switches, the post-processing, and the paper's COCO val figures (percent)."""

    index: int                      # 1-based row number in Table 1
    slug: str                       # folder name under RUN/rows/ and the name --rows takes
    method: str                     # as in the paper's table
    prn: bool                       # False for row 1 (the base, no PRN)
    foreground_head: bool = False
    coordconv_decoder: bool = False
    coordconv_encoder: bool = False
    box_head: bool = False
    foreground_source: str = "foreground"
    use_pred_bbox: bool = False
    paper_pq: float = 0.0
    paper_pq_th: float = 0.0
    paper_pq_st: float = 0.0

    @property
    def marks(self) -> dict[str, bool]:
        """The ticks of the paper's table columns."""
        return {"Foreground": self.prn and self.foreground_head and self.foreground_source == "foreground",
                "ForegroundSem": self.prn and self.foreground_source == "semantic",
                "CoordConvDec": self.coordconv_decoder, "CoordConvEnc": self.coordconv_encoder,
                "PredBbox": self.use_pred_bbox}

    @property
    def switches(self) -> PRNSwitches:
        """The row's network switches, every one of them set."""
        return PRNSwitches(foreground_head=self.foreground_head, coordconv_decoder=self.coordconv_decoder,
                           coordconv_encoder=self.coordconv_encoder, box_head=self.box_head)

    @property
    def postprocess(self) -> PostProcessOverrides:
        """The row's own post-processing: where the foreground comes from, and PredBbox grouping."""
        return PostProcessOverrides(foreground_source=self.foreground_source, use_pred_bbox=self.use_pred_bbox)


def _prn(index, slug, *, fg=True, sem=False, dec=False, enc=False, bbox=False, paper=(0.0, 0.0, 0.0)):
    return AblationRow(index, slug, "PRN", True, foreground_head=fg, coordconv_decoder=dec, coordconv_encoder=enc,
                       box_head=bbox, foreground_source="semantic" if sem else "foreground", use_pred_bbox=bbox,
                       paper_pq=paper[0], paper_pq_th=paper[1], paper_pq_st=paper[2])


#: Table 1 (docs/design.md, "Table 1 and prn ablate"), in order. Row 1 is the base; ForegroundSem is a PRN
#: without the foreground branch whose post-processing takes the foreground from the semantic branch.
TABLE1_ROWS: tuple[AblationRow, ...] = (
    AblationRow(1, "base", "MS-PFPN", False, foreground_source="foreground", paper_pq=40.6, paper_pq_th=46.6,
                paper_pq_st=31.6),
    _prn(2, "fgsem", fg=False, sem=True, paper=(41.4, 47.3, 32.6)),
    _prn(3, "fg", paper=(41.9, 47.9, 33.1)),
    _prn(4, "fg-ccdec", dec=True, paper=(42.2, 48.1, 33.2)),
    _prn(5, "fg-ccenc", enc=True, paper=(42.0, 47.8, 33.0)),
    _prn(6, "fg-ccdec-ccenc", dec=True, enc=True, paper=(42.5, 48.5, 33.5)),
    _prn(7, "fg-bbox", bbox=True, paper=(43.1, 48.9, 33.2)),
    _prn(8, "fg-ccdec-ccenc-bbox", dec=True, enc=True, bbox=True, paper=(44.4, 50.9, 34.4)),
)

ROW_SLUGS = tuple(r.slug for r in TABLE1_ROWS)

#: Row 1, against which every delta is taken.
BASE_ROW = TABLE1_ROWS[0]


def paired_reference(row: AblationRow) -> AblationRow | None:
    """The row that ``row`` adds one part to, which the table compares it with seed by seed: Foreground for every
    row with a switch (rows 4-8 are the Foreground row plus switches), ForegroundSem for Foreground (the foreground
    branch itself), none for ForegroundSem and the base (the base does not train: its delta is the plain one)."""
    if not row.prn or row.foreground_source == "semantic":
        return None
    return next(r for r in TABLE1_ROWS if r.slug == ("fgsem" if row.slug == "fg" else "fg"))


def select_rows(names: Sequence[str | int] | None) -> list[AblationRow]:
    """The rows named by slug or 1-based number (``None``/empty: all), in table order; the base row is always
    included (every delta is taken against it). An unknown name is a usage error."""
    if not names:
        return list(TABLE1_ROWS)
    wanted = {BASE_ROW.index}
    for name in names:
        text = str(name).strip()
        if text.isdigit() and 1 <= int(text) <= len(TABLE1_ROWS):
            wanted.add(int(text))
            continue
        match = [r.index for r in TABLE1_ROWS if r.slug == text.lower()]
        if not match:
            raise UsageError(f"--rows: unknown ablation row {text!r}; use a row number 1-{len(TABLE1_ROWS)} or one "
                             f"of {', '.join(ROW_SLUGS)}")
        wanted.add(match[0])
    return [r for r in TABLE1_ROWS if r.index in wanted]
