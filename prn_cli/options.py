"""Typed overrides of a checkpoint's stored settings: one name per concept, from the flag to the config.

Each override class has exactly the field names of the config it changes (``--instance-score-threshold`` is
``InferenceConfig.instance_score_threshold``, ``--box-iou-threshold`` is ``PostProcessConfig.box_iou_threshold``),
``None`` means "keep the checkpoint's value", and values are checked when the object is built, i.e. while the
command line is parsed: a bad value is a :class:`~prn_cli.errors.UsageError` (exit 2) naming the option.

This module imports no torch; ``apply`` imports the config class it fills.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Callable

from .errors import UsageError

FOREGROUND_SOURCES = ("foreground", "semantic")
RESTORE_CHOICES = ("none", "things", "all")        # PostProcessConfig.restore_base_segments


def flag(name: str) -> str:
    """The command-line option of a config field: ``box_iou_threshold`` -> ``--box-iou-threshold``."""
    return "--" + name.replace("_", "-")


def _fraction(v) -> bool:
    return 0.0 <= v <= 1.0


def _positive(v) -> bool:
    return v >= 1


def _non_negative(v) -> bool:
    return v >= 0


def _odd(v) -> bool:
    return v >= 1 and v % 2 == 1


#: rule name -> (test, what a good value is)
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "fraction": (_fraction, "a number from 0 to 1"),
    "confidence": (lambda v: 0.5 <= v < 1.0, "a number from 0.5 up to (not including) 1"),
    # a threshold a probability must be above: at 1 the step could never act, so 1 is refused, not a silent "off"
    "probability": (lambda v: 0.0 <= v < 1.0, "a number from 0 up to (not including) 1"),
    "positive": (_positive, "an integer of at least 1"),
    "non_negative": (_non_negative, "a number of at least 0"),
    "odd": (_odd, "an odd integer of at least 1"),
    "foreground_source": (lambda v: v in FOREGROUND_SOURCES, "one of " + ", ".join(FOREGROUND_SOURCES)),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "restore": (lambda v: v in RESTORE_CHOICES, "one of " + ", ".join(RESTORE_CHOICES)),
}


def _check(obj) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        rule = f.metadata.get("rule")
        if value is None or rule is None:
            continue
        test, good = _RULES[rule]
        kind = f.metadata.get("kind")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise UsageError(f"{flag(f.name)} {value}: must be {good}")
        if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UsageError(f"{flag(f.name)} {value}: must be {good}")
        if not test(value):
            raise UsageError(f"{flag(f.name)} {value}: must be {good}")


def _field(rule: str, kind: type | None = None):
    return dataclasses.field(default=None, metadata={"rule": rule, "kind": kind})


class _Overrides:
    """Shared behaviour: validation on construction, the given values, application to a config."""

    def __post_init__(self) -> None:
        _check(self)

    def given(self) -> dict:
        """The fields that were set (not None)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, values: dict | None, where: str = "options"):
        """Build from a plain dict (e.g. an ablation record), naming unknown keys."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"{where}: unknown option(s) {unknown}; use {', '.join(sorted(known))}")
        return cls(**values)

    def merged_into(self, stored: dict) -> dict:
        """``stored`` (a config as a dict) with these overrides on top."""
        return {**stored, **self.given()}


@dataclass(frozen=True)
class SegmentOverrides(_Overrides):
    """Overrides of MS-PanopticFPN's ``InferenceConfig`` (detection and panoptic fusion thresholds)."""

    score_threshold: float | None = _field("fraction", float)
    nms_iou: float | None = _field("fraction", float)
    instance_score_threshold: float | None = _field("fraction", float)
    overlap_threshold: float | None = _field("fraction", float)
    stuff_area: int | None = _field("non_negative", int)

    def apply(self, inference_config):
        """A copy of ``inference_config`` (an ``InferenceConfig``) with the given values."""
        return dataclasses.replace(inference_config, **self.given())


@dataclass(frozen=True)
class PostProcessOverrides(_Overrides):
    """Overrides of PRN's ``PostProcessConfig`` (the Table 1 switches of post-processing and its thresholds)."""

    foreground_source: str | None = _field("foreground_source")
    use_pred_bbox: bool | None = _field("bool")
    center_threshold: float | None = _field("fraction", float)
    nms_kernel: int | None = _field("odd", int)
    top_k: int | None = _field("positive", int)
    foreground_threshold: float | None = _field("probability", float)
    stuff_area: int | None = _field("non_negative", int)
    box_iou_threshold: float | None = _field("fraction", float)
    restore_base_segments: str | None = _field("restore")
    reclaim_other_classes: bool | None = _field("bool")
    min_join_contact: float | None = _field("non_negative", float)
    keep_base_thing_class: bool | None = _field("bool")
    base_snap_confidence: float | None = _field("fraction", float)
    boundary_radius: int | None = _field("non_negative", int)
    boundary_confidence: float | None = _field("confidence", float)
    boundary_min_area: int | None = _field("non_negative", int)
    boundary_min_gain: float | None = _field("fraction", float)
    boundary_min_coverage: float | None = _field("fraction", float)
    classifier_confidence: float | None = _field("probability", float)
    classifier_small_area: int | None = _field("non_negative", int)
    classifier_small_confidence: float | None = _field("probability", float)
    classifier_remove_confidence: float | None = _field("probability", float)
    classifier_join_share: float | None = _field("fraction", float)
    classifier_split_confidence: float | None = _field("probability", float)
    void_thing_confidence: float | None = _field("probability", float)
    void_thing_min_area: int | None = _field("positive", int)

    def apply(self, stored: dict):
        """A ``PostProcessConfig`` from a checkpoint's stored post-processing dict with these values on top."""
        from .models.prn.postprocess import PostProcessConfig

        values = self.merged_into(stored)
        if "stuff_area_reference" in values and isinstance(values["stuff_area_reference"], list):
            values["stuff_area_reference"] = tuple(values["stuff_area_reference"])
        return PostProcessConfig(**values)


@dataclass(frozen=True)
class PRNSwitches(_Overrides):
    """The network switches of the paper's Table 1, as ``PRNConfig`` fields (None keeps the preset's)."""

    foreground_head: bool | None = _field("bool")
    coordconv_decoder: bool | None = _field("bool")
    coordconv_encoder: bool | None = _field("bool")
    box_head: bool | None = _field("bool")


#: detectron2's test-time sizes (INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)
DEFAULT_MIN_SIZE = 800
DEFAULT_MAX_SIZE = 1333


@dataclass(frozen=True)
class ProcessingSize:
    """The size the networks of ``prn segment`` and ``prn refine`` run at (``--min-size``, ``--max-size``).

    A photo larger than the processing size is shrunk so that its shorter side is at most ``min_size`` and its
    longer side at most ``max_size`` (detectron2's 800 / 1333); the segmentation is made at that size and its id
    map is enlarged (nearest neighbour) to the photo's own size, so memory is bounded whatever the photo's size.
    A smaller photo runs at its own size: prn never enlarges, because its networks are trained at the data's own
    scale (detectron2 also enlarges small photos to 800, the scale its COCO models were trained at).
    """

    min_size: int = DEFAULT_MIN_SIZE
    max_size: int = DEFAULT_MAX_SIZE

    def __post_init__(self) -> None:
        for name in ("min_size", "max_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 32:
                raise UsageError(f"{flag(name)} {value}: must be an integer of at least 32 (pixels)")

    def shape_for(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) at which an image of ``height`` x ``width`` is processed (the image's own size when it fits)."""
        height, width = int(height), int(width)
        scale = min(1.0, self.min_size / max(1, min(height, width)), self.max_size / max(1, height, width))
        if scale >= 1.0:
            return height, width
        return max(1, round(height * scale)), max(1, round(width * scale))


def parse_range(text: str, option: str, *, low: float = 0.0, high: float = 1.0) -> tuple[float, float]:
    """``"0.3,0.8"`` -> (0.3, 0.8), with ``low <= a <= b <= high``; a usage error naming ``option`` otherwise."""
    try:
        a, b = (float(v) for v in str(text).split(","))
    except ValueError:
        raise UsageError(f"{option} {text}: must be two numbers LOW,HIGH, e.g. 0.3,0.8") from None
    if not low <= a <= b <= high:
        raise UsageError(f"{option} {text}: must satisfy {low:g} <= LOW <= HIGH <= {high:g}")
    return a, b


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """``"320x240"`` -> (320, 240)."""
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise UsageError(f"{option} {text}: must be a size like 320x240") from None
    if w <= 0 or h <= 0:
        raise UsageError(f"{option} {text}: width and height must be positive")
    return w, h
