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

#: What the shipped checkpoints are for, said plainly (``prn info`` shows it).
MODEL_CARD = ("a demonstration, not a model for real images: trained on prn's synthetic shapes (prn synth, "
              "256x256, 12 classes: 7 shapes and 5 textured stuff classes), it knows nothing of photos and answers "
              "with those 12 classes whatever it is shown. To refine your own model's output, train a PRN on your "
              "categories and data (prn train base, prn train prn; README, 'Refining your own model's output')")
#: The shipped models' training data, summarised as ``prn train`` now records it in a checkpoint
#: (training_data.summarize_set on the first 64 images of ``prn synth --n 64 --seed 1 --split train``).
SHIPPED_TRAINING_DATA = {
    "description": "prn's synthetic shapes (prn synth --seed 1, 256x256, --class-color 0.7)", "source": "prn synth",
    "images": 2000, "categories": 12, "things": 7, "sample": 64, "shipped": True,
    "features": ["long_side", "aspect", "brightness", "contrast", "saturation", "edges"],
    "mean": [256.0, 1.0, 0.462594, 0.154465, 0.315633, 0.051308],
    "std": [0.0, 0.0, 0.098482, 0.046448, 0.064251, 0.010616],
}


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
    return (f"using the shipped {_WHAT[kind]} model {path.name}: a demonstration trained on prn's synthetic "
            "shapes (12 classes), not on real images (pass --weights for your own; prn info says more)")


def is_shipped(path) -> bool:
    """Whether ``path`` is one of the shipped checkpoints."""
    if path is None:
        return False
    try:
        return Path(path).resolve().parent == weights_dir().resolve() and Path(path).name in SHIPPED.values()
    except OSError:
        return False


def shipped_training_data(path) -> dict | None:
    """The shipped models' training record for a shipped checkpoint ``path``, else None."""
    return dict(SHIPPED_TRAINING_DATA) if is_shipped(path) else None
