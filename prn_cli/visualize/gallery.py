"""The static HTML gallery (``index.html``) of a ``prn viz`` folder: no scripts, no remote assets."""

from __future__ import annotations

import html as htmlmod
from typing import Sequence
from urllib.parse import quote


def gallery_html(titles: Sequence[str], entries: list[tuple[str, str]]) -> str:
    """A static page: one figure per (relative PNG path, caption). Inline CSS only, no scripts or remote assets."""
    heading = htmlmod.escape(" | ".join(titles))
    figures = "\n".join(
        f'<figure><a href="{htmlmod.escape(quote(rel))}"><img src="{htmlmod.escape(quote(rel))}" '
        f'alt="{htmlmod.escape(caption)}" loading="lazy"></a>'
        f'<figcaption>{htmlmod.escape(caption)}</figcaption></figure>'
        for rel, caption in entries)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>prn viz: {heading}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; background: #f4f4f4; color: #222; }}
figure {{ margin: 0 0 24px 0; }}
img {{ max-width: 100%; height: auto; border: 1px solid #ccc; }}
figcaption {{ font-size: 14px; padding-top: 4px; }}
</style>
</head>
<body>
<h1>prn viz: {heading}</h1>
<p>{len(entries)} images</p>
{figures}
</body>
</html>
"""


__all__ = ["gallery_html"]
