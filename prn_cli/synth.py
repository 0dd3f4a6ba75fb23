"""A deterministic synthetic panoptic dataset in the COCO panoptic layout.

No weights or data sets can be downloaded here, so the networks are trained and tested on images drawn by
this module. They are built to be learnable but not trivial:

- *stuff* (sky, grass, water, wall, road) fills the image as regions with irregular, noise-shaped boundaries;
  each class has its own texture, so stuff is recognised by texture;
- *things* are rotated shapes (triangle, square, star, cross; disc, ellipse, ring) whose colour and texture
  are drawn independently of their class, so a thing's class can only be read from its shape;
- sizes range from a few pixels to a third of the image, later things occlude earlier ones, some instances of
  one class touch, some images hold a crowd region (several small shapes labelled as one ``iscrowd`` segment)
  and thin void borders between stuff regions, as COCO has;
- ``difficulty`` scales texture noise, lighting, how often things take the colour of the background behind
  them, occlusion and the share of small things.

A sample depends only on ``(seed, index)``, so one image can be regenerated without the others and the same
arguments always write byte-identical files. numpy and Pillow only: ``prn synth`` must start fast.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .io import atomic_output, prepare_output_dir
from .panoptic import OFFSET, PanopticWriter, category_dict

# --------------------------------------------------------------------------------------------------------------
# categories

# Thing ids start at 1, stuff ids at 101: code that assumes contiguous category ids breaks on this set.
_THINGS = [
    # id, name, supercategory, colour
    (1, "triangle", "polygon", (220, 20, 60)),
    (2, "square", "polygon", (255, 140, 0)),
    (3, "star", "polygon", (255, 215, 0)),
    (4, "cross", "polygon", (199, 21, 133)),
    (5, "disc", "round", (0, 191, 255)),
    (6, "ellipse", "round", (50, 205, 50)),
    (7, "ring", "round", (148, 0, 211)),
]
_STUFF = [
    (101, "sky", "outdoor", (135, 206, 235)),
    (102, "grass", "outdoor", (34, 139, 34)),
    (103, "water", "outdoor", (0, 105, 148)),
    (104, "wall", "building", (178, 102, 80)),
    (105, "road", "building", (96, 96, 104)),
]
_SHAPES = [name for _, name, _, _ in _THINGS]

# Mean colour of each stuff texture before the per-image jitter.
_STUFF_BASE = {
    "sky": (120, 170, 230),
    "grass": (70, 135, 50),
    "water": (35, 95, 145),
    "wall": (165, 85, 60),
    "road": (92, 92, 98),
}

_SPLIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def synth_categories() -> list[dict]:
    """The categories of the synthetic set: 7 thing shapes (ids 1-7) and 5 textured stuff classes (101-105).

    Every category carries a distinct ``color`` and a ``supercategory`` ("polygon"/"round" for things,
    "outdoor"/"building" for stuff).
    """
    cats = [category_dict(i, name, True, color, sup) for i, name, sup, color in _THINGS]
    cats += [category_dict(i, name, False, color, sup) for i, name, sup, color in _STUFF]
    return cats


# --------------------------------------------------------------------------------------------------------------
# configuration


@dataclass
class SynthConfig:
    """What :func:`generate_sample` and :func:`write_dataset` draw.

    ``difficulty`` in [0, 1] scales texture noise, lighting, colour overlap between things and background,
    occlusion and the share of small things. Sizes are thing diameters in pixels; the largest is
    ``max_thing_frac`` of the image's shorter side.
    """

    n: int = 16
    width: int = 320
    height: int = 240
    seed: int = 0
    split: str = "train"
    difficulty: float = 0.5
    min_things: int = 3
    max_things: int = 10
    crowd_prob: float = 0.15
    #: probability that a thing gets a touching twin of the same class
    pair_prob: float = 0.25
    #: probability that an image has thin void borders between some stuff regions
    void_prob: float = 0.4
    min_thing_size: int = 8
    max_thing_frac: float = 0.4
    #: things (and crowd regions) left with fewer visible pixels than this are removed
    min_area: int = 12
    #: probability that a (non-camouflaged) thing is painted in a jittered colour of its own class, a cue
    #: that real classes have and that makes thing classes learnable by a small model in a short CPU run;
    #: 0 keeps colour independent of class (and every byte of the default data set unchanged)
    class_colour: float = 0.0
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        def is_int(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        for name in ("n", "width", "height", "seed", "min_things", "max_things", "min_thing_size", "min_area",
                     "jpeg_quality"):
            need(is_int(getattr(self, name)), f"{name} must be an integer, got {getattr(self, name)!r}")
        need(self.n >= 1, f"n must be at least 1, got {self.n}")
        need(32 <= self.width <= 8192 and 32 <= self.height <= 8192,
             f"image size must be between 32 and 8192 pixels per side, got {self.width}x{self.height}")
        need(0 <= self.seed < 2 ** 63, f"seed must be a non-negative integer, got {self.seed}")
        need(isinstance(self.split, str) and bool(_SPLIT_RE.match(self.split)),
             f"split must be a plain name of letters, digits, '_', '-' or '.', got {self.split!r}")
        for name in ("difficulty", "crowd_prob", "pair_prob", "void_prob", "max_thing_frac", "class_colour"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= float(v) <= 1.0,
                 f"{name} must be a number in [0, 1], got {v!r}")
        need(self.max_thing_frac > 0, "max_thing_frac must be above 0")
        need(0 <= self.min_things <= self.max_things <= 100,
             f"need 0 <= min_things <= max_things <= 100, got min_things={self.min_things}, "
             f"max_things={self.max_things}")
        need(self.min_thing_size >= 4, f"min_thing_size must be at least 4 pixels, got {self.min_thing_size}")
        need(self.min_thing_size <= self.max_thing_size,
             f"min_thing_size {self.min_thing_size} exceeds the largest thing size {self.max_thing_size} "
             f"({self.max_thing_frac} of {min(self.width, self.height)} px); lower it or enlarge the images")
        need(1 <= self.min_area <= 1000, f"min_area must be in [1, 1000], got {self.min_area}")
        need(1 <= self.jpeg_quality <= 100, f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    @property
    def max_thing_size(self) -> int:
        return int(self.max_thing_frac * min(self.width, self.height))

    def to_dict(self) -> dict:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in dataclasses.asdict(self).items()}


# --------------------------------------------------------------------------------------------------------------
# noise helpers


def _cubic_kernel(s: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5), the usual "bicubic"."""
    s = np.abs(s)
    return np.where(s <= 1, 1.5 * s ** 3 - 2.5 * s ** 2 + 1,
                    np.where(s < 2, -0.5 * s ** 3 + 2.5 * s ** 2 - 4 * s + 2, 0.0))


@functools.lru_cache(maxsize=256)
def _upsample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 bicubic interpolation weights, pixel centres aligned, edges clamped."""
    x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    i0 = np.floor(x).astype(np.int64)
    t = x - i0
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    for k in range(-1, 3):
        np.add.at(m, (rows, np.clip(i0 + k, 0, n_in - 1)), _cubic_kernel(t - k))
    m = m.astype(np.float32)
    m.setflags(write=False)  # shared through the cache
    return m


def upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bicubic upsampling of a small (gh, gw) grid to (h, w) float32.

    Two small matrix products: several times faster than a Pillow resize plus its conversion back to numpy.
    ``einsum`` (not ``@``) keeps the arithmetic in numpy's own loops, so results do not depend on the BLAS
    library or its thread count.
    """
    grid = np.asarray(grid, np.float32)
    rows = np.einsum("ik,kj->ij", grid, _upsample_matrix(grid.shape[1], w).T)
    return np.einsum("ik,kj->ij", _upsample_matrix(grid.shape[0], h), rows)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """(h, w) float32 smooth noise with about ``cells`` features across the shorter side, in about [-1, 1].

    A random grid upsampled bicubically: cheap, and its level sets make irregular, natural-looking boundaries.
    """
    scale = max(float(cells), 1.0) / min(h, w)
    gh, gw = max(2, int(round(h * scale)) + 1), max(2, int(round(w * scale)) + 1)
    return upsample(rng.uniform(-1.0, 1.0, size=(gh, gw)), h, w)


def _jitter(rng: np.random.Generator, base, amount: float) -> np.ndarray:
    return np.clip(np.asarray(base, np.float32) + rng.uniform(-amount, amount, 3), 0, 255).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# stuff


def _stuff_texture(name: str, rng: np.random.Generator, h: int, w: int, d: float, idx: np.ndarray) -> np.ndarray:
    """(3, len(idx)) float32 texture of one stuff class at the flat pixel indices ``idx``, channels first.

    The texture, not the colour alone, identifies the class. Only the class's own pixels are computed, which
    keeps generation fast when several classes share an image; channels-first keeps numpy's inner loops long.
    """
    ys, xs = np.divmod(idx, w)
    ys = ys.astype(np.float32)
    xs = xs.astype(np.float32)

    def field(cells: float) -> np.ndarray:
        return smooth_noise(rng, h, w, cells).ravel()[idx]

    # The per-image colour jitter grows with difficulty so that stuff colours drift towards each other and
    # towards the things' colours.
    base = _jitter(rng, _STUFF_BASE[name], 10 + 30 * d)[:, None]
    if name == "sky":
        # brighter towards the horizon, soft clouds
        grad = (ys / h) * np.float32(rng.uniform(10, 40))
        clouds = np.clip(field(rng.uniform(2, 5)) * 1.6 - 0.4, 0, 1)
        tex = (base + grad) * (1 - 0.7 * clouds) + 235 * 0.7 * clouds
    elif name == "grass":
        # blades: noise stretched vertically, darker patches
        blades = rng.uniform(-1, 1, size=(max(2, h // 6), w)).astype(np.float32)
        blades = np.einsum("ik,kj->ij", _upsample_matrix(blades.shape[0], h), blades).ravel()[idx]
        patches = field(rng.uniform(3, 8))
        tex = base * (1 + 0.25 * blades + 0.15 * patches)
    elif name == "water":
        # horizontal waves whose phase wanders, with glints on the crests
        wl = rng.uniform(6, 14)
        phase = field(rng.uniform(2, 5)) * np.float32(rng.uniform(1.5, 4))
        wave = np.sin(np.float32(2 * np.pi / wl) * ys + xs * np.float32(rng.uniform(-0.05, 0.05)) + phase)
        tex = base * (1 + 0.18 * wave) + 300 * np.clip(wave - 0.85, 0, None)
    elif name == "wall":
        # bricks in offset rows, each brick its own shade, light mortar
        bw = np.float32(rng.uniform(14, 30))
        bh = bw / np.float32(rng.uniform(2.0, 3.0))
        row = np.floor(ys / bh)
        shifted = xs + (row % 2) * bw / 2
        col = np.floor(shifted / bw)
        shade_table = rng.uniform(0.8, 1.2, size=97).astype(np.float32)
        shade = shade_table[((row * 31 + col * 7) % 97).astype(np.int64)]
        mortar = ((ys % bh) < 1.6) | ((shifted % bw) < 1.6)
        mortar_col = _jitter(rng, (205, 198, 185), 15)[:, None]
        tex = np.where(mortar, mortar_col, base * shade)
    elif name == "road":
        # asphalt speckle and stains
        stains = field(rng.uniform(3, 7))
        speckle = rng.standard_normal(len(idx), dtype=np.float32)
        tex = base * (1 + 0.12 * stains) + 14 * speckle
    else:  # pragma: no cover - the table above is closed
        raise AssertionError(name)
    return tex.astype(np.float32, copy=False)


def _stuff_layout(rng: np.random.Generator, h: int, w: int, n_classes: int, yy: np.ndarray,
                  names: list[str]) -> np.ndarray:
    """(h, w) int index into ``names``: the argmax of smooth noise fields, so boundaries are irregular."""
    yn = yy / h
    best = lab = None
    for k, name in enumerate(names):
        f = smooth_noise(rng, h, w, rng.uniform(1.2, 2.8))
        # a finer field makes the boundaries wavy instead of smooth arcs
        f += 0.12 * smooth_noise(rng, h, w, rng.uniform(8, 14))
        # sky lives high, ground classes low: a layout a CNN can use, as in real photos
        if name == "sky":
            f += 1.2 * (0.5 - yn)
        elif name in ("grass", "road", "water"):
            f += 0.5 * (yn - 0.5)
        if best is None:
            best, lab = f, np.zeros((h, w), np.uint8)
        else:
            # a running argmax: np.argmax over a stacked axis is several times slower
            lab = np.where(f > best, np.uint8(k), lab)
            best = np.maximum(best, f)
    return lab


def _borders(lab: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another label."""
    edge = np.zeros(lab.shape, bool)
    dv = lab[1:, :] != lab[:-1, :]
    dh = lab[:, 1:] != lab[:, :-1]
    edge[1:, :] |= dv
    edge[:-1, :] |= dv
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh
    return edge


# --------------------------------------------------------------------------------------------------------------
# things


def _shape_sdf(shape: str, u: np.ndarray, v: np.ndarray, p: dict) -> np.ndarray:
    """Signed distance (approximate, in units of the shape's radius; negative inside) in local coordinates."""
    if shape == "disc":
        return np.sqrt(u * u + v * v) - 0.95
    if shape == "ellipse":
        b = 1.0 / p["aspect"]
        return (np.sqrt(u * u + (v / b) ** 2) - 1.0) * b
    if shape == "ring":
        rho = np.sqrt(u * u + v * v)
        inner = p["inner"]
        return np.abs(rho - (1 + inner) / 2) - (1 - inner) / 2
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.72
    if shape == "triangle":
        # regular triangle, circumradius 1.05
        out = None
        for k in range(3):
            a = np.pi / 2 + 2 * np.pi * k / 3
            e = u * np.cos(a) + v * np.sin(a) - 0.525
            out = e if out is None else np.maximum(out, e)
        return out
    if shape == "star":
        # fold the plane into one half-spike; inside there means the origin's side of the spike's edge
        rho = np.sqrt(u * u + v * v)
        sector = 2 * np.pi / 5
        phi = np.abs(np.mod(np.arctan2(v, u), sector) - sector / 2)
        qx, qy = rho * np.cos(phi), rho * np.sin(phi)
        inner = p["inner"]
        ax, ay = 1.0, 0.0
        bx, by = inner * np.cos(sector / 2), inner * np.sin(sector / 2)
        ex, ey = bx - ax, by - ay
        norm = np.hypot(ex, ey)
        return ((qx - ax) * ey - (qy - ay) * ex) / norm
    if shape == "cross":
        arm = p["arm"]
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au - 0.95, av - arm), np.maximum(au - arm, av - 0.95))
    raise AssertionError(shape)  # pragma: no cover


def _shape_params(rng: np.random.Generator) -> dict:
    # drawn for every shape so that the rng stream does not depend on the class
    return {"aspect": float(rng.uniform(1.8, 2.8)), "inner": float(rng.uniform(0.42, 0.62)),
            "arm": float(rng.uniform(0.26, 0.36))}


@dataclass
class _Part:
    """One drawn shape: its box in the image, coverage in that box, and what it looks like."""

    y0: int
    y1: int
    x0: int
    x1: int
    cov: np.ndarray  # (h, w) float32 coverage; >= 0.5 is the label mask
    u: np.ndarray
    v: np.ndarray
    sdf_px: np.ndarray
    gx: np.ndarray  # image-frame offsets from the centre in radii (shading ignores the shape's rotation)
    gy: np.ndarray


def _draw_part(shape: str, cx: float, cy: float, radius: float, angle: float, params: dict,
               h: int, w: int) -> _Part | None:
    y0, y1 = max(0, int(np.floor(cy - radius - 2))), min(h, int(np.ceil(cy + radius + 2)))
    x0, x1 = max(0, int(np.floor(cx - radius - 2))), min(w, int(np.ceil(cx + radius + 2)))
    if y1 <= y0 or x1 <= x0:
        return None
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = (dx * c + dy * s) / radius
    v = (dy * c - dx * s) / radius
    sdf_px = _shape_sdf(shape, u, v, params) * radius
    # one pixel of linear falloff anti-aliases the edges; the label is the half-coverage level set
    cov = np.clip(0.5 - sdf_px, 0.0, 1.0).astype(np.float32)
    if not (cov >= 0.5).any():
        return None
    return _Part(y0, y1, x0, x1, cov, u, v, sdf_px, dx / radius, dy / radius)


def _thing_texture(rng: np.random.Generator, part: _Part, base: np.ndarray, d: float,
                   light: tuple[float, float]) -> np.ndarray:
    """(3, h, w) appearance of one shape (channels first), drawn independently of its class."""
    u, v = part.u, part.v
    kind = int(rng.integers(0, 6))
    second = rng.uniform(0, 255, 3).astype(np.float32)
    amount = np.float32(rng.uniform(0.2, 0.7))
    freq = rng.uniform(1.5, 4.0)
    a = rng.uniform(0, 2 * np.pi)
    outline = rng.random() < 0.1 + 0.3 * (1 - d)
    shading = rng.uniform(0.0, 0.3)
    if kind == 0:  # flat
        pat = np.zeros_like(u)
    elif kind == 1:  # linear gradient
        pat = np.clip((u * np.cos(a) + v * np.sin(a) + 1) / 2, 0, 1)
    elif kind == 2:  # stripes
        pat = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (u * np.cos(a) + v * np.sin(a)))
    elif kind == 3:  # checker
        pat = ((np.floor(u * freq) + np.floor(v * freq)) % 2).astype(np.float32)
    elif kind == 4:  # blotches
        hh, ww = u.shape
        pat = 0.5 + 0.5 * smooth_noise(rng, hh, ww, max(2.0, min(hh, ww) / 6))
    else:  # radial
        pat = np.clip(np.sqrt(u * u + v * v), 0, 1)
    pat = (pat * amount).astype(np.float32)
    tex = base[:, None, None] * (1 - pat) + second[:, None, None] * pat
    # light comes from one direction per image, so shading is a cue shared by all things
    tex *= 1 + shading * (part.gx * light[0] + part.gy * light[1])
    if outline:
        ring = (part.sdf_px > -1.5) & (part.sdf_px <= 0.5)
        tex = np.where(ring, tex * 0.55, tex)
    return tex.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------------------
# one sample


def random_segment_ids(rng: np.random.Generator, k: int) -> list[int]:
    """``k`` distinct random segment ids in [1, 2^24), as COCO's ids are colours, not counters."""
    while True:
        ids = rng.integers(1, OFFSET, size=k)
        if len(np.unique(ids)) == k:
            return [int(i) for i in ids]


def generate_sample(config: SynthConfig, index: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Draw sample ``index`` of ``config``: ``(rgb (H, W, 3) uint8, ids (H, W) uint32, segments_info)``.

    The sample depends only on ``(config, index)`` (its rng comes from ``SeedSequence([seed, index])``).
    ``segments_info`` lists ``{id, category_id, iscrowd}`` for every non-zero id in ``ids`` and nothing else;
    ids are distinct random values in [1, 2^24). Id 0 is void.
    """
    if index < 0:
        raise ValueError(f"index must be non-negative, got {index}")
    rng = np.random.default_rng(np.random.SeedSequence([int(config.seed), int(index)]))
    h, w, d = config.height, config.width, float(config.difficulty)
    yy = np.arange(h, dtype=np.float32)[:, None]

    # ---- stuff: 2-4 classes partition the image
    stuff_names = [name for _, name, _, _ in _STUFF]
    k = int(rng.integers(2, min(4, len(stuff_names)) + 1))
    chosen = sorted(rng.choice(len(stuff_names), size=k, replace=False).tolist())
    names = [stuff_names[c] for c in chosen]
    layout = _stuff_layout(rng, h, w, k, yy, names)
    # The picture is built channels-first: broadcasting over a trailing axis of 3 is several times slower.
    rgb = np.empty((3, h * w), np.float32)
    flat_layout = layout.ravel()
    for j, name in enumerate(names):
        idx = np.flatnonzero(flat_layout == j)
        rgb[:, idx] = _stuff_texture(name, rng, h, w, d, idx)
    rgb = rgb.reshape(3, h, w)
    stuff_void = np.zeros((h, w), bool)
    if rng.random() < config.void_prob:
        edge = _borders(layout)
        if rng.random() < 0.5:
            edge[1:, :] |= edge[:-1, :]
            edge[:, 1:] |= edge[:, :-1]
        # void on only some stretches of the borders, as annotators skip some of them
        stuff_void = edge & (smooth_noise(rng, h, w, rng.uniform(2, 5)) > rng.uniform(-0.3, 0.3))

    # ---- things: one entity = one segment; a crowd entity has several parts
    light = rng.normal(size=2)
    light = tuple((light / (np.linalg.norm(light) + 1e-6)).tolist())
    smin, smax = float(config.min_thing_size), float(config.max_thing_size)
    p_small = 0.15 + 0.25 * d
    p_occlude = 0.15 + 0.45 * d
    p_camo = 0.1 + 0.4 * d

    # Small things are a few pixels whatever the image size; the others spread log-uniformly from 6% of the
    # shorter side up to the largest size, so bigger images do not fill up with specks.
    mid = min(smax, max(smin + 4, 0.06 * min(h, w)))

    def sample_size() -> float:
        if rng.random() < p_small:
            return float(rng.uniform(smin, min(smax, smin + 6)))
        return float(np.exp(rng.uniform(np.log(mid), np.log(smax))))

    entities: list[dict] = []  # {cls, crowd, parts: [(shape args...)]}
    centres: list[tuple[float, float, float]] = []
    n_things = int(rng.integers(config.min_things, config.max_things + 1))
    slots = ["thing"] * n_things
    if rng.random() < config.crowd_prob:
        slots.insert(int(rng.integers(0, n_things + 1)), "crowd")
    twin_of: dict | None = None
    for slot in slots:
        if slot == "crowd":
            cls = int(rng.integers(0, len(_SHAPES)))
            count = int(rng.integers(5, 11))
            member = float(rng.uniform(min(smax, smin + 2), min(smax, smin + 10)))
            ccx, ccy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
            spread = member * np.sqrt(count) * rng.uniform(0.7, 1.1)
            parts = [(ccx + rng.normal(0, spread / 2), ccy + rng.normal(0, spread / 2),
                      member * rng.uniform(0.8, 1.2), rng.uniform(0, 2 * np.pi), _shape_params(rng))
                     for _ in range(count)]
            entities.append({"cls": cls, "crowd": True, "parts": parts})
            continue
        if twin_of is not None:
            # a touching twin of the same class: centres a bit closer than the sum of radii
            cls, size = twin_of["cls"], twin_of["size"] * rng.uniform(0.8, 1.2)
            a = rng.uniform(0, 2 * np.pi)
            dist = (twin_of["size"] + size) / 2 * rng.uniform(0.72, 0.9)
            cx, cy = twin_of["cx"] + dist * np.cos(a), twin_of["cy"] + dist * np.sin(a)
            twin_of = None
        else:
            cls, size = int(rng.integers(0, len(_SHAPES))), sample_size()
            if centres and rng.random() < p_occlude:
                ox, oy, osz = centres[int(rng.integers(0, len(centres)))]
                a = rng.uniform(0, 2 * np.pi)
                dist = (osz + size) / 2 * rng.uniform(0.3, 0.9)
                cx, cy = ox + dist * np.cos(a), oy + dist * np.sin(a)
            else:
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            if rng.random() < config.pair_prob:
                twin_of = {"cls": cls, "size": size, "cx": cx, "cy": cy}
        if _SHAPES[cls] == "ring":
            size = max(size, 12.0)  # a smaller ring has no visible hole and would be a disc
        centres.append((cx, cy, size))
        entities.append({"cls": cls, "crowd": False,
                         "parts": [(cx, cy, size, rng.uniform(0, 2 * np.pi), _shape_params(rng))]})

    drawn: list[list[_Part]] = []
    for ent in entities:
        shape = _SHAPES[ent["cls"]]
        parts = [_draw_part(shape, cx, cy, size / 2, ang, prm, h, w) for cx, cy, size, ang, prm in ent["parts"]]
        drawn.append([p for p in parts if p is not None])

    def compose(alive: list[int]) -> np.ndarray:
        lab = np.full((h, w), -1, np.int32)
        for e in alive:
            for p in drawn[e]:
                region = lab[p.y0:p.y1, p.x0:p.x1]
                region[p.cov >= 0.5] = e
        return lab

    # Occlusion can leave a thing with a handful of pixels; such a segment is unlearnable and unrealistic, so
    # it is removed before anything is painted (removing it only uncovers things below it).
    alive = [e for e in range(len(entities)) if drawn[e]]
    thing_lab = compose(alive)
    counts = np.bincount(thing_lab[thing_lab >= 0].ravel(), minlength=len(entities))
    alive = [e for e in alive if counts[e] >= config.min_area]
    thing_lab = compose(alive)

    for e in alive:
        for p in drawn[e]:
            cy = min(max((p.y0 + p.y1) // 2, 0), h - 1)
            cx = min(max((p.x0 + p.x1) // 2, 0), w - 1)
            if rng.random() < p_camo:
                # camouflage: the thing takes the colour of the background behind it
                base = np.clip(rgb[:, cy, cx] + rng.uniform(-1, 1, 3) * (20 + 50 * (1 - d)), 0, 255)
                base = base.astype(np.float32)
            elif config.class_colour > 0 and rng.random() < config.class_colour:
                # the rng is only drawn when the option is on, so class_colour=0 reproduces older data sets
                own = np.asarray(_THINGS[entities[e]["cls"]][3], np.float32)
                base = np.clip(own * rng.uniform(0.75, 1.15) + rng.normal(0, 12 + 20 * d, 3), 0, 255)
                base = base.astype(np.float32)
            else:
                base = (rng.uniform(0.25, 1.0) * 255 * _random_hue(rng)).astype(np.float32)
            tex = _thing_texture(rng, p, base, d, light)
            region = rgb[:, p.y0:p.y1, p.x0:p.x1]
            region *= 1 - p.cov
            region += tex * p.cov

    # ---- lighting and sensor noise over the whole picture
    amp = 0.08 + 0.22 * d
    gain = smooth_noise(rng, h, w, rng.uniform(1.5, 3))
    gain *= np.float32(amp * rng.uniform(0.85, 1.15))
    gain += np.float32(rng.uniform(0.85, 1.15))
    rgb *= gain
    # Triangular noise from two uniform bytes is close enough to Gaussian and several times cheaper to draw.
    sigma = 2 + 10 * d
    raw = np.frombuffer(rng.bytes(2 * h * w * 3), np.uint8).reshape(2, 3, h, w)
    noise = raw[0].astype(np.float32)
    noise += raw[1]
    noise -= np.float32(255 - 0.5)  # the 0.5 rounds to nearest in the cast below
    noise *= np.float32(sigma / 104.2)  # 104.2 = std of the sum of two uniform bytes
    rgb += noise
    rgb_u8 = np.ascontiguousarray(np.clip(rgb, 0, 255, out=rgb).astype(np.uint8).transpose(1, 2, 0))

    # ---- ids
    stuff_lab = np.where(stuff_void, np.int16(-1), layout.astype(np.int16))
    visible = stuff_lab[thing_lab < 0]
    stuff_counts = np.bincount(visible[visible >= 0], minlength=k)
    # A sliver of stuff left between things is too small to be a fair segment; like COCO, leave it void.
    slivers = [j for j in range(k) if 0 < stuff_counts[j] < config.min_area]
    if slivers:
        stuff_lab[np.isin(stuff_lab, slivers)] = -1
    present = [j for j in range(k) if stuff_counts[j] >= config.min_area]
    n_seg = len(alive) + len(present)
    seg_ids = random_segment_ids(rng, n_seg)
    lut_stuff = np.zeros(k + 1, np.uint32)  # index 0 = void (stuff_lab -1 shifted)
    segments: list[dict] = []
    for e, sid in zip(alive, seg_ids[: len(alive)]):
        segments.append({"id": sid, "category_id": _THINGS[entities[e]["cls"]][0],
                         "iscrowd": int(entities[e]["crowd"])})
    for j, sid in zip(present, seg_ids[len(alive):]):
        lut_stuff[j + 1] = sid
        segments.append({"id": sid, "category_id": _STUFF[chosen[j]][0], "iscrowd": 0})
    ids = lut_stuff[stuff_lab + 1]
    lut_thing = np.zeros(len(entities), np.uint32)
    for e, sid in zip(alive, seg_ids[: len(alive)]):
        lut_thing[e] = sid
    on_thing = thing_lab >= 0
    ids[on_thing] = lut_thing[thing_lab[on_thing]]
    return rgb_u8, ids, segments


def _random_hue(rng: np.random.Generator) -> np.ndarray:
    """A random saturated-to-grey colour direction with components in [0, 1]."""
    hue = rng.uniform(0, 1)
    sat = rng.uniform(0.2, 1.0)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    pure = 1 - np.clip(np.minimum(k, 4 - k), 0, 1)
    return 1 - sat * (1 - pure)


# --------------------------------------------------------------------------------------------------------------
# writing a data set


def _save_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    from PIL import Image

    with atomic_output(path, "wb", fsync=False) as f:
        Image.fromarray(rgb).save(f, format="JPEG", quality=int(quality))


def write_dataset(out_dir: str | os.PathLike, config: SynthConfig, *, overwrite: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Write ``config.n`` samples under ``out_dir`` in the COCO panoptic layout and return a summary.

    Layout: ``images/<split>/<12-digit id>.jpg``, ``annotations/panoptic_<split>.json`` and
    ``annotations/panoptic_<split>/<12-digit id>.png``; image ids are 1..n and image ``i`` is
    ``generate_sample(config, i - 1)``. An existing set is refused (:class:`OutputExistsError`) before anything is
    written unless ``overwrite``. The JSON is written last, only when every image succeeded.
    ``progress(done, total)`` is called after each image.
    """
    out = Path(out_dir)
    json_name = f"annotations/panoptic_{config.split}.json"
    # An --out that is a file, or an earlier set of this split without overwrite, is refused before any write.
    prepare_output_dir(out, overwrite=overwrite, marker_names=[json_name])
    json_path = out / json_name
    png_dir = out / "annotations" / f"panoptic_{config.split}"
    img_dir = out / "images" / config.split
    categories = synth_categories()
    cat_by_id = {c["id"]: c for c in categories}
    info = {"description": "prn synthetic panoptic dataset", "generator": "prn_cli.synth",
            "config": config.to_dict()}
    totals = {"segments": 0, "things": 0, "stuff": 0, "crowd": 0}
    # The writer refuses an existing set before any file is touched, so it is created first.
    writer = PanopticWriter(json_path, png_dir, categories, overwrite=overwrite, info=info)
    img_dir.mkdir(parents=True, exist_ok=True)
    with writer:
        for i in range(config.n):
            image_id = i + 1
            rgb, ids, segments = generate_sample(config, i)
            name = f"{image_id:012d}.jpg"
            _save_jpeg(img_dir / name, rgb, config.jpeg_quality)
            writer.add({"id": image_id, "file_name": name, "width": config.width, "height": config.height},
                       ids, segments)
            for s in segments:
                totals["segments"] += 1
                totals["things" if cat_by_id[s["category_id"]]["isthing"] else "stuff"] += 1
                totals["crowd"] += int(s["iscrowd"])
            if progress is not None:
                progress(image_id, config.n)
    return {"root": str(out), "json": str(json_path), "png_dir": str(png_dir), "images_dir": str(img_dir),
            "split": config.split, "images": config.n, **totals}
