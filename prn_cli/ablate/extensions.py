"""prn's extensions for every Table 1 row: graft a trained PRN's boundary refiner and thing classifier onto a row.

The paper's Table 1 switches change PRN's trunk (foreground source, CoordConv, the box branch). prn's boundary
refiner reads the image and the base's maps, and its thing classifier reads crops of the image and the final
masks: neither reads the trunk, so one trained pair can serve every row. ``prn ablate --extensions-from CKPT``
refines each row with the row's own network plus CKPT's two modules and their post-processing settings, so the
table ranks the switches inside the pipeline prn ships instead of without its thing steps.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidInputError

#: PRNConfig fields that shape the two modules
EXTENSION_CONFIG = ("boundary_channels", "boundary_dilations", "boundary_band", "classifier_channels",
                    "classifier_crop_size", "classifier_background", "classifier_background_examples")
#: PostProcessConfig fields of the steps that use them
EXTENSION_POSTPROCESS = ("boundary_radius", "boundary_confidence", "boundary_min_area", "boundary_min_gain",
                         "boundary_min_coverage", "classifier_confidence", "classifier_small_area",
                         "classifier_small_confidence", "classifier_remove_confidence", "classifier_join_share",
                         "classifier_split_confidence",
                         "void_thing_confidence", "void_thing_min_area")
#: state-dict prefixes of the two modules
EXTENSION_MODULES = ("boundary.", "classifier.")


def _module_of(field: str) -> str:
    """The module (state-dict prefix) a config or post-processing field belongs to: the void-thing step is the
    classifier's."""
    return "boundary." if field.startswith("boundary") else "classifier."


def same_categories(a, b) -> bool:
    """Whether two category lists have the same ids, each a thing or stuff alike (in any order)."""
    return sorted((int(c["id"]), bool(c.get("isthing"))) for c in a) == \
        sorted((int(c["id"]), bool(c.get("isthing"))) for c in b)


def check_donor(path: str | os.PathLike) -> dict:
    """The checkpoint at ``path`` if it is a PRN with a boundary refiner or a thing classifier; else one line that
    names the file and the fix."""
    from ..checkpoint import load_checkpoint

    donor = load_checkpoint(path, kind="prn")
    model = donor["config"]["model"]
    if not model.get("boundary_channels") and not model.get("classifier_channels"):
        raise InvalidInputError(f"{path}: this PRN has neither a boundary refiner nor a thing classifier; pass a "
                                "PRN trained with them (the shipped models/weights/prn_tiny_synth.pt has both)")
    return donor


def check_donor_settings(donor: dict, postprocess: dict, where) -> None:
    """One line naming ``where`` (the donor) when a post-processing setting given for the borrowed modules
    (``postprocess``: field -> value) needs a module, or a "no thing" class, that the donor lacks."""
    from ..models.prn.postprocess import PostProcessConfig, missing_network_parts

    given = {field: value for field, value in postprocess.items() if field in EXTENSION_POSTPROCESS}
    for need in missing_network_parts(PostProcessConfig(**given), donor["config"]["model"]):
        if need.module == "extension":
            raise InvalidInputError(f"{where}: {need.lacking}; {need.fix}")


def graft_extensions(row_checkpoint: str | os.PathLike, donor_checkpoint: str | os.PathLike,
                     out: str | os.PathLike) -> Path:
    """Write to ``out`` the PRN of ``row_checkpoint`` with the boundary refiner and thing classifier of
    ``donor_checkpoint`` (weights, config fields and post-processing settings; the row keeps everything else,
    its own extension modules included if the donor lacks that one). Both must have the same categories."""
    from ..checkpoint import load_checkpoint, save_checkpoint

    row = load_checkpoint(row_checkpoint, kind="prn")
    donor = check_donor(donor_checkpoint)
    if not same_categories(row["categories"], donor["categories"]):
        raise InvalidInputError(f"{donor_checkpoint}: its categories differ from those of {row_checkpoint}; pass a "
                                "PRN trained on the same categories")
    donor_model = donor["config"]["model"]
    taken = [prefix for prefix, field in zip(EXTENSION_MODULES, ("boundary_channels", "classifier_channels"))
             if donor_model.get(field)]
    donor_post = donor["config"].get("postprocess", {})
    model = {**row["config"]["model"],
             **{f: donor_model[f] for f in EXTENSION_CONFIG if f in donor_model and _module_of(f) in taken}}
    postprocess = {**row["config"].get("postprocess", {}),
                   **{f: donor_post[f] for f in EXTENSION_POSTPROCESS if f in donor_post and _module_of(f) in taken}}
    state = {k: v for k, v in row["state_dict"].items() if not k.startswith(tuple(taken))}
    state.update({k: v for k, v in donor["state_dict"].items() if k.startswith(tuple(taken))})
    config = {**row["config"], "model": model, "postprocess": postprocess}
    fixed = ("format", "format_version", "kind", "config", "categories", "state_dict", "extensions_from")
    extra = {k: v for k, v in row.items() if k not in fixed}   # the row's step and training data
    extra["extensions_from"] = str(Path(donor_checkpoint).resolve())
    return save_checkpoint(out, kind="prn", config=config, categories=row["categories"], model_state=state,
                           extra=extra)
