"""Cutting a thing that holds two objects in two (PostProcessConfig.classifier_split_confidence).

A base that merges two touching objects of one class draws them as one thing, and PRN keeps it: its instance heads
take their centres from the base's maps. The thing classifier reads each thing on its own (classifier.py), and a
union of two shapes is no shape it knows: trained with every unmatched base thing as "no thing"
(PRNConfig.classifier_background_examples "unmatched"), it is unsure of it, while each object alone is a shape it
reads surely. So each thing is cut in two two ways (:func:`two_part_proposals`), the classifier reads both parts
of each cut, and the cut whose less certain part is the more certain (:func:`best_two_part_split`) is kept where
that part is surer than ``confidence`` and than the whole thing. A single object cut in two gives two
fragments, which the classifier reads less surely than the object: it stays whole. The predictor never cuts a
thing that touches the image's edge: it shows part of its shape, which the classifier reads unsurely whole and
may read surely in halves (on the splits made for choosing, most of the whole objects it cut were such;
models/README.md).
"""

from __future__ import annotations

import numpy as np

#: parts smaller than this (pixels at the processing size) are not proposed: the classifier's crop of a few pixels
#: shows no shape
MIN_PART_AREA = 16
#: a thing the classifier reads as one class more surely than this is not cut: a cut is kept only where both parts
#: are surer still, and on the split made for choosing no such cut was kept (models/README.md); it halves the time
#: of the step, since most things are read that surely
MAX_WHOLE_CERTAINTY = 0.95
#: k-means is fitted on at most this many of a thing's pixels (every pixel is then assigned): a photo's thing may
#: hold a hundred thousand pixels, and the two centres need a few thousand
FIT_POINTS = 4096
KMEANS_ITERATIONS = 15


def _two_means(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N,) bool: which of two k-means clusters of ``points`` (N, D) each point is in, started from the two halves
    along the first principal axis (deterministic, unlike random starts, and right for two blobs side by side)."""
    fit = points if len(points) <= FIT_POINTS else points[rng.choice(len(points), FIT_POINTS, replace=False)]
    mean = fit.mean(axis=0)
    axis = np.linalg.svd(fit - mean, full_matrices=False)[2][0]
    side = (fit - mean) @ axis > 0
    if side.all() or not side.any():
        return np.zeros(len(points), dtype=bool)
    centres = np.stack([fit[~side].mean(axis=0), fit[side].mean(axis=0)])
    for _ in range(KMEANS_ITERATIONS):
        side = ((fit - centres[1]) ** 2).sum(axis=1) < ((fit - centres[0]) ** 2).sum(axis=1)
        if side.all() or not side.any():
            return np.zeros(len(points), dtype=bool)
        new = np.stack([fit[~side].mean(axis=0), fit[side].mean(axis=0)])
        if np.allclose(new, centres):
            break
        centres = new
    return ((points - centres[1]) ** 2).sum(axis=1) < ((points - centres[0]) ** 2).sum(axis=1)


def parts_touch(ys: np.ndarray, xs: np.ndarray, cut: np.ndarray) -> bool:
    """Whether the two parts of a cut (pixels at ``ys``, ``xs``; ``cut`` True for the second part) are 4-neighbours
    somewhere."""
    ys = np.asarray(ys, dtype=np.int64)
    xs = np.asarray(xs, dtype=np.int64)
    y0, x0 = int(ys.min()), int(xs.min())
    local = np.zeros((int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1), np.int8)
    local[ys - y0, xs - x0] = np.where(cut, 2, 1)
    return bool((local[:, :-1] * local[:, 1:] == 2).any() or (local[:-1] * local[1:] == 2).any())


def two_part_proposals(ys: np.ndarray, xs: np.ndarray, colours: np.ndarray | None = None, *,
                       min_part: int = 1, seed: int = 0) -> list[np.ndarray | None]:
    """Ways to cut one thing, whose pixels are at rows ``ys`` and columns ``xs`` (N,), in two: a list of (N,) bool
    arrays, True for the pixels of the second part, or None where a part would have fewer than ``min_part`` pixels
    or the parts would not touch: a thing in pieces that lie apart is one object seen around another more often than
    two objects (on the split made for choosing, such cuts were half the cuts of whole objects and no merge's).

    Two k-means clusters of the pixel positions (two blobs side by side, of any sizes), and with ``colours`` (N, 3)
    a second cut: the same with the pixels' colours as well (two objects of different colours). Always as many, in
    this order, so that cut ``i`` of every thing can be read in one pass. Straight cuts through the centroid at four
    angles won a tenth of the splits on merged things and cost three times the classifier's time: not made."""
    ys = np.asarray(ys, dtype=np.float64)
    xs = np.asarray(xs, dtype=np.float64)
    n = ys.size
    if n < 2:
        return [None] * (1 + int(colours is not None))
    rng = np.random.default_rng(seed)
    points = np.stack([ys, xs], axis=1)
    cuts = [_two_means(points, rng)]
    if colours is not None:
        colours = np.asarray(colours, dtype=np.float64).reshape(n, -1)
        spread = points.std(axis=0).mean() + 1e-6
        colour_spread = colours.std(axis=0).mean() + 1e-6
        # positions and colours weigh alike, colours at half: a textured object must not fall apart by colour
        cuts.append(_two_means(np.concatenate([points / spread, 0.5 * colours / colour_spread], axis=1), rng))
    return [cut if max(min_part, 1) <= int(cut.sum()) <= n - max(min_part, 1) and parts_touch(ys, xs, cut) else None
            for cut in cuts]


def best_two_part_split(whole: np.ndarray, parts: np.ndarray, num_things: int,
                        confidence: float) -> int | None:
    """The index of the cut to keep, or None.

    ``whole`` (K,) or (K + 1,): the classifier's probabilities of the uncut thing; ``parts`` (P, 2, K[+1]): those of
    both parts of each of P cuts (a "no thing" class, where there is one, last and never a thing's class; a cut
    that was not made is NaN and never kept). A cut's
    certainty is its less certain part's best thing-class probability; the most certain cut is kept where that is
    above ``confidence`` and above the whole's best thing-class probability."""
    parts = np.asarray(parts, dtype=np.float64)
    if parts.size == 0:
        return None
    certainty = np.nan_to_num(parts[:, :, :num_things].max(axis=2).min(axis=1), nan=-1.0)
    best = int(certainty.argmax())
    whole_certainty = float(np.asarray(whole)[:num_things].max())
    if certainty[best] > confidence and certainty[best] > whole_certainty:
        return best
    return None
