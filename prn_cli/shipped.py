"""The small checkpoints shipped with prn (``models/weights/``, installed as ``prn_cli/models/weights/``).

They were trained on prn's synthetic data (``models/README.md`` has the commands, seeds and val figures), so
``prn segment``, ``prn refine`` and ``prn demo`` work out of the box. Finding them imports nothing heavy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import fail

SHIPPED = {"base": "base_tiny_synth.pt", "prn": "prn_tiny_synth.pt"}
_WHAT = {"base": "MS-PanopticFPN (tiny)", "prn": "PRN (tiny)"}


def weights_dir() -> Path:
    spec = importlib.util.find_spec("prn_cli.models")
    return Path(list(spec.submodule_search_locations)[0]) / "weights"


def shipped_weights(kind: str) -> Path:
    """Path of the shipped checkpoint of ``kind`` ("base" or "prn"); a one-line error if it is missing."""
    if kind not in SHIPPED:
        raise ValueError(f"no shipped model of kind {kind!r}; kinds: {', '.join(SHIPPED)}")
    path = weights_dir() / SHIPPED[kind]
    if not path.is_file():
        raise fail(path, f"the shipped {_WHAT[kind]} checkpoint is missing", "pass --weights CKPT, or reinstall prn")
    return path


def describe(kind: str, path: Path) -> str:
    return (f"using the shipped {_WHAT[kind]} model {path.name}, trained on prn's synthetic data "
            "(pass --weights for your own)")
