"""Colours of ``prn viz``: a pure function of ids, the same in every panel and every run (no RNG state)."""

from __future__ import annotations

import colorsys

_MASK64 = (1 << 64) - 1
#: 2**64 / golden ratio: multiplying ids by it spreads consecutive ids evenly over the hue circle.
_GOLDEN64 = 0x9E3779B97F4A7C15
#: Salt of the fallback colour of a category without ``color``, so category 7 and segment 7 differ.
CATEGORY_SALT = 0x5A17C0DE


def _mix64(x: int) -> int:
    """splitmix64's finalizer: a fixed bijection that scatters nearby integers (no RNG state)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def instance_color(segment_id: int, *, salt: int = 0) -> tuple[int, int, int]:
    """A distinct, stable colour for an id: the same id gives the same colour in every run and panel.

    The hue is ``frac(id / golden ratio)`` in exact integer arithmetic, so consecutive ids (1, 2, 3, ...) land as
    far apart on the hue circle as possible; saturation and brightness vary with a hash of the id, so two ids
    whose hues happen to be close still differ in shade. Saturation and brightness stay high, which keeps every
    colour apart from the grey background and the white boundaries.
    """
    sid = int(segment_id) ^ salt
    hue = ((sid * _GOLDEN64) & _MASK64) / 2.0 ** 64
    h = _mix64(sid)
    sat = (0.85, 0.7, 0.55)[h % 3]
    val = (1.0, 0.9, 0.78)[(h >> 16) % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def category_color(category: dict) -> tuple[int, int, int]:
    """A category's ``color`` [r, g, b]; a deterministic colour from its id when it has none (or a bad one)."""
    color = category.get("color")
    if (isinstance(color, (list, tuple)) and len(color) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color)):
        return int(color[0]), int(color[1]), int(color[2])
    return instance_color(int(category["id"]), salt=CATEGORY_SALT)


def jittered_color(category: dict, key: int, *, spread: int = 48) -> tuple[int, int, int]:
    """The category's colour shifted by up to ``spread`` per channel, a pure function of ``key`` (detectron2
    draws instances so): instances of one class stay near the class colour of the legend yet differ."""
    h = _mix64(int(key) ^ 0x1F3D5B79)
    base = category_color(category)
    out = []
    for c, value in enumerate(base):
        offset = ((h >> (16 * c)) & 0xFFFF) * (2 * spread + 1) // 0x10000 - spread
        out.append(max(0, min(255, value + offset)))
    return out[0], out[1], out[2]


__all__ = ["instance_color", "category_color", "jittered_color", "CATEGORY_SALT"]
