"""``prn convert``: another framework's saved predictions -> a COCO panoptic set (``--from``), or a COCO panoptic
set -> another framework's files (``--to``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import (Categories, Id2Label, ImagesJson, JsonOut, LabelDivisor, LabelMapOpt, Out, Overwrite, VoidLabel,
                      command)


def register(app: typer.Typer) -> None:
    command(app, "convert")(convert_command)


def convert_command(
    source: Annotated[Path, typer.Argument(metavar="INPUT", help="A prediction file, or a folder of them named by "
                                           "image (--from); a COCO panoptic set (--to).", show_default=False)],
    out: Out,
    from_format: Annotated[Optional[str], typer.Option("--from", metavar="FORMAT", help="Read this format: hf, "
                                                       "detectron2, mmdet, 2ch, divisor, cityscapes.")] = None,
    to_format: Annotated[Optional[str], typer.Option("--to", metavar="FORMAT", help="Write a COCO panoptic set as "
                                                     "2ch, divisor or cityscapes files.")] = None,
    categories: Categories = None,
    images_json: ImagesJson = None,
    id2label: Id2Label = None,
    label_map: LabelMapOpt = None,
    label_divisor: LabelDivisor = 1000,
    void: VoidLabel = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = None,
) -> None:
    """Convert another model's panoptic predictions into a COCO panoptic set, or back.

    --from FORMAT writes DIR/panoptic.json + DIR/panoptic/ (areas and boxes computed, iscrowd 0, valid under prn's
    validator). Formats: hf: <image>.pt, torch.save of one transformers post_process_panoptic_segmentation result
    (labels matched by name through --id2label); detectron2: <image>.pt, torch.save(outputs['panoptic_seg'])
    (contiguous labels = categories in id order; Panoptic-DeepLab's (map, None) form too); mmdet: <image>.npy
    (label + instance * 1000) or DetInferencer's <image>_panoptic_seg.png; 2ch: panopticapi's PNG, R = category
    id, G = instance; divisor: category * D + instance in .npy or a 16-bit PNG; cityscapes: *_instanceIds.png
    (Cityscapes' categories by default). Any inconsistency stops with one line naming the file, exit 3, and
    nothing written.

    --to 2ch|divisor|cityscapes writes one file per image of the COCO panoptic set INPUT into DIR.

    Example: prn convert tests/data/coco_panoptic_sample/panoptic_examples_2ch_format --from 2ch --categories tests/data/coco_panoptic_sample/panoptic_examples.json --images-json tests/data/coco_panoptic_sample/panoptic_examples.json --out converted/
    """
    from ..console import emit_json, progress, say
    from ..errors import UsageError
    from ._common import check_out_dir, check_set_output, convert_options

    if (from_format is None) == (to_format is None):
        raise UsageError("pass either --from FORMAT (predictions -> COCO panoptic) or --to FORMAT (COCO panoptic -> "
                         "files)")
    options = convert_options(label_map=label_map, id2label=id2label, label_divisor=label_divisor, void=void,
                              images_json=images_json)
    check_categories(categories)
    if to_format is not None:
        check_out_dir(out)
        from ..convert.export import export

        with progress("exporting") as update:
            result = export(source, to_format, out, options=options, overwrite=overwrite, progress=update)
        say(f"wrote {result.written} {to_format} file(s) to {result.out_dir}", json_out)
        emit_json({"out": str(result.out_dir), "format": to_format, "written": result.written}, json_out)
        return
    from ..convert.run import check_format

    check_format(from_format)
    check_set_output(out, overwrite)
    from ..convert.run import convert

    with progress("converting") as update:
        result = convert(source, from_format, out, categories=categories, options=options, overwrite=overwrite,
                         progress=update)
    say(f"wrote {result.written} image(s), {result.segments} segment(s) to {result.json_path}", json_out)
    emit_json({"json": str(result.json_path), "format": from_format, "written": result.written,
               "segments": result.segments}, json_out)


def base_convert_options(base_format: str, *, categories, images_json, id2label, label_map, label_divisor, void):
    """``--base-format`` and its conversion options (None for a COCO base, which takes none of them)."""
    from ..errors import UsageError
    from ._common import convert_options

    if base_format == "coco":
        given = [flag for flag, value in (("--categories", categories), ("--images-json", images_json),
                                          ("--id2label", id2label), ("--label-map", label_map),
                                          ("--void", void)) if value is not None]
        if given or label_divisor != 1000:
            raise UsageError(f"{(given or ['--label-divisor'])[0]} applies to --base-format other than coco; a COCO "
                             "base carries its own categories (map them with --category-map)")
        return None
    from ..convert.run import check_format

    check_format(base_format)
    check_categories(categories)
    return convert_options(label_map=label_map, id2label=id2label, label_divisor=label_divisor, void=void,
                           images_json=images_json)


def check_categories(categories: Path | None) -> None:
    """``--categories``: an existing JSON file, or the word ``cityscapes`` (Cityscapes' 19 evaluated classes)."""
    from ._common import check_file

    if categories is not None and str(categories) == "cityscapes" and not categories.exists():
        return
    check_file(categories, "categories JSON", "pass a panoptic JSON (e.g. the ground truth), a JSON list of "
               "categories, or 'cityscapes'")
