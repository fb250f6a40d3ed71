"""`cnnlab export`: a bundle as ONNX, TorchScript or a torch.export program, with its parity check."""

# Tasks are imported inside the commands: that keeps `cnnlab --help` fast and free of torch.
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnlab.choices import EXPORT_FILENAMES
from cnnlab.cli.common import DataDirOpt, DeviceOpt, choice_metavar, console, one_of

app = typer.Typer()
FORMATS = list(EXPORT_FILENAMES)


@app.command(
    epilog="Examples:  cnnlab export runs/lite0-xray --format onnx --embed-preprocessing"
    "  |  cnnlab export runs/demo --samples 0 (no data needed)"
)
def export(
    run: Annotated[Path, typer.Argument(help="A run bundle directory.")],
    format: Annotated[
        str, typer.Option("--format", metavar=choice_metavar(FORMATS), help=f"{one_of(FORMATS)}.")
    ] = "onnx",
    opset: Annotated[int, typer.Option(help="ONNX opset (18 or later: what the exporter writes).")] = 18,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch/--static-batch", help="Any batch size.")] = True,
    embed_preprocessing: Annotated[
        bool, typer.Option("--embed-preprocessing", help="Bake normalisation in: the model takes uint8 pixels.")
    ] = False,
    samples: Annotated[
        int,
        typer.Option(
            help="Test images for the parity check (0: no data needed: parity on 32 seeded random pixel images)."
        ),
    ] = 256,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Export for fast inference, with the preprocessing contract and a parity check on test images."""
    from cnnlab.tasks.export import export_model

    path, parity = export_model(
        run, format, opset=opset, dynamic_batch=dynamic_batch, embed_preprocessing=embed_preprocessing,
        samples=samples, data_dir=data_dir, device=device,
    )  # fmt: skip
    inputs = f"{parity.samples} test images" if samples else f"{parity.samples} random images"
    console.print(
        f"parity on {inputs}: max |dp| {parity.max_abs_diff:.2e} (<= {parity.tolerance:.0e}), "
        f"top-1 agreement {parity.top1_agreement:.2%}; {parity.seconds_reference:.2f} s torch vs "
        f"{parity.seconds_exported:.2f} s exported"
    )
    console.print(f"wrote {path}, {path.parent / 'preprocess.json'} and {path.parent / 'parity.json'}")
