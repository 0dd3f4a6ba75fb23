"""Overlays and side-by-side panels of panoptic sets (``prn viz``).

Colours are a pure function of ids: an instance's colour comes from its segment id, a category's from its
``color`` field (or from its id when it has none). The same id therefore has the same colour in every panel and
every run, unlike peer tools that jitter colours with an unseeded RNG. Every output is a pure function of the
inputs: integer blending, no RNG, no dict/set iteration order in what is drawn, and Pillow's embedded default font
(never the system's fonts), so two runs write byte-identical PNGs.

Output folder (``visualize``)::

    out_dir/
      <set title>/<stem>.png   one overlay per set and image (``overlays=True``)
      panels/<stem>.png        [image |] set 1 | set 2 | ... with a title over each tile (two tiles or more)
      index.html               static gallery of the panels (or of the overlays when there are no panels)
      viz.json                 what was drawn and which files were written; marks the folder as prn viz output

``<stem>`` is the first set's PNG ``file_name`` (sub-folders kept). Each file is written through a temporary file
and a rename, so an interrupted run never leaves a truncated PNG.

The package needs numpy and Pillow only, so ``prn viz`` starts fast. Its modules, by concern:

- :mod:`.options`: :class:`VizOptions`;
- :mod:`.colors`: :func:`instance_color`, :func:`category_color`;
- :mod:`.overlay`: :func:`render_overlay` (blending, borders, crowd hatching, labels);
- :mod:`.panels`: :func:`compose_panel`, :func:`text_tile`; :mod:`.text`: fonts and fitting text;
- :mod:`.selection`: which images, which annotations, which photos; :mod:`.gallery`: ``index.html``;
- :mod:`.core`: :func:`visualize`, the command in named steps.
"""

from __future__ import annotations

from ..io import write_png_atomic
from .colors import category_color, instance_color
from .core import IMAGE_TILE_TITLE, INDEX_NAME, MANIFEST_NAME, visualize
from .options import COLOR_BY, NEUTRAL_BACKGROUND, VizOptions
from .overlay import render_overlay
from .panels import compose_panel, text_tile
from .selection import PANELS_DIRNAME, PHOTO_EXTENSIONS

__all__ = ["VizOptions", "instance_color", "category_color", "render_overlay", "compose_panel", "text_tile",
           "write_png_atomic", "visualize", "NEUTRAL_BACKGROUND", "COLOR_BY", "PANELS_DIRNAME", "INDEX_NAME",
           "MANIFEST_NAME", "IMAGE_TILE_TITLE", "PHOTO_EXTENSIONS"]
