"""`cnnlab shortcuts`: does a bundle's network recognise the hospital instead of the disease?"""

# Tasks are imported inside the commands: that keeps `cnnlab --help` fast and free of torch.
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnnlab.choices import SPLITS
from cnnlab.cli.common import DataDirOpt, DeviceOpt, choice_metavar, console, err, one_of

app = typer.Typer()


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.0%}"


@app.command(epilog="Example:  cnnlab shortcuts runs/recipes/xray-triage/run")
def shortcuts(
    run: Annotated[Path, typer.Argument(help="A run bundle directory trained on data with a source column.")],
    data_dir: DataDirOpt = None,
    split: Annotated[
        str, typer.Option(metavar=choice_metavar(SPLITS), help=f"Split for the Grad-CAM maps: {one_of(SPLITS)}.")
    ] = "test",
    out: Annotated[Path | None, typer.Option("--out", help="Folder to write (default: RUN/shortcuts).")] = None,
    device: DeviceOpt = None,
) -> None:
    """Shortcut checks: a linear probe of each image's source (hospital, scanner) on the frozen
    embedding, within each class of two or more sources, and how much Grad-CAM attribution lies on
    the border band and outside a central chest box, per source.

    Needs metadata.csv's `source` column. Writes shortcuts.json and shortcuts.png."""
    from cnnlab.tasks.shortcuts import shortcut_checks

    result = shortcut_checks(run, data_dir=data_dir, split=split, out=out, console=err, device=device)
    probe = result.probe
    table = Table("images", "sources", "balanced accuracy (95% CI)", "chance", "accuracy", "majority share",
                  title=f"source probe on the embedding ({probe.overall.folds} folds by {probe.unit})")  # fmt: skip
    rows = [("all images", probe.overall), *((f"within {c}", s) for c, s in probe.within_class.items())]
    for name, s in rows:
        low, high = s.interval.low, s.interval.high
        table.add_row(
            f"{name} ({s.images})",
            ", ".join(f"{k} {v}" for k, v in s.counts.items()),
            f"{s.balanced_accuracy:.2f} ({low:.2f}-{high:.2f})" if low == low else f"{s.balanced_accuracy:.2f}",
            f"{s.chance_balanced_accuracy:.2f}",
            f"{s.accuracy:.2f}",
            f"{s.chance_accuracy:.2f}",
        )
    console.print(table)
    if probe.single_source:
        one = ", ".join(f"{c} ({s})" for c, s in probe.single_source.items())
        console.print(f"one source only, so source = class there and no within-class probe: {one}")
    cams = Table("Grad-CAM on", "images", "mass on border band", "band's area", "mass outside central box",
                 "outside's area", title=f"where Grad-CAM ({result.cam_layer}) looks on {result.split}")  # fmt: skip
    for name, stats in result.locations.items():
        cams.add_row(name, str(stats.images), _pct(stats.border.mean), _pct(stats.border.area),
                     _pct(stats.outside_centre.mean), _pct(stats.outside_centre.area))  # fmt: skip
    console.print(cams)
    if result.report["cam"]["coarse"]:
        h, w = result.cam_grid or (0, 0)
        console.print(f"[yellow]note: {result.cam_layer} maps are {h}x{w} before upsampling; one cell is wider than "
                      "the border band, so its share there is mostly smoothing[/yellow]")  # fmt: skip
    console.print(f"{result.embedded} images embedded in {result.seconds:.1f} s; wrote {result.json_path} and "
                  f"{result.figure_path}")  # fmt: skip
