"""``prn synth``: a deterministic synthetic panoptic dataset (the benchmark the shipped models were trained on)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import JsonOut, Overwrite, command

#: the settings the shipped models were trained and measured on (models/README.md)
BENCHMARK_SIZE = "256x256"
BENCHMARK_CLASS_COLOR = 0.7


def register(app: typer.Typer) -> None:
    command(app, "synth")(synth_command)


def synth_command(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Dataset root to write (images/, "
                                      "annotations/).")],
    n: Annotated[int, typer.Option("--n", min=1, metavar="N", help="Number of images.")] = 16,
    size: Annotated[str, typer.Option("--size", metavar="WxH", help="Image size (the shipped models' benchmark: "
                                      f"{BENCHMARK_SIZE}).")] = BENCHMARK_SIZE,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Random seed; the same arguments give "
                                      "byte-identical files.")] = 0,
    split: Annotated[str, typer.Option("--split", metavar="NAME", help="Split name (files go to images/<split>/ "
                                       "and annotations/panoptic_<split>.json).")] = "train",
    difficulty: Annotated[float, typer.Option("--difficulty", min=0.0, max=1.0, metavar="X", help="0 = clean and "
                                              "easy, 1 = noisy textures, heavy occlusion, small objects.")] = 0.5,
    min_things: Annotated[int, typer.Option("--min-things", min=0, metavar="N", help="Fewest thing instances per "
                                            "image.")] = 3,
    max_things: Annotated[int, typer.Option("--max-things", min=0, metavar="N", help="Most thing instances per "
                                            "image.")] = 10,
    crowd_prob: Annotated[float, typer.Option("--crowd-prob", min=0.0, max=1.0, metavar="X", help="Probability "
                                              "that an image has a crowd region.")] = 0.15,
    class_color: Annotated[float, typer.Option("--class-color", min=0.0, max=1.0, metavar="X", help="Probability "
                                               "that a thing is painted in a jittered colour of its class (0 = "
                                               "colour independent of class: only the shape tells the class).")]
    = BENCHMARK_CLASS_COLOR,
    overwrite: Overwrite = False,
    json_out: JsonOut = None,
) -> None:
    """Write a deterministic synthetic panoptic dataset in COCO panoptic layout.

    The defaults are the benchmark the shipped models were trained on (256x256, class colour 0.7).

    Example: prn synth --out data/ --n 200 --seed 0 --split train
    """
    from ..console import emit_json, progress, say
    from ..errors import UsageError
    from ..options import parse_size
    from ..synth import SynthConfig, write_dataset
    from ._common import check_out_dir

    width, height = parse_size(size)
    check_out_dir(out)
    try:
        config = SynthConfig(n=n, width=width, height=height, seed=seed, split=split, difficulty=difficulty,
                             min_things=min_things, max_things=max_things, crowd_prob=crowd_prob,
                             class_colour=class_color)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with progress(f"synth {split}") as update:
        summary = write_dataset(out, config, overwrite=overwrite, progress=update)
    say(f"wrote {summary['images']} images ({summary['things']} things, {summary['stuff']} stuff segments, "
        f"{summary['crowd']} crowd) to {summary['json']}", json_out)
    emit_json(summary, json_out)
