"""``prn demo``: the whole pipeline on fresh synthetic data with the shipped models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import Device, DeviceOpt, EvalWorkers, JsonOut, Overwrite, command


def register(app: typer.Typer) -> None:
    command(app, "demo")(demo_command)


def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Folder for everything the demo "
                                      "writes.")] = Path("prn-demo"),
    n: Annotated[int, typer.Option("--n", min=1, metavar="N", help="Number of synthetic images.")] = 8,
    size: Annotated[str, typer.Option("--size", metavar="WxH", help="Image size (the shipped models saw "
                                      "256x256).")] = "256x256",
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Random seed of the synthetic images.")] = 0,
    base_weights: Annotated[Optional[Path], typer.Option("--base-weights", metavar="FILE", help="MS-PanopticFPN "
                                                         "checkpoint (default: the shipped one).")] = None,
    prn_weights: Annotated[Optional[Path], typer.Option("--prn-weights", metavar="FILE", help="PRN checkpoint "
                                                        "(default: the shipped one).")] = None,
    corrupted_base: Annotated[bool, typer.Option("--corrupted-base", metavar="", help="Refine corrupted ground "
                                                 "truth (a stand-in for another model's output) instead of prn "
                                                 "segment's.")] = False,
    device: DeviceOpt = Device.auto,
    workers: EvalWorkers = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = None,
) -> None:
    """The whole pipeline on fresh synthetic data with the shipped models.

    synth -> segment -> refine -> eval (base vs refined) -> viz panels (image | base | refined | ground truth)
    and an interactive HTML report (prn report).

    Example: prn demo --out prn-demo --overwrite
    """
    from ..options import parse_size
    from ..runtime import check_device
    from ._common import check_out_dir, check_weights

    width, height = parse_size(size)
    check_device(device.value)
    check_weights(base_weights, "base")
    check_weights(prn_weights, "prn")
    check_out_dir(out)

    from ..console import emit_json, human, progress, say
    from ..demo import run_demo
    from ..reporting import show_report

    result = run_demo(out, n=n, width=width, height=height, seed=seed, overwrite=overwrite, workers=workers,
                      base_weights=base_weights, prn_weights=prn_weights, corrupted_base=corrupted_base,
                      device=device.value, progress=progress)
    show_report(result.report, out=human(json_out))
    say(f"data:    {result.gt_json}\nbase:    {result.base_json}\nrefined: {result.refined_json}\n"
        f"report:  {result.report_json}\npanels:  {result.viz_dir} (open {result.gallery})\n"
        f"html:    {result.html_report} (per-image PQ, sortable, hover for details)", json_out)
    emit_json({"data": str(result.gt_json), "base": str(result.base_json), "refined": str(result.refined_json),
               "report": str(result.report_json), "panels": str(result.viz_dir), "gallery": str(result.gallery),
               "html_report": str(result.html_report),
               **{f"{name}_pq": r.groups["All"]["pq"] for name, r in zip(("base", "refined"),
                                                                        result.report.results)}}, json_out)
