"""Contiguous class indices for a COCO-style category list (dataset ids are sparse: 1..90, 92..200).

Every network works with contiguous indices; this map converts both ways and carries the hierarchy
(super-categories of the thing classes) that the hierarchical classification head needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CategoryMap:
    """Built from a COCO ``categories`` list (each with ``id``, ``isthing``, optional ``supercategory``).

    - ``class_ids``: every category id, in list order; class index ``i`` <-> ``class_ids[i]`` (semantic maps).
    - ``thing_ids``: thing category ids in list order; thing index ``j`` <-> ``thing_ids[j]`` (detection).
    - ``super_names``: distinct super-categories of the things, in first-seen order.
    - ``thing_super``: super-category index of each thing index.
    """

    categories: tuple
    class_ids: tuple = field(init=False)
    thing_ids: tuple = field(init=False)
    stuff_ids: tuple = field(init=False)
    super_names: tuple = field(init=False)
    thing_super: tuple = field(init=False)

    def __post_init__(self):
        cats = [dict(c) for c in self.categories]
        object.__setattr__(self, "categories", tuple(cats))
        object.__setattr__(self, "class_ids", tuple(int(c["id"]) for c in cats))
        things = [c for c in cats if c.get("isthing") == 1]
        object.__setattr__(self, "thing_ids", tuple(int(c["id"]) for c in things))
        object.__setattr__(self, "stuff_ids", tuple(int(c["id"]) for c in cats if c.get("isthing") != 1))
        supers: list[str] = []
        for c in things:
            s = str(c.get("supercategory") or "thing")
            if s not in supers:
                supers.append(s)
        object.__setattr__(self, "super_names", tuple(supers))
        object.__setattr__(self, "thing_super",
                           tuple(supers.index(str(c.get("supercategory") or "thing")) for c in things))

    @classmethod
    def from_categories(cls, categories) -> "CategoryMap":
        return cls(tuple(categories))

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    @property
    def num_things(self) -> int:
        return len(self.thing_ids)

    @property
    def num_supers(self) -> int:
        return len(self.super_names)

    def class_index(self, category_id: int) -> int:
        return self.class_ids.index(int(category_id))

    def thing_index(self, category_id: int) -> int:
        return self.thing_ids.index(int(category_id))

    def is_thing_class(self) -> list[bool]:
        """Per class index: whether it is a thing."""
        things = set(self.thing_ids)
        return [cid in things for cid in self.class_ids]

    def thing_class_index(self) -> list[int]:
        """Per thing index: its class index (position in ``class_ids``)."""
        return [self.class_ids.index(t) for t in self.thing_ids]
