"""``prn export``: a checkpoint's dense network as an ONNX file, for ``--runtime onnxruntime``."""

from __future__ import annotations

import importlib.util
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import JsonOut, Overwrite, command


class ExportFormat(str, Enum):
    onnx = "onnx"


def register(app: typer.Typer) -> None:
    command(app, "export")(export_command)


def export_command(
    checkpoint: Annotated[Optional[Path], typer.Argument(metavar="CHECKPOINT", help="A base or PRN checkpoint "
                                                         "(default: the shipped base model).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="The ONNX file to write.")] = ...,
    format: Annotated[ExportFormat, typer.Option("--format", help="Export format.")] = ExportFormat.onnx,
    height: Annotated[int, typer.Option("--height", min=32, metavar="PX", help="Height of the example input the "
                                        "graph is traced with (any size runs later).")] = 256,
    width: Annotated[int, typer.Option("--width", min=32, metavar="PX", help="Width of the example input.")] = 256,
    overwrite: Overwrite = False,
    json_out: JsonOut = None,
) -> None:
    """Export the dense network of a base or PRN checkpoint to ONNX (post-processing stays in prn).

    Run the file with prn segment / prn refine --runtime onnxruntime --weights FILE (needs the onnx extra:
    pip install -e ".[onnx]"). Batch size, height and width stay dynamic.

    Example: prn export models/weights/prn_tiny_synth.pt --format onnx --out prn.onnx --overwrite
    """
    from ..console import emit_json, say
    from ..errors import OutputExistsError, UsageError
    from ._common import check_file

    check_file(checkpoint, "checkpoint file", "pass a checkpoint written by `prn train` (RUN_DIR/model_final.pt)")
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; name the .onnx file to write")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    if importlib.util.find_spec("onnx") is None:
        raise UsageError("prn export needs the onnx package; install it with pip install -e \".[onnx]\"")

    from ..onnx_export import export_onnx
    from ..shipped import shipped_weights

    summary = export_onnx(checkpoint or shipped_weights("base"), out, height=height, width=width)
    say(f"wrote {summary['out']} ({summary['kind']}: inputs {', '.join(summary['inputs'])}; "
        f"{len(summary['outputs'])} outputs)", json_out)
    emit_json(summary, json_out)
