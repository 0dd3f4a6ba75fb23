"""Do no harm to the base: put back the segments of the base that PRN dropped, and keep its boundaries where PRN
is unsure.

PRN may lose a segment that the base had: a small thing (its centre falls under the threshold or inside another
centre's NMS window, or the foreground branch calls it background) or a small stuff region (under the stuff-area
limit). :func:`restore_base_segments` takes PRN's panoptic result and the base's, and gives back every base
segment that no refined segment matches (IoU > ``match_iou``, any class: PRN kept it, perhaps relabelled it) and
that lies mostly (share >= ``min_unclaimed``) on free pixels: for a base thing, pixels PRN gave to stuff or void,
or to an "orphan" (a refined thing that matches no base segment: where it overlaps an unmatched base thing it is
mostly the same object drawn worse at stride 4; an orphan that loses most of its pixels this way is dissolved,
its rest void); for a base stuff segment, pixels PRN left void. Only the free pixels are restored, with the
base's category, so refined segments that match a base segment are never cut. Base segments are visited things first, then largest first; each restored one
claims its pixels.

:func:`snap_to_base` keeps the base's full-resolution thing boundaries where PRN's stride-4 outputs are unsure.
:func:`separate_joined_base_things` undoes PRN's joins of base things that barely touch, and
:func:`keep_base_thing_classes` keeps the base's class of every thing PRN redrew.
Everything is a few bincounts over the packed (refined, base) id pairs. The maps are turned into dense labels
once (:func:`dense_labels`): a base map whose ids are known from its ``segments_info`` is labelled by a binary
search over those ids instead of a sort of every pixel, which is most of the time at large photo sizes.
"""

from __future__ import annotations

import numpy as np


def dense_labels(ids: np.ndarray, known=None) -> tuple[np.ndarray, np.ndarray]:
    """``(values, labels)``: ``values`` sorted int64 ids and ``labels`` (N,) int32, the flat index of each pixel's
    id in ``values``, so that ``values[labels] == ids.ravel()``; as ``np.unique(ids, return_inverse=True)``, except
    that with ``known`` (the ids the map may hold, e.g. its ``segments_info`` ids; 0 is always added) ``values`` may
    list ids without pixels.

    No sort of the pixels: with ``known``, a binary search over the few ids (a pixel whose id is not in ``known``
    falls back to the general case); small ids (< 2^16) go through a lookup table; other ids through numpy's
    hash-based ``unique`` and a binary search. 3-10x faster than ``np.unique(..., return_inverse=True)``.
    """
    flat = np.asarray(ids).ravel()
    if known is not None:
        values = np.union1d(np.fromiter((int(v) for v in known), dtype=np.int64), np.zeros(1, np.int64))
        labels = np.searchsorted(values, flat).astype(np.int32)
        if flat.size == 0 or (int(labels.max()) < len(values) and np.array_equal(values[labels], flat)):
            return values, labels
        return dense_labels(ids)
    if flat.size and flat.dtype.kind in "ui" and int(flat.min()) >= 0 and int(flat.max()) < 2 ** 16:
        present = np.bincount(flat) > 0
        values = np.flatnonzero(present).astype(np.int64)
        rank = (np.cumsum(present) - 1).astype(np.int32)
        return values, rank[flat]
    values = np.unique(flat).astype(np.int64)       # hash-based in numpy 2: no sort of the pixels
    return values, np.searchsorted(values, flat).astype(np.int32)


def pair_counts(a_labels: np.ndarray, na: int, b_labels: np.ndarray, nb: int, *, return_joint: bool = False):
    """(na, nb) int64 pixel counts of every (a label, b label) pair, from two label maps of one size; with
    ``return_joint`` also each pixel's pair index ``a * nb + b``, to read per-pair tables at every pixel."""
    dtype = np.int32 if na * nb < 2 ** 31 else np.int64
    joint = a_labels.astype(dtype) * dtype(nb)
    joint += b_labels
    counts = np.bincount(joint, minlength=na * nb).reshape(na, nb)
    return (counts, joint) if return_joint else counts


def restore_base_segments(ids: np.ndarray, segments: list[dict], base_ids: np.ndarray, base_segments: list[dict],
                          thing_category_ids: set[int], *, stuff: bool = True, replace_orphans: bool = True,
                          min_unclaimed: float = 0.5, match_iou: float = 0.5, reclaim_other_classes: bool = False,
                          base_labels: tuple[np.ndarray, np.ndarray] | None = None,
                          labels: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, list[dict]]:
    """``(ids, segments)`` of PRN's result with the dropped base segments put back (see the module docstring).

    ``ids`` / ``base_ids``: (H, W) integer id maps (0 = void); ``segments`` / ``base_segments``: their
    ``segments_info`` (``id``, ``category_id``). New segments take the base's id when it is free, else the
    smallest free id; their score is the base segment's, else 1.0. ``stuff=False`` restores things only;
    ``replace_orphans=False`` leaves orphans alone (measured: worse, see models/README.md). With
    ``reclaim_other_classes`` a base thing that no refined segment matches may also take back its pixels from
    refined things of another category (PRN swallowed it into a neighbour; a split PRN repaired is one category,
    so it is never undone). ``base_labels`` and
    ``labels``: :func:`dense_labels` of ``base_ids`` and ``ids``, when the caller has them already.
    """
    if ids.shape != base_ids.shape:
        raise ValueError(f"refined map {ids.shape} and base map {base_ids.shape} differ in size")
    if not base_segments:
        return ids, segments
    refined_thing_ids = np.array(sorted(int(s["id"]) for s in segments
                                        if int(s["category_id"]) in thing_category_ids), dtype=np.int64)
    r = ids.astype(np.int64).ravel()
    b_uniq, b_inv = base_labels if base_labels is not None else dense_labels(base_ids)
    r_uniq, r_inv = labels if labels is not None else dense_labels(r)
    r_is_void = r == 0
    inter, joint = pair_counts(b_inv, len(b_uniq), r_inv, len(r_uniq), return_joint=True)
    base_area, r_area = inter.sum(1), inter.sum(0)
    iou = inter / np.maximum(base_area[:, None] + r_area[None, :] - inter, 1)
    iou[b_uniq == 0, :] = 0
    iou[:, r_uniq == 0] = 0
    best_iou = iou.max(axis=1)
    # Only pixels PRN gave to nothing better are free. Taking pixels back from a refined thing that matches another
    # base segment (undoing a merge) was measured and is worse: it also undoes the splits PRN repairs (on training
    # images 901-1000 with GT corrupted at 0.5: PQ 70.1 -> 69.8, things 55.8 -> 55.2).
    # A refined thing that matches no base segment at all ("orphan") is PRN's own reading of the place; where it
    # overlaps a base thing that nothing matches, it is most often the same object drawn worse at stride 4.
    thing_r = np.isin(r_uniq, refined_thing_ids)
    orphan_r = thing_r & (iou.max(axis=0) <= match_iou)
    free_r = ~thing_r | orphan_r if replace_orphans else ~thing_r
    if reclaim_other_classes:
        # which refined segments' pixels each base segment may take: a per-(base, refined) table read through
        # each pixel's pair index
        r_cat = {int(s["id"]): int(s["category_id"]) for s in segments}
        b_cat = {int(s["id"]): int(s["category_id"]) for s in base_segments}
        r_cats = np.array([r_cat.get(int(v), -1) for v in r_uniq], dtype=np.int64)
        b_cats = np.array([b_cat.get(int(v), -2) for v in b_uniq], dtype=np.int64)
        may_take = free_r[None, :] | (thing_r[None, :] & (r_cats[None, :] != b_cats[:, None]))
        free_for_thing = may_take.ravel()[joint]
        free_thing_area = (inter * may_take).sum(1)
    else:
        free_for_thing = free_r[r_inv]
        free_thing_area = np.bincount(b_inv[free_for_thing], minlength=len(b_uniq))
    free_area = {True: free_thing_area, False: np.bincount(b_inv[r_is_void], minlength=len(b_uniq))}
    index = {int(v): k for k, v in enumerate(b_uniq)}
    used = set(int(s["id"]) for s in segments) | {0}
    restored: set[int] = set()
    new_segments = list(segments)
    # Base segments cover disjoint pixels, so which ones come back and under which id is decided per segment
    # first; their pixels are then written in one pass over the map.
    new_id_of = np.zeros(len(b_uniq), dtype=np.int64)
    thing_of = np.zeros(len(b_uniq), dtype=bool)

    def order(seg):
        return (int(seg["category_id"]) not in thing_category_ids, -base_area[index.get(int(seg["id"]), 0)])

    for seg in sorted(base_segments, key=order):
        k = index.get(int(seg["id"]))
        if k is None or base_area[k] == 0 or new_id_of[k]:
            continue
        is_thing = int(seg["category_id"]) in thing_category_ids
        if not is_thing and not stuff:
            continue
        # free_area > 0 here, so the segment has free pixels to restore
        if best_iou[k] > match_iou or free_area[is_thing][k] < max(min_unclaimed * base_area[k], 1):
            continue
        new_id = int(seg["id"])
        if new_id in used:      # smallest free id: ids stay below 256**3, as the PNG encoding needs
            new_id = 1
            while new_id in used:
                new_id += 1
        used.add(new_id)
        restored.add(new_id)
        new_id_of[k], thing_of[k] = new_id, is_thing
        new_segments.append({"id": new_id, "category_id": int(seg["category_id"]), "iscrowd": 0,
                             "score": float(seg.get("score", 1.0))})
    out = r.copy()
    if restored:
        new_id_at = new_id_of[b_inv]
        taken = (new_id_at > 0) & np.where(thing_of[b_inv], free_for_thing, r_is_void)
        out[taken] = new_id_at[taken]
    else:
        taken = np.zeros(r.shape, dtype=bool)
    lost = np.bincount(r_inv[taken], minlength=len(r_uniq)) if restored else np.zeros(len(r_uniq), np.int64)
    dissolved = np.zeros(len(r_uniq), dtype=bool)
    if replace_orphans and restored:
        # an orphan that lost most of its pixels to a restored base thing was that thing: its rest becomes void
        dissolved = orphan_r & (lost > 0.5 * r_area)
        out[dissolved[r_inv] & ~taken] = 0
    # a segment may have lost all its pixels to restored things; restored segments all have pixels
    present = set(r_uniq[(r_area - lost > 0) & ~dissolved].tolist()) | restored
    new_segments = [s for s in new_segments if int(s["id"]) in present]
    return out.reshape(ids.shape).astype(ids.dtype, copy=False), new_segments


def confidence_map(outputs: dict, foreground_source: str):
    """PRN's per-pixel confidence (H, W) in [0, 1]: the top semantic softmax probability, and with the foreground
    branch the lower of that and the foreground decision's probability (max(p, 1 - p))."""
    semantic = outputs["semantic"]
    c, h, w = semantic.shape
    foreground = outputs.get("foreground") if foreground_source == "foreground" else None
    flat = confidence_at(semantic.reshape(c, h * w), None if foreground is None else foreground.reshape(1, h * w))
    return flat.reshape(h, w)


def confidence_at(semantic, foreground=None):
    """:func:`confidence_map` of N pixels: ``semantic`` (C, N) logits, ``foreground`` (1, N) logits or None.

    The top softmax probability is computed as 1 / sum_c exp(l_c - max_c l): no (C, N) division and no second
    reduction, and the same arithmetic for every pixel whether the map is whole or a gathered subset (so
    :func:`snap_to_base` may ask for only the pixels it could move)."""
    import torch

    logits = semantic.detach().float()
    top = logits.amax(0)
    conf = torch.exp(logits - top).sum(0).reciprocal_()
    if foreground is not None:
        p = torch.sigmoid(foreground.detach().float()[0])
        conf = torch.minimum(conf, torch.maximum(p, 1 - p))
    return conf


def snap_to_base(ids: np.ndarray, base_ids: np.ndarray, uncertain: np.ndarray, thing_segment_ids=None, *,
                 match_iou: float = 0.5, base_labels: tuple[np.ndarray, np.ndarray] | None = None,
                 labels: tuple[np.ndarray, np.ndarray] | None = None, return_labels: bool = False):
    """Where PRN is unsure (``uncertain``: (H, W) bool, or a function from flat pixel indices (int64) to their bool
    values, asked only for the pixels that could move), give each pixel to the refined segment that matches the
    base's segment there (IoU > ``match_iou``; unique), so a boundary PRN only blurred keeps the base's full-resolution
    shape. Pixels whose base segment has no refined match keep PRN's label. With ``thing_segment_ids`` (refined
    segment ids that are things) only pixels that are, or would become, a thing move: stuff-to-stuff boundaries stay
    PRN's. Segments never appear or vanish here except when all of a segment's pixels move (the caller drops empty
    segments). ``base_labels`` and ``labels``: :func:`dense_labels` of ``base_ids`` and ``ids``, when the caller has
    them already; with ``return_labels`` the result is ``(ids, labels)``, the labels of the snapped map over the
    same values as ``ids``' (pixels only move between refined segments)."""
    if ids.shape != base_ids.shape or (not callable(uncertain) and ids.shape != uncertain.shape):
        raise ValueError("refined map, base map and uncertainty map must have one size")
    r_uniq, r_inv = labels if labels is not None else dense_labels(ids.astype(np.int64))
    b_uniq, b_inv = base_labels if base_labels is not None else dense_labels(base_ids)
    inter, joint = pair_counts(b_inv, len(b_uniq), r_inv, len(r_uniq), return_joint=True)
    union = inter.sum(1)[:, None] + inter.sum(0)[None, :] - inter
    iou = inter / np.maximum(union, 1)
    iou[b_uniq == 0, :] = 0
    iou[:, r_uniq == 0] = 0
    matched = iou > match_iou
    target_label = np.where(matched.any(1), matched.argmax(1), -1)     # base segment -> its refined match
    target = np.where(target_label >= 0, r_uniq[np.maximum(target_label, 0)], -1)
    # which (base segment, refined segment) pairs may move, read at every pixel through its pair index
    may_move = np.repeat((target_label >= 0)[:, None], len(r_uniq), axis=1)
    if thing_segment_ids is not None:
        things = np.array(sorted(int(v) for v in thing_segment_ids), dtype=np.int64)
        may_move &= np.isin(r_uniq, things)[None, :] | np.isin(target, things)[:, None]
    move = may_move.ravel()[joint]
    if callable(uncertain):
        candidates = np.flatnonzero(move)
        move[candidates] = np.asarray(uncertain(candidates), dtype=bool)
    else:
        move &= uncertain.ravel()
    moved_to = target_label[b_inv[move]]
    out = np.array(ids, copy=True).ravel()
    out[move] = r_uniq[moved_to].astype(out.dtype, copy=False)
    out = out.reshape(ids.shape)
    if not return_labels:
        return out
    out_labels = r_inv.copy()
    out_labels[move] = moved_to
    return out, (r_uniq, out_labels)


def separate_joined_base_things(ids: np.ndarray, segments: list[dict], base_ids: np.ndarray,
                                base_segments: list[dict], thing_category_ids: set[int], *, min_contact: float,
                                base_labels: tuple[np.ndarray, np.ndarray] | None = None
                                ) -> tuple[np.ndarray, list[dict]]:
    """``(ids, segments)`` with the base things that PRN joined into one refined thing separated again, unless they
    touch along a boundary of at least ``min_contact`` x sqrt(the smaller one's area) pixels.

    A refined thing *joins* the base things (of any thing category) that have more than half their pixels in it.
    A base that fired twice on one object leaves two pieces cut along a line through the object, sharing a
    boundary about as long as the object is wide; two objects that PRN swallowed into one often touch at a few
    pixels or not at all (contact in 4-neighbour pixel pairs; measured values in models/README.md), and two base
    things of different categories are two objects. Pieces of one category are linked where they touch enough;
    the linked group with the most pixels keeps the refined segment, every other group becomes a new segment of
    its pieces' category (the largest piece's) made of their pixels inside the refined one. Other pixels of the
    refined segment stay where they are. ``min_contact`` <= 0 changes nothing. ``base_labels``: :func:`dense_labels` of ``base_ids``.
    """
    if min_contact <= 0 or not base_segments:
        return ids, segments
    if ids.shape != base_ids.shape:
        raise ValueError(f"refined map {ids.shape} and base map {base_ids.shape} differ in size")
    r_cat = {int(s["id"]): int(s["category_id"]) for s in segments if int(s["category_id"]) in thing_category_ids}
    b_cat = {int(s["id"]): int(s["category_id"]) for s in base_segments
             if int(s["category_id"]) in thing_category_ids}
    if not r_cat or len(b_cat) < 2:
        return ids, segments
    b_uniq, b_inv = base_labels if base_labels is not None else dense_labels(base_ids)
    r_uniq, r_inv = dense_labels(ids, known=[s["id"] for s in segments])
    inter = pair_counts(b_inv, len(b_uniq), r_inv, len(r_uniq))
    base_area = inter.sum(1)
    b_cats = np.array([b_cat.get(int(v), -1) for v in b_uniq], dtype=np.int64)
    r_cats = np.array([r_cat.get(int(v), -2) for v in r_uniq], dtype=np.int64)
    # (base thing, refined thing) pairs where the base thing is mostly inside the refined one; a base thing PRN
    # renamed to another class and left alone is one member, not a join
    inside = (b_cats[:, None] != -1) & (r_cats[None, :] != -2) & (2 * inter > base_area[:, None])
    joins = np.flatnonzero(inside.sum(0) >= 2)
    if joins.size == 0:
        return ids, segments
    # pixels of a joining refined segment, labelled by their base piece (-1 elsewhere)
    h, w = ids.shape
    piece = np.full(h * w, -1, dtype=np.int64)
    in_join = inside.ravel()[b_inv.astype(np.int64) * len(r_uniq) + r_inv] & np.isin(r_inv, joins)
    piece[in_join] = b_inv[in_join]
    piece = piece.reshape(h, w)
    # contact of every two pieces: 4-neighbour pixel pairs inside one refined segment
    r_map = r_inv.reshape(h, w)
    nb = len(b_uniq)
    contact = np.zeros(nb * nb, dtype=np.int64)
    for a, b, ra, rb in ((piece[:, :-1], piece[:, 1:], r_map[:, :-1], r_map[:, 1:]),
                         (piece[:-1], piece[1:], r_map[:-1], r_map[1:])):
        edge = (a >= 0) & (b >= 0) & (a != b) & (ra == rb)
        lo, hi = np.minimum(a[edge], b[edge]), np.maximum(a[edge], b[edge])
        contact += np.bincount(lo * nb + hi, minlength=nb * nb)
    contact = contact.reshape(nb, nb)
    out = ids.copy()
    used = set(int(s["id"]) for s in segments) | {0}
    new_segments = list(segments)
    by_id = {int(s["id"]): s for s in segments}
    next_id = 1
    for r in joins.tolist():
        members = np.flatnonzero(inside[:, r])
        area = inter[members, r]
        parent = list(range(len(members)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                a, b = sorted((int(members[i]), int(members[j])))
                if b_cats[a] == b_cats[b] and contact[a, b] >= min_contact * np.sqrt(min(area[i], area[j])):
                    parent[root(j)] = root(i)
        groups: dict[int, list[int]] = {}
        for i in range(len(members)):
            groups.setdefault(root(i), []).append(i)
        if len(groups) < 2:
            continue
        keep = max(groups.values(), key=lambda g: int(area[g].sum()))
        source = by_id[int(r_uniq[r])]
        for g in groups.values():
            if g is keep:
                continue
            while next_id in used:    # ids stay small, below 256**3 as the PNG encoding needs
                next_id += 1
            used.add(next_id)
            mask = np.isin(piece, members[g]) & (r_map == r)
            out[mask] = next_id
            largest = members[g][int(np.argmax(area[g]))]
            new_segments.append({**source, "id": next_id, "category_id": int(b_cats[largest])})
    return out, new_segments


def keep_base_thing_classes(ids: np.ndarray, segments: list[dict], base_ids: np.ndarray, base_segments: list[dict],
                            thing_category_ids: set[int], *, match_iou: float = 0.5,
                            base_labels: tuple[np.ndarray, np.ndarray] | None = None) -> list[dict]:
    """``segments`` with every refined thing that matches a base thing (IoU > ``match_iou``) given the base thing's
    category: PRN may redraw a base thing, not rename it to another thing class. A thing PRN made from stuff, or
    turned into stuff, is left alone. The id map does not change."""
    if not base_segments or not segments:
        return segments
    b_cat = {int(s["id"]): int(s["category_id"]) for s in base_segments
             if int(s["category_id"]) in thing_category_ids}
    r_cat = {int(s["id"]): int(s["category_id"]) for s in segments if int(s["category_id"]) in thing_category_ids}
    if not b_cat or not r_cat:
        return segments
    b_uniq, b_inv = base_labels if base_labels is not None else dense_labels(base_ids)
    r_uniq, r_inv = dense_labels(ids, known=[s["id"] for s in segments])
    inter = pair_counts(b_inv, len(b_uniq), r_inv, len(r_uniq))
    iou = inter / np.maximum(inter.sum(1)[:, None] + inter.sum(0)[None, :] - inter, 1)
    b_thing = np.array([int(v) in b_cat for v in b_uniq])
    iou[~b_thing, :] = 0
    best = iou.argmax(0)
    renamed = {}
    for k, rid in enumerate(r_uniq.tolist()):
        if rid in r_cat and iou[best[k], k] > match_iou:
            cat = b_cat[int(b_uniq[best[k]])]
            if cat != r_cat[rid]:
                renamed[rid] = cat
    if not renamed:
        return segments
    return [{**s, "category_id": renamed[int(s["id"])]} if int(s["id"]) in renamed else s for s in segments]
