"""Text in ``prn viz`` images: Pillow's embedded font (never the system's), so every machine draws the same pixels."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=32)
def get_font(size: int):
    from PIL import ImageFont

    # Pillow's embedded font: the same glyphs on every machine, whatever fonts the system has.
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):
        # A Pillow built without FreeType has only its fixed-size bitmap font; smaller, but still legible.
        return ImageFont.load_default()


def printable(text: str) -> str:
    # The embedded font covers ASCII only; other characters would render as empty boxes.
    return "".join(ch if " " <= ch <= "~" else "?" for ch in str(text))


def text_bbox(font, text: str) -> tuple[int, int, int, int]:
    """Ink bbox (left, top, right, bottom) of ``text`` drawn with its origin at (0, 0)."""
    return tuple(int(v) for v in font.getbbox(text))  # type: ignore[return-value]


def fit_text(font, text: str, width: int) -> str:
    """``text``, shortened with '...' until it is at most ``width`` px wide."""
    text = printable(text)
    l, _, r, _ = text_bbox(font, text)
    if r - l <= width:
        return text
    for n in range(len(text) - 1, 0, -1):
        short = text[:n].rstrip() + "..."
        l, _, r, _ = text_bbox(font, short)
        if r - l <= width:
            return short
    return ""


def line_extent(font) -> tuple[int, int]:
    """(top, bottom) of a line of text relative to its origin, the same for every string, so lines align."""
    _, top, _, bottom = text_bbox(font, "Hgjy|")
    return top, bottom


__all__ = ["get_font", "printable", "text_bbox", "fit_text", "line_extent"]
