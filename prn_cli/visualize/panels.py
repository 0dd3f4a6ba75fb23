"""Panels: tiles side by side under title bars, and the text tile that stands in for a missing image."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .text import fit_text, get_font, line_extent, text_bbox

_PANEL_BACKGROUND = (255, 255, 255)
_TITLE_BACKGROUND = (34, 34, 34)
_TITLE_COLOR = (255, 255, 255)
_MISSING_BACKGROUND = (72, 72, 72)


def _auto_title_size(tile_height: int) -> int:
    return int(min(32, max(12, round(tile_height / 22))))


def _draw_centered(draw, font, box: tuple[int, int, int, int], text: str, fill) -> None:
    x0, y0, x1, y1 = box
    text = fit_text(font, text, x1 - x0 - 4)
    if not text:
        return
    l, _, r, _ = text_bbox(font, text)
    top, bottom = line_extent(font)
    x = x0 + (x1 - x0 - (r - l)) // 2 - l
    y = y0 + (y1 - y0 - (bottom - top)) // 2 - top
    draw.text((x, y), text, font=font, fill=fill)


def text_tile(height: int, width: int, lines: Sequence[str], *, font_size: int | None = None) -> np.ndarray:
    """A dark tile with centred lines of text: stands in for a set that lacks an image."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), _MISSING_BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = get_font(font_size or _auto_title_size(height))
    top, bottom = line_extent(font)
    line_h = int((bottom - top) * 1.4)
    y = (height - line_h * len(lines)) // 2
    for text in lines:
        _draw_centered(draw, font, (0, y, width, y + line_h), text, (230, 230, 230))
        y += line_h
    return np.asarray(img).copy()


def compose_panel(tiles: Sequence[np.ndarray], titles: Sequence[str], *, title_height: int | None = None,
                  title_font_size: int | None = None, padding: int = 4) -> np.ndarray:
    """Tiles side by side, each under a dark title bar (as the paper's figures: image | base | refined | GT).

    Width = sum of tile widths + ``padding`` between neighbours; height = title bar + tallest tile (shorter tiles
    are top-aligned on white). Titles too wide for their tile are shortened with '...'.
    """
    from PIL import Image, ImageDraw

    if len(tiles) != len(titles):
        raise ValueError(f"{len(tiles)} tiles but {len(titles)} titles")
    if not tiles:
        raise ValueError("compose_panel needs at least one tile")
    tiles = [np.asarray(t) for t in tiles]
    tiles = [np.repeat(t[..., None], 3, axis=2) if t.ndim == 2 else t[..., :3] for t in tiles]
    tile_h = max(t.shape[0] for t in tiles)
    font = get_font(title_font_size or _auto_title_size(tile_h))
    top, bottom = line_extent(font)
    bar = title_height or (bottom - top) + 2 * max(4, (bottom - top) // 2)
    width = sum(t.shape[1] for t in tiles) + padding * (len(tiles) - 1)
    panel = np.empty((bar + tile_h, width, 3), dtype=np.uint8)
    panel[...] = _PANEL_BACKGROUND
    boxes = []
    x = 0
    for t in tiles:
        th, tw = t.shape[:2]
        panel[:bar, x:x + tw] = _TITLE_BACKGROUND
        panel[bar:bar + th, x:x + tw] = t
        boxes.append((x, 0, x + tw, bar))
        x += tw + padding
    img = Image.fromarray(panel)
    draw = ImageDraw.Draw(img)
    for box, title in zip(boxes, titles):
        _draw_centered(draw, font, box, title, _TITLE_COLOR)
    return np.asarray(img).copy()


__all__ = ["compose_panel", "text_tile"]
