"""`cnnlab export`: a bundle as ONNX, TorchScript or a torch.export program, with its parity check."""

# Tasks are imported inside the commands: that keeps `cnnlab --help` fast and free of torch.
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnlab.choices import EXPORT_FILENAMES
from cnnlab.cli.common import DataDirOpt, console, one_of

app = typer.Typer()
FORMATS = list(EXPORT_FILENAMES)


@app.command(epilog="Example:  cnnlab export runs/lite0-xray --format onnx --embed-preprocessing")
def export(
    run: Annotated[Path, typer.Argument(help="A run bundle directory.")],
    format: Annotated[str, typer.Option("--format", help=f"{one_of(FORMATS)}.")] = "onnx",
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch/--static-batch", help="Any batch size.")] = True,
    embed_preprocessing: Annotated[
        bool, typer.Option("--embed-preprocessing", help="Bake normalisation in: the model takes uint8 pixels.")
    ] = False,
    samples: Annotated[int, typer.Option(help="Test images for the parity check.")] = 256,
    data_dir: DataDirOpt = None,
) -> None:
    """Export for fast inference, with the preprocessing contract and a parity check on test images."""
    from cnnlab.tasks.export import export_model

    path, parity = export_model(
        run, format, opset=opset, dynamic_batch=dynamic_batch, embed_preprocessing=embed_preprocessing,
        samples=samples, data_dir=data_dir,
    )  # fmt: skip
    console.print(
        f"parity on {parity.samples} test images: max |dp| {parity.max_abs_diff:.2e} (<= {parity.tolerance:.0e}), "
        f"top-1 agreement {parity.top1_agreement:.2%}; {parity.seconds_reference:.2f} s torch vs "
        f"{parity.seconds_exported:.2f} s exported"
    )
    console.print(f"wrote {path}, {path.parent / 'preprocess.json'} and {path.parent / 'parity.json'}")
