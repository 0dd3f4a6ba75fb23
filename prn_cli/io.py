"""Files in and out: atomic writes, reading photos, and the ``--out`` folder guard.

Every prn command writes through this module, so an interrupted run never leaves a truncated file, every file
gets the permissions a plain ``open()`` would give it (0666 less the umask, 0644 with the usual umask), and every
photo is read the same way with the same one-line errors.

- :func:`atomic_output` (and :func:`write_bytes_atomic`, :func:`write_text_atomic`, :func:`write_json_atomic`,
  :func:`write_png_atomic`): a temporary file in the target's folder, renamed over the target only on success;
  on an exception the temporary file is removed and any earlier target is left untouched. A write the machine
  refuses (full disk, quota, read-only folder) is :class:`OutputWriteError` naming the file
  (:func:`naming_write_errors`).
- :func:`read_photo`: an image file as (H, W, 3) uint8 RGB, :class:`InvalidInputError` naming the file when it
  is missing or cannot be decoded.
- :func:`prepare_output_dir`: refuse an ``--out`` that is a file, or that holds an earlier result without
  ``--overwrite``.

No torch, and numpy and Pillow are imported only by the functions that need them: importing this module is cheap.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, Sequence

from .errors import OutputExistsError, OutputWriteError, fail

if TYPE_CHECKING:
    import numpy as np

# --------------------------------------------------------------------------------------------------------------
# atomic writes


#: errno values of a write that the machine refused: the disk or the quota is full, the file is too large, the
#: folder is read-only or not writable, the device failed.
WRITE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM",
                                                           "EIO") if hasattr(errno, name))


def write_error(path: str | os.PathLike, exc: OSError) -> OutputWriteError:
    """The one line for an output that cannot be written: ``<file>: cannot be written (<why>); <fix>``."""
    why = exc.strerror or exc.__class__.__name__
    fix = ("free space on the disk, or choose another output folder" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
           else "check the folder's permissions and free space, or choose another output folder")
    return OutputWriteError(f"{path}: cannot be written ({why}); {fix}")


@contextmanager
def naming_write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` of :data:`WRITE_ERRNOS` raised inside the block into :class:`OutputWriteError` naming
    ``path`` (``f.write`` on a full disk raises one that names no file)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise write_error(path, exc) from exc
        raise


@contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w", *, fsync: bool = True) -> Iterator[IO]:
    """Write ``path`` through a temporary file in the same folder, renamed over ``path`` only on success.

    Readers never see a partial file, and an exception leaves any earlier ``path`` untouched and no temporary
    file behind. The folder is created when missing. Text modes write UTF-8. The file gets the permissions a
    plain ``open()`` would give it (0666 less the umask). ``fsync=False`` skips flushing the data to disk
    before the rename: still atomic for readers, but after a power cut the file may be empty (cheaper; used
    for images, which a re-run writes again).
    """
    path = Path(path)
    with naming_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            # mkstemp creates 0600; give the file the permissions a plain open() would (0666 less the umask)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
                yield f
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, "wb", fsync=fsync) as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = True) -> None:
    """Write ``text`` as UTF-8 with ``\\n`` line ends (on every platform) to ``path`` atomically."""
    with atomic_output(path, "wb", fsync=fsync) as f:
        f.write(text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON through a temporary file in the same folder and an atomic rename."""
    with atomic_output(path) as f:
        json.dump(obj, f)


def write_png_atomic(path: str | os.PathLike, rgb: "np.ndarray", *, compress_level: int = 6,
                     fsync: bool = False) -> None:
    """Write an (H, W, 3) uint8 array as PNG atomically. No metadata, so the bytes depend on the pixels only.

    Raises ``ValueError`` for any other shape, before anything is written. Not flushed to disk by default
    (``fsync``): images are many, and a re-run writes them again; the JSON that lists them is flushed.
    """
    import numpy as np
    from PIL import Image

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {rgb.shape}")
    img = Image.fromarray(rgb)
    with atomic_output(path, "wb", fsync=fsync) as f:
        img.save(f, format="PNG", compress_level=compress_level)


# --------------------------------------------------------------------------------------------------------------
# reading photos

#: Pillow modes of single-channel images with more than 8 bits per pixel. ``convert("RGB")`` clips their values
#: to 255, which turns a 16-bit photo into a white image, so they are scaled to 8 bits (value >> 8) instead.
_WIDE_GREY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def read_photo(path: str | os.PathLike) -> "np.ndarray":
    """(H, W, 3) uint8 RGB of an image file (a writable array); a missing or unreadable file raises
    :class:`InvalidInputError` naming it.

    Grey, palette and alpha images are converted to RGB (alpha is dropped). 16-bit grey images (PNG, TIFF, PGM)
    keep their high byte (value >> 8), as Pillow does for 16-bit RGB.

    EXIF orientation is applied, as detectron2's ``read_image`` does: a phone photo stored sideways with
    orientation 6 is read upright, so its panoptic PNG and its ``width``/``height`` are those of the upright
    image. Every command reads photos here (segment, refine, viz, training), so they agree. An unreadable EXIF
    block is ignored (the stored grid is used), as in detectron2.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im = _upright(im)
            if im.mode in _WIDE_GREY_MODES:
                grey = np.asarray(im)
                grey = (np.clip(grey, 0, 0xFFFF).astype(np.uint32) >> 8).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.array(im.convert("RGB"))   # a writable copy: torch refuses read-only arrays
    except FileNotFoundError:
        raise fail(path, "image file is missing", "check the images folder and the images' file_name") from None
    except IsADirectoryError:
        raise fail(path, "is a directory, not an image file", "check the images' file_name") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise fail(path, f"image cannot be decoded ({exc.__class__.__name__}: {exc})",
                   "the file is corrupt, truncated or not an image; replace or remove it") from None


def orientation_hint(photo_hw: Sequence[int], png_hw: Sequence[int]) -> str:
    """For a PNG whose size is the photo's turned by 90 degrees: a sentence saying why (the photo's EXIF
    orientation, which prn applies), to end a size-mismatch message with; else ``""``."""
    if tuple(photo_hw) != tuple(png_hw) and tuple(photo_hw) == tuple(png_hw)[::-1]:
        return (" (the photo's EXIF orientation turns it upright, as detectron2's read_image does; the PNG must be "
                "of the upright photo)")
    return ""


def _upright(im):
    """``im`` turned by its EXIF orientation (2-8: flips and rotations), or ``im`` itself."""
    from PIL import ImageOps

    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:       # a corrupt EXIF block: the stored pixel grid, as detectron2 does
        return im
    if orientation in (None, 1):
        return im
    try:
        return ImageOps.exif_transpose(im)
    except Exception:
        return im


# --------------------------------------------------------------------------------------------------------------
# the output folder


def refuse_file_as_folder(path: str | os.PathLike) -> None:
    """Raise :class:`InvalidInputError` when ``path``, or a folder above it, exists as a file.

    Writing there would otherwise fail midway with ``NotADirectoryError``/``FileExistsError``.
    """
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise fail(p, "exists and is a file", "choose a folder for --out")
            return


def prepare_output_dir(path: str | os.PathLike, *, overwrite: bool, marker_names: Sequence[str] = (),
                       what: str | None = None, flag: str = "--overwrite") -> list[Path]:
    """Check that ``path`` may be written as an output folder; return the markers (earlier results) found.

    - ``path`` (or a folder above it) is a file: :class:`InvalidInputError`, "``<file>``: exists and is a file;
      choose a folder for --out".
    - ``path / name`` exists for a name in ``marker_names`` and not ``overwrite``: :class:`OutputExistsError`
      (exit 2), "``<path>`` already holds ``<what>`` (``<name>``); pass --overwrite to replace it or choose
      another output folder", or without ``what`` "``<path/name>`` already exists; pass --overwrite ...".
      ``flag`` names the option to pass.

    Nothing is created or removed: with ``overwrite`` the caller removes what the earlier result wrote.
    """
    path = Path(path)
    refuse_file_as_folder(path)
    found = [path / name for name in marker_names if (path / name).exists()]
    if found and not overwrite:
        head = f"{path} already holds {what} ({found[0].name})" if what else f"{found[0]} already exists"
        raise OutputExistsError(f"{head}; pass {flag} to replace it or choose another output folder")
    return found


__all__ = ["orientation_hint", "WRITE_ERRNOS", "write_error", "naming_write_errors", "atomic_output", "write_bytes_atomic", "write_text_atomic", "write_json_atomic", "write_png_atomic",
           "read_photo", "refuse_file_as_folder", "prepare_output_dir"]
