"""Predictors: a checkpoint made ready to run on images in memory, as detectron2's ``DefaultPredictor`` does.

- :class:`Segmenter` runs MS-PanopticFPN: an RGB image -> a panoptic segmentation.
- :class:`Refiner` runs PRN: an RGB image plus any base panoptic segmentation of it -> the refined one.

Both are built from a checkpoint (``None`` = the shipped one), a device (``"auto"``, ``"cpu"``, ``"cuda"``,
``"cuda:N"``) and typed overrides of the thresholds stored in the checkpoint, or from a model already in memory
(validation during training). Each has ``__call__`` for one image and ``predict_batch`` for several; results
are :class:`PanopticPrediction` (an id map whose ids are listed in ``segments``, COCO panoptic style).

Example::

    from prn_cli.predictors import Segmenter, Refiner
    from prn_cli.io import read_photo

    rgb = read_photo("data/images/val/000000000001.jpg")
    base = Segmenter(device="cpu")(rgb)
    refined = Refiner(device="cpu")(rgb, base.ids, base.segments)
    print(len(base.segments), "->", len(refined.segments))

Commands (``prn segment``, ``prn refine``, ``prn demo``, ``prn ablate``) and validation during training use
these classes; the set-level work (pairing, writing, resuming, reporting) stays in ``segment.py`` and
``refine.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InvalidInputError
from .options import PostProcessOverrides, ProcessingSize, SegmentOverrides


@dataclass
class PanopticPrediction:
    """One image's panoptic segmentation: ``ids`` (H, W) uint32, 0 = void; ``segments`` lists every other id as
    ``{"id", "category_id", "iscrowd", "score"}`` (COCO panoptic ``segments_info`` without area and bbox, which
    the writer computes)."""

    ids: np.ndarray
    segments: list[dict] = field(default_factory=list)


def _resolve_weights(weights: str | os.PathLike | None, kind: str) -> Path:
    if weights is not None:
        return Path(weights)
    from .shipped import shipped_weights

    return shipped_weights(kind)


# --------------------------------------------------------------------------------------------------------------
# MS-PanopticFPN


class Segmenter:
    """MS-PanopticFPN (``prn train base`` checkpoints) as a predictor.

    Args:
        weights: checkpoint path; ``None`` = the shipped base model.
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"``.
        overrides: thresholds replacing the checkpoint's ``InferenceConfig`` values (None fields keep them).
        processing_size: the size the network and the fusion run at (default: shorter side at most 800,
            longer side at most 1333); the id map is then enlarged to the image's size.
    """

    def __init__(self, weights: str | os.PathLike | None = None, *, device: str = "auto",
                 overrides: SegmentOverrides | None = None, processing_size: ProcessingSize | None = None):
        from .checkpoint import load_checkpoint
        from .models.ms_panoptic_fpn.config import MSPanopticFPNConfig
        from .models.ms_panoptic_fpn.model import build_model
        from .runtime import resolve_device

        self.weights = _resolve_weights(weights, "base")
        self.device = resolve_device(device)
        ckpt = load_checkpoint(self.weights, kind="base")
        config = MSPanopticFPNConfig.from_dict(ckpt["config"])
        config.inference = (overrides or SegmentOverrides()).apply(config.inference)
        model = build_model(config, ckpt["categories"])
        model.load_state_dict(ckpt["state_dict"])
        self._setup(model, ckpt["categories"], config.size_divisibility, processing_size)
        self.training_data = ckpt.get("training_data")   # what its images looked like (training_data.py)

    @classmethod
    def from_model(cls, model, categories: Sequence[dict], size_divisibility: int,
                   processing_size: ProcessingSize | None = None) -> "Segmenter":
        """A predictor around a model in memory (e.g. during training), on the model's device."""
        self = cls.__new__(cls)
        self.weights = None
        self.device = next(model.parameters()).device
        self._setup(model, list(categories), size_divisibility, processing_size)
        return self

    def _setup(self, model, categories, size_divisibility: int, processing_size: ProcessingSize | None) -> None:
        self.model = model.to(self.device).eval()
        self.categories = list(categories)
        self.size_divisibility = int(size_divisibility)
        self.processing_size = processing_size or ProcessingSize()

    @property
    def inference_config(self):
        return self.model.config.inference

    def __call__(self, rgb: np.ndarray) -> PanopticPrediction:
        """Segment one (H, W, 3) uint8 RGB image."""
        return self.predict_batch([rgb])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[PanopticPrediction]:
        """Segment several RGB images in one forward pass (sizes may differ; they are padded).

        Each image is shrunk to the processing size, segmented there (network and fusion), and its id map is
        enlarged by nearest neighbour to the image's size: no full-resolution float work.
        """
        import torch

        from .data import collate, normalize, resize_image
        from .resize import resize_ids

        if not images:
            return []
        tensors = []
        for rgb in images:
            tensors.append((resize_image(normalize(rgb), self.processing_size.shape_for(*rgb.shape[:2])), None))
        batch, _, sizes = collate(tensors, size_divisibility=self.size_divisibility)
        del tensors
        with torch.inference_mode():
            outputs = self.model(batch.to(self.device), image_sizes=sizes)
            results = []
            for rgb, out in zip(images, outputs):
                ids, segments = self.model.panoptic(out)
                ids = ids.cpu().numpy() if hasattr(ids, "cpu") else np.asarray(ids)
                ids = resize_ids(ids.astype(np.uint32, copy=False), rgb.shape[:2])
                segments = [{k: (float(v) if k == "score" else int(v)) for k, v in s.items()} for s in segments]
                results.append(PanopticPrediction(ids, segments))
        return results


# --------------------------------------------------------------------------------------------------------------
# PRN

#: the keys of :meth:`Refiner.prepare`'s result that the network reads
NETWORK_INPUTS = ("image", "base_semantic", "base_maps")


def refiner_postprocess(stored: dict, config, overrides: PostProcessOverrides | None, where) -> object:
    """The post-processing a PRN runs with: the checkpoint's stored values (``stored["postprocess"]``) with
    ``overrides``, checked against the network's branches (``config``, a ``PRNConfig``)."""
    try:
        post = (overrides or PostProcessOverrides()).apply(dict(stored.get("postprocess", {})))
    except ValueError as exc:
        raise InvalidInputError(f"{where}: post-processing options: {exc}") from None
    from .models.prn.postprocess import missing_network_parts

    for need in missing_network_parts(post, config.to_dict()):
        trained = (f" (or train one: {need.field} in --config; ONNX exports leave it out)"
                   if need.module == "extension" else "")
        raise InvalidInputError(f"{where}: {need.lacking}; {need.fix}{trained}")
    return post


class Refiner:
    """PRN (``prn train prn`` checkpoints) as a predictor of refined panoptic segmentations.

    Args:
        weights: checkpoint path; ``None`` = the shipped PRN.
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"``.
        overrides: post-processing replacing the checkpoint's stored ``PostProcessConfig`` values.
        processing_size: the size PRN and its post-processing run at (default: shorter side at most 800, longer
            side at most 1333). The refined id map is enlarged to the image's size, and the fusion with the base
            (``restore_base_segments``, ``base_snap_confidence``, ``min_join_contact``,
            ``keep_base_thing_class``) works there on integer maps.

    A base is given as its id map (H, W) and its ``segments_info`` (``id`` and ``category_id`` of the
    checkpoint's categories; map other ids first, see ``refine.category_translation``).
    """

    def __init__(self, weights: str | os.PathLike | None = None, *, device: str = "auto",
                 overrides: PostProcessOverrides | None = None, processing_size: ProcessingSize | None = None):
        from .checkpoint import load_checkpoint
        from .models.prn.config import PRNConfig
        from .models.prn.model import build_model
        from .models.prn.render import RenderConfig
        from .runtime import resolve_device

        self.weights = _resolve_weights(weights, "prn")
        self.device = resolve_device(device)
        ckpt = load_checkpoint(self.weights, kind="prn")
        stored = ckpt["config"]
        config = PRNConfig.from_dict(stored["model"])
        post = refiner_postprocess(stored, config, overrides, self.weights)
        model = build_model(config, ckpt["categories"])
        model.load_state_dict(ckpt["state_dict"])
        self._setup(model, ckpt["categories"], RenderConfig(**stored.get("render", {})), post, processing_size)
        self.training_data = ckpt.get("training_data")   # what its images looked like (training_data.py)

    @classmethod
    def from_model(cls, model, categories: Sequence[dict], render_config, postprocess_config,
                   processing_size: ProcessingSize | None = None) -> "Refiner":
        """A predictor around a model in memory (e.g. during training), on the model's device."""
        self = cls.__new__(cls)
        self.weights = None
        self.device = next(model.parameters()).device
        self._setup(model, list(categories), render_config, postprocess_config, processing_size)
        return self

    def _setup(self, model, categories, render_config, postprocess_config,
               processing_size: ProcessingSize | None) -> None:
        import torch

        from .models.categories import CategoryMap

        self.model = model.to(self.device).eval()
        self.categories = list(categories)
        self.category_map = CategoryMap.from_categories(self.categories)
        self.render_config = render_config
        self.postprocess_config = postprocess_config
        if getattr(self.model, "boundary", None) is not None:
            # computed by the post-processing, only near the final things' boundaries (_thing_foreground)
            self.model.run_boundary = False
        self.processing_size = processing_size or ProcessingSize()
        self._thing = torch.zeros(self.category_map.num_classes, dtype=torch.bool, device=self.device)
        for cid in self.category_map.thing_ids:
            self._thing[self.category_map.class_index(cid)] = True

    def __call__(self, rgb: np.ndarray, base_ids, base_segments: Sequence[dict] | None = None) -> PanopticPrediction:
        """Refine one base segmentation of the (H, W, 3) uint8 RGB image ``rgb``: ``base_ids`` and
        ``base_segments``, or as one argument the ``(ids, segments_info)`` that a converter of
        :mod:`prn_cli.convert` returns (or a :class:`PanopticPrediction`)."""
        if base_segments is None:
            base_ids, base_segments = (base_ids.ids, base_ids.segments) if isinstance(base_ids, PanopticPrediction) \
                else base_ids
        return self.predict_batch([(rgb, base_ids, base_segments)])[0]

    def prepare(self, rgb: np.ndarray, base_ids: np.ndarray, base_segments: Sequence[dict], *,
                where: str = "") -> dict:
        """PRN's input maps for one image at the processing size (the image shrunk when it is larger, the base
        map with it by nearest neighbour, then rendered by the training-target renderer), and ``photo_size``."""
        import torch

        from .data import normalize, resize_image
        from .refine_data import render_base
        from .resize import resize_ids

        if base_ids.shape != rgb.shape[:2]:
            raise InvalidInputError(f"{where or 'base'}: base map is {base_ids.shape[1]}x{base_ids.shape[0]} but "
                                    f"the image is {rgb.shape[1]}x{rgb.shape[0]}; predict the base at the image's "
                                    "size")
        segs = [{"id": int(s["id"]), "category_id": int(s["category_id"]), "iscrowd": 0} for s in base_segments]
        size = self.processing_size.shape_for(*rgb.shape[:2])
        small_ids = resize_ids(np.asarray(base_ids), size)
        base_sem, base_maps = render_base(torch.from_numpy(small_ids.astype(np.int64)), segs,
                                          self.category_map, self.render_config, where=where)
        return {"image": resize_image(normalize(rgb), size), "base_semantic": base_sem, "base_maps": base_maps,
                "photo_size": tuple(int(v) for v in rgb.shape[:2])}

    def predict_batch(self, items: Sequence[tuple[np.ndarray, np.ndarray, Sequence[dict]]]) -> list[PanopticPrediction]:
        """Refine several ``(rgb, base_ids, base_segments)`` in one forward pass."""
        return self.predict_prepared([self.prepare(*item) for item in items],
                                     bases=[(ids, segs) for _, ids, segs in items])

    def predict_prepared(self, prepared: Sequence[dict],
                         bases: Sequence[tuple[np.ndarray, Sequence[dict]]] | None = None) -> list[PanopticPrediction]:
        """Refine inputs made by :meth:`prepare`; ``bases`` (each base's id map and segments) are needed when the
        post-processing restores the base's dropped things."""
        import torch

        from .refine_data import collate_refine

        if not prepared:
            return []
        post = self.postprocess_config
        if post.fuses_with_base and bases is None:
            raise ValueError("fusing with the base needs the base of every image (bases=...)")
        inputs, _ = collate_refine([({k: p[k] for k in NETWORK_INPUTS}, None) for p in prepared], size_divisibility=32)
        with torch.inference_mode():
            outputs = self.model({k: v.to(self.device) for k, v in inputs.items()})
            results = []
            for i, p in enumerate(prepared):
                h, w = p["base_semantic"].shape[-2:]
                one = {k: v[i, :, :h, :w] for k, v in outputs.items()}
                results.append(self.postprocess(one, p.get("photo_size", (h, w)),
                                                bases[i] if bases is not None else None,
                                                inputs={k: v[i:i + 1] for k, v in inputs.items()}))
        return results

    def postprocess(self, outputs: dict, photo_size: tuple[int, int],
                    base: tuple[np.ndarray, Sequence[dict]] | None = None, *,
                    inputs: dict | None = None) -> PanopticPrediction:
        """One image's PRN output maps (at the processing size, no batch dimension) -> its refined segmentation
        at ``photo_size``: PRN's post-processing at the processing size, the id map enlarged by nearest
        neighbour, then the fusion with ``base`` (its full-size id map and segments) on integer maps. ``inputs``:
        the image's network inputs as collated (batch of one, padded), which the boundary re-cut needs unless
        ``outputs`` hold ``thing_foreground``."""
        from .models.prn.base_fusion import (dense_labels, keep_base_thing_classes, restore_base_segments,
                                             separate_joined_base_things, snap_to_base)
        from .models.prn.postprocess import panoptic_from_outputs
        from .resize import resize_ids
        from .synth import random_segment_ids

        post = self.postprocess_config
        height, width = (int(v) for v in photo_size)
        seg_map, infos = panoptic_from_outputs(outputs, self._thing, post)
        seg_map = seg_map.cpu().numpy()
        # COCO-like ids (random colours), reproducible per image
        rng = np.random.default_rng(np.random.SeedSequence([height, width, len(infos), 11]))
        new_ids = random_segment_ids(rng, len(infos))
        lut = np.zeros(int(seg_map.max(initial=0)) + 1, np.uint32)
        segs = []
        for info, sid in zip(infos, new_ids):
            lut[info["index"]] = sid
            segs.append({"id": int(sid), "category_id": int(self.category_map.class_ids[info["class_index"]]),
                         "iscrowd": 0, "score": round(float(info.get("score", 1.0)), 4)})
        ids = resize_ids(lut[seg_map], (height, width))
        if post.fuses_with_base:
            base_ids = np.asarray(base[0])
            base_labels = dense_labels(base_ids, known=[s["id"] for s in base[1]])
            # the refined map's dense labels come from the segment indices: no search over its pixels
            values = np.unique(lut)
            labels = (values, resize_ids(np.searchsorted(values, lut).astype(np.int32)[seg_map], (height, width)).ravel())
        if post.base_snap_confidence > 0:
            things = {s["id"] for s in segs if s["category_id"] in self.category_map.thing_ids}
            ids, labels = snap_to_base(ids, base_ids, self._unsure_pixels(outputs, (height, width)), things,
                                       base_labels=base_labels, labels=labels, return_labels=True)
            present = set(labels[0][np.bincount(labels[1], minlength=len(labels[0])) > 0].tolist())
            segs = [s for s in segs if s["id"] in present]
        if post.restore_base_segments != "none":
            ids, segs = restore_base_segments(ids, segs, base_ids, list(base[1]), set(self.category_map.thing_ids),
                                              stuff=post.restore_base_segments == "all",
                                              reclaim_other_classes=post.reclaim_other_classes,
                                              base_labels=base_labels,
                                              labels=labels)
        if post.min_join_contact > 0:
            ids, segs = separate_joined_base_things(ids, segs, base_ids, list(base[1]),
                                                    set(self.category_map.thing_ids),
                                                    min_contact=post.min_join_contact, base_labels=base_labels)
        if post.keep_base_thing_class:
            segs = keep_base_thing_classes(ids, segs, base_ids, list(base[1]), set(self.category_map.thing_ids),
                                           base_labels=base_labels)
        if post.boundary_radius > 0:
            ids, segs = self._refine_boundaries(ids, segs, self._thing_foreground(outputs, inputs, ids, segs),
                                                (height, width))
        read: dict[int, np.ndarray] = {}
        if post.classifier_confidence > 0 or post.classifier_remove_confidence > 0:
            ids, segs, read = self._reclassify_things(ids, segs, outputs, inputs)
        if post.classifier_split_confidence > 0:
            ids, segs = self._split_merged_things(ids, segs, outputs, inputs, read=read)
        if post.void_thing_confidence > 0:
            ids, segs = self._find_void_things(ids, segs, outputs, inputs)
        return PanopticPrediction(ids, segs)

    def _find_void_things(self, ids: np.ndarray, segs: list[dict], outputs: dict,
                          inputs: dict | None) -> tuple[np.ndarray, list[dict]]:
        """``(ids, segs)`` with new things where the refined map leaves void and PRN's semantic head says thing
        (models/prn/void_things.py): each such region of at least ``void_thing_min_area`` pixels at the processing
        size, read by the thing classifier as a thing mask, becomes a thing of the classifier's class where that
        class's probability is above ``void_thing_confidence``. Only void pixels of the photo-size map are painted;
        the score of a new thing is that probability."""
        import torch

        from .models.prn.classifier import thing_crops
        from .models.prn.postprocess import channel_argmax
        from .models.prn.void_things import void_thing_regions
        from .resize import resize_ids
        from .synth import random_segment_ids

        if inputs is None:
            raise ValueError("the search for void things needs the network inputs (postprocess(..., inputs=...))")
        post = self.postprocess_config
        semantic = outputs["semantic"]
        h, w = semantic.shape[-2:]
        void = resize_ids(ids, (h, w)) == 0
        # the class argmax of the void pixels only: over the whole map it would cost more than the rest of the step
        flat = np.flatnonzero(void)
        thing_argmax = np.zeros((h, w), dtype=bool)
        if flat.size:
            logits = semantic.reshape(semantic.shape[0], -1).index_select(1, torch.from_numpy(flat).to(semantic.device))
            thing_argmax.ravel()[flat] = self._thing[channel_argmax(logits)].cpu().numpy()
        regions, kept = void_thing_regions(void, thing_argmax, post.void_thing_min_area)
        if not kept:
            return ids, segs
        image = inputs["image"][0, :, :h, :w].float().cpu()
        classifier = self.model.classifier
        crops = thing_crops(image, torch.from_numpy(regions.astype(np.int64)), kept, classifier.crop_size)
        probability = classifier.probabilities(crops.to(next(classifier.parameters()).device)).cpu().numpy()
        # a "no thing" class (the last, where the classifier has one) is never a thing's class
        best = probability[:, :len(self.category_map.thing_ids)].argmax(axis=1)
        accepted = [(region, int(k), float(p[k])) for region, k, p in zip(kept, best.tolist(), probability)
                    if p[k] > post.void_thing_confidence]
        if not accepted:
            return ids, segs
        used = {int(s["id"]) for s in segs}
        rng = np.random.default_rng(np.random.SeedSequence([ids.shape[0], ids.shape[1], len(segs), 13]))
        new_ids = [sid for sid in random_segment_ids(rng, len(accepted) + len(used)) if sid not in used]
        lut = np.zeros(int(regions.max()) + 1, np.uint32)
        new_segs = []
        for (region, k, p), sid in zip(accepted, new_ids):
            lut[region] = sid
            new_segs.append({"id": int(sid), "category_id": int(self.category_map.thing_ids[k]), "iscrowd": 0,
                             "score": round(p, 4)})
        painted = resize_ids(lut[regions], ids.shape)
        free = (ids == 0) & (painted > 0)
        ids = ids.copy()
        ids[free] = painted[free]
        present = set(np.unique(ids[free]).tolist())
        return ids, segs + [s for s in new_segs if s["id"] in present]

    def _reclassify_things(self, ids: np.ndarray, segs: list[dict], outputs: dict,
                           inputs: dict | None) -> tuple[np.ndarray, list[dict], dict[int, np.ndarray]]:
        """``(ids, segs)`` with each thing relabelled where the thing classifier (models/prn/classifier.py), reading
        the thing's crop of the image at the processing size and its final mask, gives another thing class a
        probability above ``classifier_confidence`` (or ``classifier_small_confidence``, if larger, for a thing of
        fewer than ``classifier_small_area`` pixels at the processing size), and removed (its pixels void) where a
        classifier with a "no thing" class gives that class a probability above ``classifier_remove_confidence``;
        with ``classifier_join_share`` a removed thing along a kept thing of its category joins it instead
        (removal.remove_things). Without a removal the id map does not change. The third value maps every kept
        thing whose mask did not change (none joined it) to the classifier's probabilities, which the cut of merged
        things reads again."""
        import torch

        from .models.prn.classifier import thing_boxes, thing_crops
        from .models.prn.removal import remove_things

        if inputs is None:
            raise ValueError("the thing classifier needs the network inputs (postprocess(..., inputs=...))")
        things = [s for s in segs if s["category_id"] in self.category_map.thing_ids]
        if not things:
            return ids, segs, {}
        h, w = outputs["semantic"].shape[-2:]
        image = inputs["image"][0, :, :h, :w].float().cpu()
        classifier = self.model.classifier
        segment_ids = [s["id"] for s in things]
        id_map = torch.from_numpy(ids.astype(np.int64))
        boxes, areas = thing_boxes(id_map, segment_ids, with_areas=True)
        crops = thing_crops(image, id_map, segment_ids, classifier.crop_size, boxes=boxes)
        device = next(classifier.parameters()).device
        probability = classifier.probabilities(crops.to(device)).cpu().numpy()
        num_things = len(self.category_map.thing_ids)
        best = probability[:, :num_things].argmax(axis=1)
        post = self.postprocess_config
        needed = np.full(len(things), post.classifier_confidence if post.classifier_confidence > 0 else np.inf)
        if post.classifier_small_area > 0 and post.classifier_confidence > 0:
            # areas at the processing size, where the crops are cut: the photo's pixel counts times the scale
            scale = (h * w) / (ids.shape[0] * ids.shape[1])
            small = areas.numpy() * scale < post.classifier_small_area
            needed[small] = max(post.classifier_confidence, post.classifier_small_confidence)
        relabel, removed = {}, []
        for s, k, p, threshold in zip(things, best.tolist(), probability, needed):
            category = self.category_map.thing_ids[k]
            if (post.classifier_remove_confidence > 0 and classifier.background
                    and p[num_things] > post.classifier_remove_confidence):
                removed.append(s["id"])
            elif category != s["category_id"] and p[k] > threshold:
                relabel[s["id"]] = category
        joined: dict[int, int] = {}
        if removed:
            category_of = {s["id"]: relabel.get(s["id"], s["category_id"]) for s in segs}
            ids, joined = remove_things(ids, removed, category_of, post.classifier_join_share)
        changed = set(removed) | set(joined.values())
        read = {s["id"]: p for s, p in zip(things, probability) if s["id"] not in changed}
        return ids, [{**s, "category_id": relabel[s["id"]]} if s["id"] in relabel else s for s in segs
                     if s["id"] not in removed], read

    def _split_merged_things(self, ids: np.ndarray, segs: list[dict], outputs: dict, inputs: dict | None, *,
                             read: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, list[dict]]:
        """``(ids, segs)`` with every thing that holds two objects cut in two (models/prn/merge_split.py): each
        thing away from the image's edge that the classifier reads less surely than
        ``merge_split.MAX_WHOLE_CERTAINTY`` is cut two ways (parts of at least ``merge_split.MIN_PART_AREA`` pixels
        at the processing size), the classifier reads both parts of each cut, and the better cut is kept where its
        less certain part's thing-class probability is above ``classifier_split_confidence`` and above the whole
        thing's. Both parts keep the thing's category and score; the second takes a new id. ``read``: the
        classifier's probabilities of things whose masks are those of ``ids`` already (the relabelling step's), which
        are not read again."""
        import torch

        from .models.prn.classifier import thing_crops
        from .models.prn.merge_split import (MAX_WHOLE_CERTAINTY, MIN_PART_AREA, best_two_part_split,
                                             two_part_proposals)
        from .synth import random_segment_ids

        if inputs is None:
            raise ValueError("the split of merged things needs the network inputs (postprocess(..., inputs=...))")
        edge = set(np.concatenate([ids[0], ids[-1], ids[:, 0], ids[:, -1]]).tolist())
        things = [s for s in segs if s["category_id"] in self.category_map.thing_ids and s["id"] not in edge]
        if not things:
            return ids, segs
        h, w = outputs["semantic"].shape[-2:]
        image = inputs["image"][0, :, :h, :w].float().cpu()
        classifier = self.model.classifier
        device = next(classifier.parameters()).device
        min_part = max(1, int(np.ceil(MIN_PART_AREA * ids.shape[0] * ids.shape[1] / (h * w))))
        id_map = torch.from_numpy(ids.astype(np.int64))
        read = dict(read or {})
        unread = [s["id"] for s in things if s["id"] not in read]
        if unread:
            crops = thing_crops(image, id_map, unread, classifier.crop_size)
            read.update(zip(unread, classifier.probabilities(crops.to(device)).cpu().numpy()))
        whole = np.stack([read[s["id"]] for s in things])
        # the colours the cuts read: the processing-size image at the photo-size pixels
        rows = np.minimum((np.arange(ids.shape[0]) * h) // ids.shape[0], h - 1)
        cols = np.minimum((np.arange(ids.shape[1]) * w) // ids.shape[1], w - 1)
        colours = image.permute(1, 2, 0).numpy()
        flat = ids.ravel()
        order = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[order], [[s["id"], s["id"] + 1] for s in things])
        cuts_of = {}
        num_things = len(self.category_map.thing_ids)
        unsure = whole[:, :num_things].max(axis=1) <= MAX_WHOLE_CERTAINTY
        for k, (lo, hi) in enumerate(bounds.tolist()):
            if unsure[k] and hi - lo >= 2 * min_part:
                ys, xs = np.divmod(order[lo:hi], ids.shape[1])
                cuts_of[k] = (ys, xs, two_part_proposals(ys, xs, colours[rows[ys], cols[xs]], min_part=min_part))
        if not cuts_of:
            return ids, segs
        # cut i of every thing on one map, its parts labelled 2k + 1 and 2k + 2: one read of the map per cut
        n_cuts = len(next(iter(cuts_of.values()))[2])
        parts = np.full((len(things), n_cuts, 2, whole.shape[1]), np.nan)
        for i in range(n_cuts):
            cut_map = np.zeros(ids.shape, np.int64)
            made = [k for k, (_, _, cuts) in cuts_of.items() if cuts[i] is not None]
            if not made:
                continue
            for k in made:
                ys, xs, cuts = cuts_of[k]
                cut_map[ys, xs] = 2 * k + 1 + cuts[i]
            labels = [v for k in made for v in (2 * k + 1, 2 * k + 2)]
            crops = thing_crops(image, torch.from_numpy(cut_map), labels, classifier.crop_size)
            probability = classifier.probabilities(crops.to(device)).cpu().numpy()
            parts[made, i] = probability.reshape(len(made), 2, -1)
        kept = [(k, best) for k in cuts_of
                if (best := best_two_part_split(whole[k], parts[k], num_things,
                                                self.postprocess_config.classifier_split_confidence)) is not None]
        if not kept:
            return ids, segs
        ids = ids.copy()
        used = {int(s["id"]) for s in segs}
        rng = np.random.default_rng(np.random.SeedSequence([ids.shape[0], ids.shape[1], len(segs), 17]))
        fresh = iter([sid for sid in random_segment_ids(rng, len(cuts_of) + len(used)) if sid not in used])
        added = []
        for k, best in kept:
            ys, xs, cuts = cuts_of[k]
            sid = next(fresh)
            ids[ys[cuts[best]], xs[cuts[best]]] = sid
            added.append({**things[k], "id": int(sid)})
        return ids, segs + added

    def _thing_foreground(self, outputs: dict, inputs: dict | None, ids: np.ndarray, segs: list[dict]):
        """(1, h, w) the boundary refiner's logits at the processing size: ``outputs["thing_foreground"]`` when the
        network gave it (an exported graph computes it everywhere), else computed now from ``inputs`` (the
        padded image and base maps) on the tiles near the boundaries of the
        things in ``ids`` (photo size), which are the only pixels the re-cut reads. Things too small to be re-cut
        (``boundary_min_area``) are left out: a pixel the re-cut moves for a larger thing lies within the radius
        of that thing's own boundary with a non-thing, so it stays in the band."""
        import torch

        from .models.prn.boundary import boundary_band
        from .resize import resize_ids

        if "thing_foreground" in outputs:
            return outputs["thing_foreground"]
        if inputs is None:
            raise ValueError("the boundary re-cut needs the network inputs (postprocess(..., inputs=...))")
        image, base_maps = inputs["image"], inputs["base_maps"]
        h, w = outputs["semantic"].shape[-2:]
        post = self.postprocess_config
        thing_ids = np.array([s["id"] for s in segs if s["category_id"] in self.category_map.thing_ids], np.int64)
        small_ids = resize_ids(ids, (h, w))
        if post.boundary_min_area > 0 and thing_ids.size:
            values, counts = np.unique(small_ids, return_counts=True)
            # areas measured here, scaled to the photo; half the minimum keeps every thing that may reach it
            scale = ids.shape[0] * ids.shape[1] / (h * w)
            large = values[counts * scale >= post.boundary_min_area / 2]
            thing_ids = thing_ids[np.isin(thing_ids, large)]
        is_thing = torch.from_numpy(np.isin(small_ids, thing_ids))
        # the processing size is never larger than the photo, so the photo's band is at most this wide here;
        # +1 for the neighbours of the bilinear enlargement
        band = boundary_band(is_thing[None], post.boundary_radius + 1)
        region = torch.zeros(1, *image.shape[-2:], dtype=torch.bool)
        region[:, :h, :w] = band
        with torch.inference_mode():
            logits = self.model.boundary(image, base_maps, region=region.to(image.device))
        return logits[0, :, :h, :w]

    def _refine_boundaries(self, ids: np.ndarray, segs: list[dict], logits, photo_size: tuple[int, int]):
        """The last step: every thing's boundary re-cut by the boundary refiner (models/prn/boundary.py), its
        logits enlarged to the photo's size; segments left without pixels are dropped."""
        import torch
        import torch.nn.functional as F

        from .models.prn.boundary import refine_thing_boundaries

        logits = logits.float()[None]
        if tuple(logits.shape[-2:]) != tuple(photo_size):
            logits = F.interpolate(logits, size=photo_size, mode="bilinear", align_corners=False)
        probability = torch.sigmoid(logits)[0, 0].cpu().numpy()
        post = self.postprocess_config
        ids = refine_thing_boundaries(ids, segs, probability, set(self.category_map.thing_ids), post.boundary_radius,
                                      post.boundary_confidence, min_area=post.boundary_min_area,
                                      min_gain=post.boundary_min_gain, min_coverage=post.boundary_min_coverage)
        present = set(np.unique(ids).tolist())
        return ids, [s for s in segs if s["id"] in present]

    def _unsure_pixels(self, outputs: dict, photo_size: tuple[int, int]):
        """For :func:`snap_to_base`: flat pixel indices of the photo -> whether PRN's confidence there (at the
        nearest pixel of its processing-size outputs, as the id map was enlarged) is below base_snap_confidence.
        Computed for the asked pixels only (those that could move), not the whole map."""
        import torch

        from .models.prn.base_fusion import confidence_at
        from .resize import nearest_index

        post = self.postprocess_config
        semantic = outputs["semantic"]
        c, h, w = semantic.shape
        foreground = outputs.get("foreground") if post.foreground_source == "foreground" else None
        rows, cols = nearest_index(h, photo_size[0]), nearest_index(w, photo_size[1])

        def unsure(flat: np.ndarray) -> np.ndarray:
            y, x = np.divmod(flat, photo_size[1])
            at = torch.from_numpy(rows[y] * w + cols[x]).to(semantic.device)
            conf = confidence_at(semantic.reshape(c, h * w).index_select(1, at),
                                 None if foreground is None else foreground.reshape(1, h * w).index_select(1, at))
            return (conf < post.base_snap_confidence).cpu().numpy()

        return unsure
