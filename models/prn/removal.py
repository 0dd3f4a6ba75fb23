"""Removing the things PRN's thing classifier calls "no thing" (PostProcessConfig.classifier_remove_confidence).

A removed thing is either a false detection (its pixels become void) or a piece of an object that the base cut in
two: the smaller half of a split is not a whole thing, and the classifier, trained with every base thing that
matches no object as "no thing" (PRNConfig.classifier_background_examples "unmatched"), says so. Such a piece lies
along the cut of the other half, a thing of its category; with ``join_share`` it joins that thing instead of
turning void, so the object is whole again. Two neighbouring objects touch along a small part of their outlines,
a split's halves along the whole cut.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def boundary_contacts(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, n)``: for each ordered pair of different values ``a != b`` of the (H, W) map that are 4-neighbours
    somewhere, the number ``n`` of neighbouring pixel pairs (each unordered pair of pixels counted once per
    direction, so ``n[a, b] == n[b, a]``). Pixels outside the map count for nothing."""
    ids = np.asarray(ids, dtype=np.int64)
    first = np.concatenate([ids[:, :-1].ravel(), ids[:-1, :].ravel()])
    second = np.concatenate([ids[:, 1:].ravel(), ids[1:, :].ravel()])
    differ = first != second
    a = np.concatenate([first[differ], second[differ]])
    b = np.concatenate([second[differ], first[differ]])
    if a.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    pairs, counts = np.unique(np.stack([a, b], axis=1), axis=0, return_counts=True)
    return pairs[:, 0], pairs[:, 1], counts


def remove_things(ids: np.ndarray, removed: Sequence[int], category_of: Mapping[int, int],
                  join_share: float = 0.0) -> tuple[np.ndarray, dict[int, int]]:
    """``(ids, joined)``: the (H, W) id map with the segments ``removed`` taken out. With ``join_share`` > 0, a
    removed segment whose boundary (4-neighbour pixel pairs with other values, void included, the map's edge not)
    lies along a kept segment of its category (``category_of``: segment id -> category) for at least that fraction
    joins the kept segment it shares the most with (``joined``: removed id -> the id it joined); the others become
    void (0). Segments joined into never change otherwise."""
    removed_set = {int(v) for v in removed}
    joined: dict[int, int] = {}
    if not removed_set:
        return ids, joined
    if join_share > 0:
        a, b, n = boundary_contacts(ids)
        for sid in sorted(removed_set):
            mine = a == sid
            total = int(n[mine].sum())
            if total == 0:
                continue
            best, best_count = None, 0
            for other, count in zip(b[mine].tolist(), n[mine].tolist()):
                if (other in removed_set or other not in category_of
                        or category_of[other] != category_of.get(sid)):
                    continue
                if count > best_count:
                    best, best_count = other, count
            if best is not None and best_count >= join_share * total:
                joined[sid] = int(best)
    values = np.array(sorted(removed_set), dtype=np.int64)
    to = np.array([joined.get(int(v), 0) for v in values], dtype=np.int64)
    flat = ids.astype(np.int64, copy=False).ravel()
    where = np.isin(flat, values)
    out = np.array(ids, copy=True).ravel()
    out[where] = to[np.searchsorted(values, flat[where])].astype(out.dtype, copy=False)
    return out.reshape(ids.shape), joined
