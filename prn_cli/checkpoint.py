"""Saving and loading prn checkpoints.

A checkpoint is one ``torch.save`` file holding a dict::

    {"format": "prn-checkpoint", "format_version": 1,
     "kind": "base" | "prn",          # MS-PanopticFPN or the refinement network
     "config": {...},                 # the network's configuration as plain types
     "categories": [...],             # the COCO categories it was trained on
     "state_dict": {name: tensor},
     ...extra}                        # training state: optimizer, scaler, scheduler, step, rng, data, ...

Only tensors and plain Python types are stored, so that loading can always use
``torch.load(weights_only=True)``: a checkpoint from somewhere else is data, never code. Files are written
through a temporary file in the same folder and an atomic rename, so an interruption never leaves a
half-written checkpoint under the final name.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

from .errors import InvalidInputError, fail
from .io import atomic_output

FORMAT = "prn-checkpoint"
FORMAT_VERSION = 1
KINDS = ("base", "prn")
_KIND_NAMES = {"base": "base-model (MS-PanopticFPN, `prn train base`)",
               "prn": "refinement-network (PRN, `prn train prn`)"}
_REQUIRED_KEYS = ("kind", "config", "categories", "state_dict")


#: the files of a training run folder (``prn train --out RUN``)
LAST_NAME = "last.pt"               # full training state, to resume from
FINAL_NAME = "model_final.pt"       # weights, config and categories: what segment / refine / info load
METRICS_NAME = "metrics.jsonl"


def _plain(obj: Any, where: str) -> Any:
    """``obj`` as tensors and plain Python types that ``weights_only`` loading accepts.

    Paths become strings and numpy values become Python numbers or tensors; anything else that is not plain
    is refused here, at saving time, because it would make the checkpoint unloadable later.
    """
    import numpy as np
    import torch

    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.Size)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, Mapping):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"checkpoint key {where}[{k!r}] is a {type(k).__name__}; use str or int keys")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"checkpoint entry {where} is a {type(obj).__name__}, which weights_only loading refuses; "
                    "store tensors and plain Python types (dict, list, str, int, float, bool, None) only")


def save_checkpoint(path: str | os.PathLike, *, kind: str, config: dict, categories: list[dict], model_state,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint atomically and return its path.

    ``model_state`` is a state dict (or a module, whose ``state_dict()`` is taken); its tensors are stored on
    the CPU so the file loads on any machine. ``extra`` entries are added at the top level (they may not
    replace the fixed keys).
    """
    import torch

    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
    if hasattr(model_state, "state_dict"):
        model_state = model_state.state_dict()
    state = OrderedDict((k, v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in model_state.items())
    content: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                               "config": config, "categories": list(categories), "state_dict": state}
    for key, value in (extra or {}).items():
        if key in content:
            raise ValueError(f"extra checkpoint entry {key!r} would replace a fixed entry")
        content[key] = value
    content = _plain(content, "checkpoint")

    path = Path(path)
    with atomic_output(path, "wb") as f:
        try:
            torch.save(content, f)
        except RuntimeError as exc:
            # torch's zip writer reports a refused write (a full disk) as a RuntimeError, not an OSError
            if "inline_container" not in str(exc) and "PytorchStreamWriter" not in str(exc):
                raise
            raise _checkpoint_write_error(path, exc) from exc
    return path


def _checkpoint_write_error(path: Path, exc: RuntimeError):
    import errno
    import shutil

    from .io import write_error

    try:
        full = shutil.disk_usage(path.parent).free < (1 << 20)
    except OSError:
        full = False
    if full:
        return write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    return write_error(path, OSError(errno.EIO, f"the checkpoint writer failed: {str(exc).splitlines()[0]}"))


def load_checkpoint(path: str | os.PathLike, *, kind: str | None = None, map_location="cpu") -> dict:
    """Load a prn checkpoint with ``torch.load(weights_only=True)`` and check that it is one.

    ``kind`` ("base" or "prn"), when given, is the kind the caller needs. Every problem raises
    :class:`InvalidInputError` with a one-line message naming the file and the fix.
    """
    import pickle

    import torch

    if kind is not None and kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
    path = Path(path)
    if not path.exists():
        raise fail(path, "checkpoint file does not exist",
                   "check the path (training writes RUN_DIR/model_final.pt and RUN_DIR/last.pt)")
    if path.is_dir():
        raise fail(path, "is a directory, not a checkpoint file", "name the .pt file inside it (e.g. model_final.pt)")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it does not expect; the file is rejected or accepted anyway
            warnings.simplefilter("ignore")
            content = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            # The restricted unpickler met a global it does not allow: a class, a function, possibly code.
            raise fail(path, "not a prn checkpoint or contains code; refusing to load",
                       "use a checkpoint written by `prn train`") from None
        raise fail(path, f"is not a PyTorch file or is corrupt ({exc})",
                   "use a checkpoint written by `prn train`, or write it again") from None
    except MemoryError:
        raise
    except Exception as exc:  # torch reports corrupt files as RuntimeError, EOFError, KeyError, ...
        detail = str(exc).splitlines()[0][:120] if str(exc) else exc.__class__.__name__
        raise fail(path, f"is not a PyTorch file or is corrupt or truncated ({detail})",
                   "use a checkpoint written by `prn train`, or write it again") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        what = "a plain state_dict or another tool's file" if isinstance(content, dict) else \
            f"a {type(content).__name__}"
        raise fail(path, f"not a prn checkpoint ({what})",
                   "pass a checkpoint written by `prn train` (RUN_DIR/model_final.pt)")
    version = content.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise fail(path, f"prn checkpoint has an invalid format_version {version!r}", "write it again with prn train")
    if version > FORMAT_VERSION:
        raise fail(path, f"checkpoint format version {version} is newer than this prn reads ({FORMAT_VERSION})",
                   "upgrade prn")
    missing = [k for k in _REQUIRED_KEYS if k not in content]
    if missing:
        raise fail(path, f"prn checkpoint lacks {', '.join(missing)}", "write it again with prn train")
    if content["kind"] not in KINDS:
        raise fail(path, f"prn checkpoint has unknown kind {content['kind']!r}", "write it again with prn train")
    if kind is not None and content["kind"] != kind:
        raise InvalidInputError(
            f"{path}: is a {_KIND_NAMES[content['kind']]} checkpoint, but a {_KIND_NAMES[kind]} checkpoint is "
            f"needed here; pass the model_final.pt of a `prn train {kind}` run")
    if not isinstance(content["state_dict"], dict):
        raise fail(path, "prn checkpoint's state_dict is not a dict of tensors", "write it again with prn train")
    return content


def describe_checkpoint(path: str | os.PathLike) -> dict:
    """A summary of a prn checkpoint for people: kind, architecture, switches, parameters, training step,
    post-processing, and the categories (id, name, thing/stuff, supercategory)."""
    ckpt = load_checkpoint(path)
    config = ckpt["config"] or {}
    model = config.get("model", config)
    backbone = model.get("backbone", {}) if isinstance(model, dict) else {}
    state = ckpt["state_dict"]
    info = {"path": str(path), "kind": ckpt["kind"], "format_version": ckpt["format_version"],
            "parameters": int(sum(v.numel() for k, v in state.items() if v.is_floating_point()
                                  and not k.endswith(("running_mean", "running_var")))),
            "backbone": {k: backbone.get(k) for k in ("depth", "width", "norm") if k in backbone},
            "step": ckpt.get("step"),
            "categories": [{"id": c.get("id"), "name": c.get("name"), "isthing": int(bool(c.get("isthing", 0))),
                            "supercategory": c.get("supercategory")} for c in ckpt["categories"]]}
    if ckpt["kind"] == "prn":
        info["switches"] = {k: model.get(k) for k in ("foreground_head", "coordconv_decoder", "coordconv_encoder",
                                                     "box_head", "base_prior")}
        # prn's extensions of the paper's network: channels of each full-resolution refiner (0 = none)
        info["refiners"] = {"full_resolution": int(model.get("full_resolution_channels") or 0),
                            "boundary": int(model.get("boundary_channels") or 0)}
        # and the thing classifier's stage widths (empty = none)
        info["thing_classifier"] = [int(v) for v in model.get("classifier_channels") or ()]
        # and whether it has a "no thing" class (a false detection to remove)
        info["thing_classifier_background"] = bool(model.get("classifier_background"))
        info["postprocess"] = config.get("postprocess", {})
    from .shipped import MODEL_CARD, is_shipped, shipped_training_data

    # what it was trained on (recorded by prn train since training_data.py; the shipped ones' is known)
    info["training_data"] = ckpt.get("training_data") or shipped_training_data(path)
    if is_shipped(path):
        info["intended_use"] = MODEL_CARD
    return info


def check_run_dir(out: str | os.PathLike, *, resume: bool, overwrite: bool) -> None:
    """A run folder (checked by the engine, and by the CLI before torch loads) that holds a run needs --resume or --overwrite; --resume needs one."""
    from .errors import OutputExistsError

    out = Path(out)
    last, final = out / LAST_NAME, out / FINAL_NAME
    if resume and not last.exists():
        raise InvalidInputError(f"{last}: no checkpoint to resume from; leave out --resume to start a new run")
    if not resume and not overwrite and (last.exists() or final.exists()):
        found = LAST_NAME if last.exists() else FINAL_NAME
        raise OutputExistsError(f"{out} already holds a training run ({found}); pass --resume to continue it, "
                                "--overwrite to start again, or choose another --out")
