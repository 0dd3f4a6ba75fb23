"""Hugging Face transformers: the dict that an image processor's ``post_process_panoptic_segmentation``
returns for one image (Mask2Former, MaskFormer, OneFormer, DETR).

``segmentation`` is an (H, W) tensor of segment ids from 1, 0 = no segment; when no query survives it is a
float tensor filled with -1 and ``segments_info`` is empty. ``segments_info`` lists ``{"id", "label_id",
"was_fused", "score"}``; ``label_id`` indexes the model's ``config.id2label``. transformers reuses the id of a
fused label when it reappears, so one id may be listed several times: the records of an id are grouped, and an
id listed with two different labels (the later segments' ids collide) is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import fail
from .labels import LabelResolver
from .options import ConvertOptions
from .segments import as_2d_integer, from_id_map

SUFFIXES = (".pt",)


def from_hf(result: dict, categories: Sequence[dict], options: ConvertOptions | None = None, *,
            where: Any = "hf prediction", resolver: LabelResolver | None = None) -> tuple[np.ndarray, list[dict]]:
    """``(ids, segments_info)`` in the categories ``categories`` from one image's post-processed result."""
    options = options or ConvertOptions()
    resolver = resolver or LabelResolver(categories, options.label_map_for("hf"), options.id2label)
    if not isinstance(result, dict) or "segmentation" not in result or "segments_info" not in result:
        raise fail(where, "is not a transformers panoptic result (a dict with 'segmentation' and 'segments_info')",
                   "save one element of post_process_panoptic_segmentation's list with torch.save")
    if result["segmentation"] is None:      # older transformers: None when nothing was found
        raise fail(where, "'segmentation' is None and no image size is known", "save the -1 filled map that current "
                   "transformers return, or pass target_sizes")
    id_map = as_2d_integer(result["segmentation"], where, "'segmentation'")
    records: dict[int, dict] = {}
    infos = result["segments_info"] or []
    if not isinstance(infos, (list, tuple)):
        raise fail(where, "'segments_info' is not a list", "save the post-processed result unchanged")
    for i, info in enumerate(infos):
        if not isinstance(info, dict) or "id" not in info or "label_id" not in info:
            raise fail(where, f"segments_info[{i}] lacks 'id' or 'label_id'", "save the post-processed result "
                       "unchanged")
        sid, label = int(info["id"]), int(info["label_id"])
        earlier = records.get(sid)
        if earlier is not None and earlier["label"] != label:
            raise fail(where, f"segment id {sid} is listed with two labels ({earlier['label']} and {label})",
                       "transformers reused the id of a fused label; post-process with label_ids_to_fuse=set() or "
                       "without repeated fused labels")
        score = info.get("score")
        score = float(score) if score is not None else None
        if earlier is not None and earlier.get("score") is not None and score is not None:
            score = max(score, earlier["score"])
        records[sid] = {"label": label, "isthing": None, "score": score}
    return from_id_map(id_map, records, resolver, where)


def read_hf(path: str | os.PathLike) -> dict:
    """A ``torch.save``-d result, loaded with ``weights_only=True`` (tensors, lists, dicts and numbers only)."""
    return load_torch(Path(path), "transformers result")


def load_torch(path: Path, what: str) -> Any:
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():     # torch warns about pickle protocols on stderr: one line is the rule
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise fail(path, f"{what} is missing", "check the path") from None
    except pickle.UnpicklingError:
        raise fail(path, f"cannot be loaded as a {what} with torch.load(weights_only=True): it holds objects other "
                   "than tensors, lists, dicts and numbers (refused, as loading them could run code)",
                   "save the result itself with torch.save (no custom classes)") from None
    except Exception as exc:   # torch.load raises many kinds (struct.error, zipfile errors, RuntimeError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise fail(path, f"cannot be loaded as a {what} with torch.load(weights_only=True) ({first[:120]})",
                   "save the result with torch.save") from None
