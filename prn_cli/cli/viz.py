"""``prn viz``: overlays of panoptic sets and side-by-side panels."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._common import JsonOut, Overwrite, command


class ColorBy(str, Enum):
    instance = "instance"
    category = "category"
    panoptic = "panoptic"


def register(app: typer.Typer) -> None:
    command(app, "viz")(viz_command)


def viz_command(
    sets: Annotated[List[Path], typer.Argument(metavar="SET...", help="Panoptic sets (JSON or folder), drawn left "
                                               "to right; the first decides which images are drawn.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder.")],
    images: Annotated[Optional[Path], typer.Option("--images", "-i", metavar="DIR", help="Folder of the photos; "
                                                   "without it segments are drawn on a neutral background.")] = None,
    title: Annotated[List[str], typer.Option("--title", metavar="TEXT", help="Title of each set, in order "
                                             "(default: the set names).")] = [],
    color_by: Annotated[Optional[ColorBy], typer.Option("--color-by", metavar="instance|category|panoptic",
                                                        help="Colour per instance (stable per segment id), per "
                                                        "category (the categories' color), or panoptic (stuff by "
                                                        "category, things by instance). Default: panoptic when a "
                                                        "set lists categories, else instance.")] = None,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, metavar="X", help="Opacity of the segment "
                                         "colours.")] = 0.55,
    boundaries: Annotated[bool, typer.Option("--boundaries/--no-boundaries", metavar="", help="Draw segment "
                                             "boundaries.")] = True,
    labels: Annotated[bool, typer.Option("--labels", metavar="", help="Write class names on segments.")] = False,
    area_threshold: Annotated[int, typer.Option("--area-threshold", min=0, metavar="PX", help="Label only segments "
                                                "at least this many pixels large.")] = 100,
    image_id: Annotated[List[str], typer.Option("--image-id", metavar="ID", help="Draw only these image ids "
                                                "(repeatable).")] = [],
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, metavar="N", help="Draw at most this many "
                                                 "images.")] = None,
    html: Annotated[bool, typer.Option("--html", metavar="", help="Also write index.html, a gallery of the "
                                       "panels.")] = False,
    overwrite: Overwrite = False,
    json_out: JsonOut = None,
) -> None:
    """Draw overlays of panoptic sets, and side-by-side panels (image | base | refined | GT) of several.


    Example: prn viz base/ refined/ data/annotations/panoptic_val.json --images data/images/val --out viz/ --html
    """
    from ..console import emit_json, progress, say
    from ..panoptic import load_set
    from ..visualize import VizOptions, visualize
    from ..visualize.selection import default_titles
    from ._common import check_out_dir

    if title and len(title) != len(sets):
        raise typer.BadParameter("give one --title per set, or none", param_hint="--title")
    check_out_dir(out)
    loaded = [load_set(s, need_categories=False) for s in sets]
    titles = list(title) or _unique_titles(default_titles(loaded))
    ids = [int(i) if i.lstrip("-").isdigit() else i for i in image_id] or None
    if color_by is None:
        # one stuff class, one colour in every panel, as soon as the categories say which classes are stuff
        color_by = ColorBy.panoptic if any(s.categories for s in loaded) else ColorBy.instance
    options = VizOptions(color_by=color_by.value, alpha=alpha, boundaries=boundaries, labels=labels,
                         area_threshold=area_threshold)
    with progress("drawing") as update:
        summary = visualize(list(zip(titles, loaded)), out, images_dir=images, options=options, image_ids=ids,
                            limit=limit, html=html, overwrite=overwrite, progress=update)
    say(f"drew {summary['images']} image(s) into {summary['out_dir']}"
        + (f"; gallery: {Path(summary['out_dir']) / 'index.html'}" if html else ""), json_out)
    emit_json(summary, json_out)


def _unique_titles(names: list[str]) -> list[str]:
    return names if len(set(names)) == len(names) else [f"{n} ({k + 1})" for k, n in enumerate(names)]
