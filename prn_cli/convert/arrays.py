"""Reading the array files that several formats share: ``.npy`` and integer PNGs (8/16-bit grey, RGB)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import fail


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """An ``.npy`` array, never unpickling objects."""
    path = Path(path)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise fail(path, "file is missing", "check the path") from None
    except (ValueError, OSError, EOFError) as exc:
        raise fail(path, f"is not a readable .npy array ({str(exc).splitlines()[0][:120]})",
                   "save the map with numpy.save (an integer array, no objects)") from None


def read_png_values(path: str | os.PathLike, *, channels: str) -> np.ndarray:
    """A PNG's pixels: ``channels="grey"`` -> (H, W) int64 of an 8- or 16-bit single-channel PNG;
    ``"rgb"`` -> (H, W, 3) uint8 of an 8-bit RGB(A) PNG."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.format != "PNG":
                raise fail(path, f"is a {img.format} file, not a PNG", "save the map as a lossless PNG")
            img.load()
            mode = img.mode
            if channels == "grey":
                if mode not in ("L", "I", "I;16", "I;16B", "I;16L"):
                    raise fail(path, f"is a {mode} PNG, not a single-channel 8- or 16-bit one",
                               "save the integer map as a greyscale PNG (16-bit for values above 255)")
                return np.asarray(img).astype(np.int64)
            if mode not in ("RGB", "RGBA"):
                raise fail(path, f"is a {mode} PNG, not 8-bit RGB", "save the map as an 8-bit RGB PNG")
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise fail(path, "file is missing", "check the path") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise fail(path, f"cannot be decoded as a PNG ({exc.__class__.__name__})",
                   "the file is corrupt or not a PNG; write it again") from None
