"""How ``prn viz`` draws: :class:`VizOptions`, checked once when built."""

from __future__ import annotations

from dataclasses import dataclass

COLOR_BY = ("instance", "category", "panoptic")
#: Where there is no photo, segments are drawn on this; mid grey keeps both light and dark colours visible.
NEUTRAL_BACKGROUND = (128, 128, 128)


@dataclass(frozen=True)
class VizOptions:
    """How overlays and panels look. The defaults suit photos and the no-photo (neutral background) case."""

    #: "instance": a colour per segment id (as the paper's figures); "category": the categories' ``color``;
    #: "panoptic": stuff by its category's colour and things by segment id, so one stuff class has one colour
    #: in every panel while touching instances stay apart (detectron2's convention).
    color_by: str = "instance"
    #: Opacity of segment colours over a photo (0 = photo only, 1 = colours only). Without a photo segments
    #: are always drawn opaque on the neutral background.
    alpha: float = 0.55
    #: Draw a line on the inner side of every segment border (both sides where two segments touch).
    boundaries: bool = True
    boundary_color: tuple[int, int, int] = (255, 255, 255)
    #: Write the category name inside each segment, on a dark box.
    labels: bool = False
    #: Only segments with at least this many pixels get a label (tiny fragments would be hidden by their text).
    area_threshold: int = 100
    #: Hatch crowd regions (stripes at full and at reduced opacity) so they stand apart from instances.
    hatch_crowd: bool = True
    #: Label text size in px; None = from the image size.
    label_font_size: int | None = None
    #: Panel title bar height in px; None = from the title font size.
    title_height: int | None = None
    #: Title text size in px; None = from the tile height.
    title_font_size: int | None = None
    #: Gap between the tiles of a panel, in px.
    padding: int = 4

    def __post_init__(self):
        if self.color_by not in COLOR_BY:
            raise ValueError(f"color_by must be one of {COLOR_BY}, not {self.color_by!r}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], not {self.alpha}")
        if self.area_threshold < 0:
            raise ValueError(f"area_threshold must be >= 0, not {self.area_threshold}")
        if self.padding < 0:
            raise ValueError(f"padding must be >= 0, not {self.padding}")
        for name in ("label_font_size", "title_height", "title_font_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        if len(self.boundary_color) != 3 or not all(0 <= int(v) <= 255 for v in self.boundary_color):
            raise ValueError(f"boundary_color must be three values in [0, 255], not {self.boundary_color}")


__all__ = ["VizOptions", "COLOR_BY", "NEUTRAL_BACKGROUND"]
