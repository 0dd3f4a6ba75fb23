"""From a prediction's class labels to prn's categories (CATS): reading CATS and ``id2label``, and the one
resolver every format uses, so that "label 5 is not in CATS" reads the same whatever the framework."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import InvalidInputError, UsageError, fail
from .options import Id2Label


def load_categories(source: str | os.PathLike | Sequence[dict]) -> list[dict]:
    """CATS: a ``categories`` list given directly, or a JSON file holding one (a panoptic JSON such as the
    ground truth, or a bare list). Checked: every entry has an integer ``id`` (unique) and a ``name``."""
    from ..panoptic import read_json

    where: Any = None
    if isinstance(source, (str, os.PathLike)):
        where = Path(source)
        data = read_json(where, what="categories JSON")
        cats = data.get("categories") if isinstance(data, dict) else data
        if not isinstance(cats, list):
            raise fail(where, "holds no 'categories' list", "pass a panoptic JSON (e.g. the ground truth) or a JSON "
                       "list of {\"id\", \"name\", \"isthing\"}")
    else:
        cats = list(source)
    seen: set[int] = set()
    out = []
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or isinstance(c.get("id"), bool) \
                or "name" not in c:
            raise fail(where, f"categories[{i}] lacks an integer 'id' or a 'name'", "fix the categories list")
        if c["id"] in seen:
            raise fail(where, f"category id {c['id']} is listed twice", "give each category a unique id")
        seen.add(c["id"])
        out.append(dict(c, isthing=int(bool(c.get("isthing", 0)))))
    if not out:
        raise fail(where, "the categories list is empty", "pass the categories the model predicts")
    return out


def load_id2label(source: Id2Label | str | os.PathLike) -> dict[int, str]:
    """label -> class name from a dict, a list, or a JSON file: ``{"0": "person", ...}``, a transformers
    ``config.json`` (its ``id2label``), or a list of names (mmdetection's ``classes``)."""
    from ..panoptic import read_json

    where = None
    data: Any = source
    if isinstance(source, (str, os.PathLike)):
        where = Path(source)
        data = read_json(where, what="id2label JSON")
        if isinstance(data, dict) and "id2label" in data:
            data = data["id2label"]
    if isinstance(data, (list, tuple)):
        data = dict(enumerate(data))
    if not isinstance(data, dict):
        raise fail(where, "is neither a {\"0\": \"name\"} object, a list of names nor a config.json with "
                   "'id2label'", "pass the model's config.json or its id2label")
    try:
        return {int(k): str(v) for k, v in data.items()}
    except (TypeError, ValueError):
        raise fail(where, "id2label keys must be integer labels", "write it as {\"0\": \"person\", ...}") from None


class LabelResolver:
    """label -> category (a dict of CATS) under one label map; unknown labels raise :class:`InvalidInputError`
    naming the file (``where``), the label and the fix."""

    def __init__(self, categories: Sequence[dict], label_map: str, id2label: Id2Label | str | None = None):
        self.categories = list(categories)
        self.label_map = label_map
        self.by_id = {int(c["id"]): c for c in self.categories}
        ordered = sorted(self.categories, key=lambda c: int(c["id"]))
        self.by_index = ordered
        self.things = [c for c in ordered if c.get("isthing")]
        self.stuff = [c for c in ordered if not c.get("isthing")]
        self.id2label: dict[int, str] | None = None
        if label_map == "name":
            if id2label is None:
                raise UsageError("--label-map name needs --id2label FILE (the model's config.json or a "
                                 "{\"0\": \"name\"} JSON); or pass --label-map index|id")
            self.id2label = load_id2label(id2label)
            self._by_name = {str(c["name"]): c for c in ordered}
            self._by_folded = {str(c["name"]).strip().casefold(): c for c in ordered}
        self._cache: dict[tuple[int, bool | None], dict] = {}

    def category(self, label: int, where: Any, *, isthing: bool | None = None) -> dict:
        """The category of ``label``; ``isthing`` (detectron2's segments_info flag) picks the thing or stuff list
        for the ``separated`` map and is checked against the category otherwise."""
        key = (int(label), isthing)
        found = self._cache.get(key)
        if found is None:
            found = self._resolve(int(label), where, isthing)
            self._cache[key] = found
        return found

    def _resolve(self, label: int, where: Any, isthing: bool | None) -> dict:
        m = self.label_map
        if m == "id":
            cat = self.by_id.get(label)
            if cat is None:
                raise fail(where, f"category id {label} is not in the categories (--categories)",
                           "pass the categories the model predicts, or --label-map index if its labels are "
                           "contiguous")
        elif m == "index":
            if not 0 <= label < len(self.by_index):
                raise fail(where, f"label {label} is outside the {len(self.by_index)} categories (contiguous "
                           "index 0.." f"{len(self.by_index) - 1})", "pass the categories the model was trained on, "
                           "or --label-map id if its labels are category ids")
            cat = self.by_index[label]
        elif m == "separated":
            if isthing is None:
                raise fail(where, f"label {label} has no 'isthing' flag, which --label-map separated needs",
                           "use --label-map index for a combined label space")
            pool, first = (self.things, 0) if isthing else (self.stuff, 1)
            if not first <= label < len(pool) + first:
                kind = "thing" if isthing else "stuff"
                raise fail(where, f"{kind} label {label} is outside the {len(pool)} {kind} categories "
                           f"({first}..{len(pool) + first - 1} in detectron2's separated metadata)",
                           "pass the categories the model was trained on, or --label-map index")
            return pool[label - first]
        else:
            assert self.id2label is not None
            name = self.id2label.get(label)
            if name is None:
                raise fail(where, f"label {label} is not in --id2label", "pass the id2label of the model that "
                           "made the prediction (its config.json)")
            cat = self._by_name.get(name) or self._by_folded.get(name.strip().casefold())
            if cat is None:
                raise fail(where, f"label {label} ({name!r}) matches no category name in --categories",
                           "pass the categories the model was trained on, or --label-map index|id")
        if isthing is not None and bool(cat.get("isthing")) != bool(isthing):
            kind = "a thing" if isthing else "stuff"
            raise fail(where, f"label {label} is {kind} in segments_info but maps to category {cat['id']} "
                       f"({cat['name']!r}), which is {'stuff' if isthing else 'a thing'}",
                       "PanopticFPN's separated labels need --label-map separated; otherwise pass the categories "
                       "the model was trained on")
        return cat


__all__ = ["load_categories", "load_id2label", "LabelResolver", "InvalidInputError"]
