"""Thing boundaries at full resolution: PRN's boundary refiner and the re-cut of thing masks it drives.

A base model's thing masks are usually right in the large and wrong by a pixel or two along the boundary (a
28x28 mask head pasted into its box, or a stride-4 map upsampled): on prn's synthetic benchmark replacing a 2-px
band around each base thing by the truth raises the things' SQ from 80 to 91 and turns 7% more of them into
matches (models/README.md). PRN's heads work at stride 4 and cannot place a boundary that finely, so a small
full-resolution network reads the image next to the base's thing boundaries and says, pixel by pixel, whether
the pixel belongs to a thing; the post-processing then moves each thing's boundary within a few pixels of where
it was (:func:`refine_thing_boundaries`). Objects keep their identity: pixels join the nearest thing or leave to
the nearest non-thing segment, so the step sharpens masks and never adds, drops or relabels a segment.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BoundaryRefiner", "boundary_band", "boundary_band_numpy", "refine_thing_boundaries"]


class BoundaryRefiner(nn.Module):
    """The thing-foreground logit at full resolution, from the image and the base's thing mask.

    Input: ``image`` (B, 3, H, W) ImageNet-normalised RGB; ``base_maps`` (B, 9, H, W) the renderer's input maps
    (channel 0: the base's thing foreground, channel 8: its segment boundaries). Output (B, 1, H, W): a logit that
    the pixel belongs to a thing. 3x3 convolutions (ReLU, one per ``dilations`` entry: (1, 1, 2, 4, 8, 1) sees
    35x35 pixels, the scale of a small object and its surroundings) and a 1x1 read-out that starts at zero, plus
    a learnt multiple (``prior``, 2 at start) of the base's own foreground in logit units: a fresh refiner
    reproduces the base's thing mask, so the re-cut changes nothing until it has learnt something.
    """

    def __init__(self, channels: int = 24, dilations: Sequence[int] = (1, 1, 2, 4, 8, 1)):
        super().__init__()
        if channels < 1 or not dilations or min(dilations) < 1:
            raise ValueError(f"BoundaryRefiner needs channels >= 1 and dilations >= 1, got {channels}, {dilations}")
        layers: list[nn.Module] = []
        in_channels = 5  # RGB, base thing foreground (as +-1), base segment boundaries
        for dilation in dilations:
            layers += [nn.Conv2d(in_channels, channels, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
            in_channels = channels
        self.body = nn.Sequential(*layers)
        self.read_out = nn.Conv2d(channels, 1, 1)
        nn.init.zeros_(self.read_out.weight)
        nn.init.zeros_(self.read_out.bias)
        self.prior = nn.Parameter(torch.tensor(2.0))
        #: receptive-field radius in pixels: an output pixel depends on inputs at most this far away
        self.reach = sum(dilations)

    def forward(self, image: torch.Tensor, base_maps: torch.Tensor, region: torch.Tensor | None = None,
                tile: int = 64) -> torch.Tensor:
        """With ``region`` (B, H, W) bool, at inference: only the ``tile`` x ``tile`` tiles that hold a pixel of the
        region are computed, each from a crop that reaches :attr:`reach` pixels beyond it, so that they get
        exactly the values of the whole map; elsewhere the output is the prior term alone. The re-cut reads a
        band around the things' boundaries, so its cost follows their length rather than the image's area."""
        base_fg = 2 * base_maps[:, 0:1].to(image.dtype) - 1
        x = torch.cat([image, base_fg, base_maps[:, 8:9].to(image.dtype)], dim=1)
        prior = self.prior.to(image.dtype) * base_fg
        if region is None or self.training:
            return self.read_out(self.body(x)) + prior
        out = prior.clone()
        b, _, h, w = x.shape
        rows, cols = -(-h // tile), -(-w // tile)
        padded = F.pad(region, (0, cols * tile - w, 0, rows * tile - h))
        wanted = padded.view(b, rows, tile, cols, tile).any(dim=4).any(dim=2)
        r = self.reach
        for i, ty, tx in wanted.nonzero().tolist():
            y0, x0 = ty * tile, tx * tile
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            cy0, cx0 = max(y0 - r, 0), max(x0 - r, 0)
            logits = self.read_out(self.body(x[i:i + 1, :, cy0:min(y1 + r, h), cx0:min(x1 + r, w)]))
            out[i, :, y0:y1, x0:x1] += logits[0, :, y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
        return out


def boundary_band(base_foreground: torch.Tensor, width: int) -> torch.Tensor:
    """(B, H, W) bool: pixels within ``width`` pixels (chessboard distance) of the boundary of ``base_foreground``
    (B, H, W) {0, 1}, on either side: where the boundary refiner is trained and where its re-cut acts."""
    fg = base_foreground.float().unsqueeze(1)
    k = 2 * width + 1
    grown = F.max_pool2d(fg, k, stride=1, padding=width)
    shrunk = -F.max_pool2d(-fg, k, stride=1, padding=width)
    return (grown > shrunk).squeeze(1)


_SIDES = ((-1, 0), (0, -1), (0, 1), (1, 0))
_CORNERS = ((-1, -1), (-1, 1), (1, -1), (1, 1))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) bool ``mask`` grown by ``radius`` pixels (chessboard distance); pixels outside the map add nothing.
    Separable shifted ORs on bytes: a few passes over the map where a max-pool over floats costs ~20x more."""
    out = mask.copy()
    for axis in (0, 1):
        src = out.copy()
        view, source = np.moveaxis(out, axis, 0), np.moveaxis(src, axis, 0)
        for step in range(1, radius + 1):
            view[step:] |= source[:-step]
            view[:-step] |= source[step:]
    return out


def boundary_band_numpy(mask: np.ndarray, radius: int) -> np.ndarray:
    """:func:`boundary_band` of one (H, W) bool map, in numpy: the pixels within ``radius`` (chessboard) of both a
    mask and a non-mask pixel, the map's edges adding nothing."""
    mask = np.asarray(mask, dtype=bool)
    return _dilate(mask, radius) & _dilate(~mask, radius)


def _pixel_graph(domain: np.ndarray):
    """``(ys, xs, neighbours)`` of the (H, W) bool ``domain``'s pixels: for each of the 8 neighbour shifts, the
    position of that neighbour among the domain's pixels, -1 where it is outside the domain or the map."""
    h, w = domain.shape
    ys, xs = np.nonzero(domain)
    position = np.full((h + 2, w + 2), -1, np.int32)  # padded by one: border pixels' neighbours read -1
    position[ys + 1, xs + 1] = np.arange(ys.size, dtype=np.int32)
    return ys, xs, {shift: position[ys + 1 + shift[0], xs + 1 + shift[1]] for shift in _SIDES + _CORNERS}


def _propagate(labels: np.ndarray, source: np.ndarray, graph, steps: int, offset: int = 0) -> np.ndarray:
    """For the pixels of a domain (``graph`` = :func:`_pixel_graph` of it): the label (+ ``offset``, which must
    make it > 0) of the nearest ``source`` pixel within ``steps`` 8-neighbour steps, 0 where none.

    Grown one ring at a time, a pixel taking its 4-neighbours' label before its diagonal ones' (closer); where
    labels meet, the larger wins (deterministic). Only domain pixels are visited, so the cost follows the domain's
    size, not the map's. That is exact when every path of at most ``steps`` steps from a source pixel to a domain
    pixel runs inside the domain: true of the band of width ``steps`` around the boundary of ``source``, which
    holds every pixel within ``steps`` of a source pixel and every source pixel next to such a pixel."""
    ys, xs, neighbours = graph
    n = ys.size
    reached = source[ys, xs]
    values = np.where(reached, labels[ys, xs].astype(np.int64) + offset, 0)
    best = np.empty(n, np.int64)
    for _ in range(steps):
        at_start = np.append(values, 0)  # position -1 reads this 0: "nothing there"
        grown = False
        for shifts in (_SIDES, _CORNERS):
            best.fill(0)
            for shift in shifts:
                np.maximum(best, at_start[neighbours[shift]], out=best)
            grow = ~reached & (best > 0)
            values[grow] = best[grow]
            reached |= grow
            grown |= bool(grow.any())
        if not grown:
            break
    return values


def refine_thing_boundaries(ids: np.ndarray, segments: list[dict], thing_probability: np.ndarray,
                            thing_category_ids: set[int], radius: int, confidence: float = 0.5, *,
                            min_area: int = 0, min_gain: float = 0.0, min_coverage: float = 0.0) -> np.ndarray:
    """``ids`` with every thing's boundary re-cut by ``thing_probability`` within ``radius`` pixels of it.

    ``ids`` (H, W) integer segment ids (0 = void), ``segments`` their ``segments_info``; ``thing_probability``
    (H, W) the boundary refiner's sigmoid at the same size. Inside the band (:func:`boundary_band` of the union of
    thing segments): a non-thing pixel with probability > ``confidence`` joins the nearest thing; a thing pixel with
    probability < 1 - ``confidence`` goes to the nearest non-thing segment (void where none is within ``radius``).
    ``confidence`` in [0.5, 1): above 0.5 a pixel moves only where the refiner is that sure, so a base whose
    boundaries are already right loses less to the refiner's mistakes. Segments keep their ids and categories; a
    thing that would lose every pixel keeps its own.

    The re-cut is then kept or undone per thing, because the evidence that a base's boundary is off accumulates
    along the whole boundary while a single pixel's probability is noisy: a thing with fewer than ``min_area``
    pixels keeps its base mask (its band is most of it, so a re-cut reshapes rather than sharpens it), and so does
    a thing whose *expected gain* is below ``min_gain``. The expected gain is the refiner's expected number of
    pixels set right minus set wrong by the thing's re-cut (2p - 1 per pixel joined, 1 - 2p per pixel left), over
    the thing's area: to first order the IoU the re-cut adds if the probabilities are calibrated. A base mask that
    already follows the image's edges gets a few scattered, unsure moves and a small gain; a coarse one gets runs
    of sure moves.

    ``min_coverage``: a thing's re-cut is also undone when the pixels it moves lie along less than this fraction of
    the thing's boundary (its boundary pixels within 2 pixels, city-block, of one of its moved pixels). A coarse
    mask is off all around; a mask that is right but touches an object the base missed (a dropped neighbour, which
    the image still shows) gets one sure run of joined pixels on one side, which would take the neighbour's pixels.
    """
    if radius <= 0:
        return ids
    thing_ids = np.array([s["id"] for s in segments if s["category_id"] in thing_category_ids], np.int64)
    if thing_ids.size == 0:
        return ids
    ids = np.asarray(ids)
    is_thing = np.isin(ids, thing_ids)
    # Every pixel the re-cut reads or moves lies within the radius of a thing pixel: work on the things' bounding
    # box grown by radius + 1, so that a large photo with a few things costs what its things cost.
    rows, cols = np.flatnonzero(is_thing.any(axis=1)), np.flatnonzero(is_thing.any(axis=0))
    if rows.size == 0:
        return ids
    h, w = ids.shape
    y0, y1 = max(int(rows[0]) - radius - 1, 0), min(int(rows[-1]) + radius + 2, h)
    x0, x1 = max(int(cols[0]) - radius - 1, 0), min(int(cols[-1]) + radius + 2, w)
    if (y1 - y0) * (x1 - x0) < h * w:
        window = (slice(y0, y1), slice(x0, x1))
        out = ids.copy()
        out[window] = _recut(ids[window], is_thing[window], thing_probability[window], thing_ids, radius,
                             confidence, min_area, min_gain, min_coverage)
        return out
    return _recut(ids, is_thing, thing_probability, thing_ids, radius, confidence, min_area, min_gain, min_coverage)


def _recut(ids: np.ndarray, is_thing: np.ndarray, thing_probability: np.ndarray, thing_ids: np.ndarray,
           radius: int, confidence: float, min_area: int, min_gain: float, min_coverage: float = 0.0) -> np.ndarray:
    """:func:`refine_thing_boundaries` on a window that holds every thing pixel and everything within radius + 1
    of one."""
    band = boundary_band_numpy(is_thing, radius)
    join = band & ~is_thing & (thing_probability > confidence)
    leave = band & is_thing & (thing_probability < 1.0 - confidence) if confidence > 0.5 else \
        band & is_thing & (thing_probability <= 0.5)
    if not (join.any() or leave.any()):
        return ids
    out = ids.astype(np.int64, copy=True)
    graph = _pixel_graph(band)
    ys, xs = graph[0], graph[1]
    if join.any():
        nearest_thing = _propagate(ids, is_thing, graph, radius)
        moves = join[ys, xs] & (nearest_thing > 0)
        join[ys, xs] = moves
        out[ys[moves], xs[moves]] = nearest_thing[moves]
    if leave.any():
        # void (0) cannot be told from "no label" by the propagation: labels shifted by one
        nearest_other = _propagate(ids, ~is_thing, graph, radius, offset=1)
        moves = leave[ys, xs] & (nearest_other > 0)
        leave[ys, xs] = moves
        out[ys[moves], xs[moves]] = nearest_other[moves] - 1
    if min_area > 0 or min_gain > 0 or min_coverage > 0:
        _undo_unsure_things(ids, is_thing, out, join, leave, thing_ids, thing_probability, min_area, min_gain,
                            min_coverage)
    if leave.any():
        kept = np.isin(thing_ids, out[is_thing & ~leave])
        if not kept.all():  # a thing that would vanish keeps its pixels
            lost = np.isin(ids, thing_ids[~kept])
            out[lost] = ids[lost]
    return out.astype(ids.dtype, copy=False)


def _move_coverage(ids: np.ndarray, is_thing: np.ndarray, join: np.ndarray, leave: np.ndarray, out: np.ndarray,
                   order: np.ndarray) -> np.ndarray:
    """Per thing of ``order`` (sorted ids): the fraction of its boundary pixels (thing pixels with a 4-neighbour
    outside it, or on the map's edge) that lie within 2 pixels (city block) of a pixel its re-cut moves. Things
    that move nothing get 1."""
    n = order.size
    label = np.zeros(ids.shape, np.int64)       # thing index + 1 on thing pixels
    label[is_thing] = np.searchsorted(order, ids[is_thing]) + 1
    moved = np.zeros(ids.shape, np.int64)       # thing index + 1 on the pixels its re-cut moves
    moved[join] = np.searchsorted(order, out[join]) + 1
    moved[leave] = label[leave]
    padded = np.pad(label, 1)
    h, w = ids.shape
    edge = np.zeros(ids.shape, bool)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        edge |= padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] != label
    edge &= label > 0
    # only the boundary pixels are looked at: a thing's perimeter, not its window
    ey, ex = np.nonzero(edge)
    own = label[ey, ex]
    near = np.zeros(own.shape, bool)
    padded = np.pad(moved, 2)
    for dy in range(-2, 3):
        for dx in range(-2 + abs(dy), 3 - abs(dy)):
            near |= padded[ey + 2 + dy, ex + 2 + dx] == own
    edge_count = np.bincount(own - 1, minlength=n)
    near_count = np.bincount(own[near] - 1, minlength=n)
    moves = np.bincount(moved[moved > 0] - 1, minlength=n)
    return np.where(moves > 0, near_count / np.maximum(edge_count, 1), 1.0)


def _undo_unsure_things(ids: np.ndarray, is_thing: np.ndarray, out: np.ndarray, join: np.ndarray, leave: np.ndarray,
                        thing_ids: np.ndarray, probability: np.ndarray, min_area: int, min_gain: float,
                        min_coverage: float = 0.0) -> None:
    """In place: ``out`` back to ``ids`` on the pixels joined to or left by a thing that is smaller than
    ``min_area``, whose expected gain (see :func:`refine_thing_boundaries`) is below ``min_gain``, or whose moves
    cover less than ``min_coverage`` of its boundary; ``join`` and ``leave`` are updated to the moves that stay.
    Pixels between two things never move, so every moved pixel belongs to exactly one thing's re-cut."""
    order = np.sort(thing_ids)
    n = order.size
    area = np.bincount(np.searchsorted(order, ids[is_thing]), minlength=n)
    joined_to = np.searchsorted(order, out[join])
    left_from = np.searchsorted(order, ids[leave])
    net = (np.bincount(joined_to, weights=2 * probability[join].astype(np.float64) - 1, minlength=n)
           + np.bincount(left_from, weights=1 - 2 * probability[leave].astype(np.float64), minlength=n))
    undo = (area < min_area) | (net < min_gain * area)
    if min_coverage > 0:
        undo |= _move_coverage(ids, is_thing, join, leave, out, order) < min_coverage
    if not undo.any():
        return
    undo_join = np.zeros_like(join)
    undo_join[join] = undo[joined_to]
    undo_leave = np.zeros_like(leave)
    undo_leave[leave] = undo[left_from]
    out[undo_join] = ids[undo_join]
    out[undo_leave] = ids[undo_leave]
    join &= ~undo_join
    leave &= ~undo_leave
