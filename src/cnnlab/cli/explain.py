"""`cnnlab explain`, `filters`, `featuremaps`, `summary` and `calc`: what a network looks at, what
it learned and what it is made of."""

# Tasks are imported inside the commands: that keeps `cnnlab --help` fast and free of torch.
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnnlab.choices import CAM_METHODS
from cnnlab.cli.common import EXIT_CODES, DeviceOpt, choice_metavar, console, err, exit_for, one_of

app = typer.Typer()
TargetArg = Annotated[str, typer.Argument(help="A run bundle, or a model name (random initialisation).")]


@app.command(
    epilog="Examples:  cnnlab filters runs/demo  |  cnnlab filters alexnet_small"
    "  |  cnnlab filters runs/demo --layer features.c3"
)
def filters(
    target: TargetArg,
    layer: Annotated[str | None, typer.Option("--layer", help="Conv layer (default: the first).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="PNG to write.")] = None,
) -> None:
    """A grid of the learned kernels of a conv layer, each filter normalised on its own."""
    from cnnlab.tasks.explain import filters as plot_filters

    result = plot_filters(target, layer, out)
    state = "random initialisation" if result.untrained else "trained"
    console.print(f"{result.grid.layer}: {' x '.join(map(str, result.grid.shape))} ({state}); wrote {result.path}")


@app.command(
    epilog="Examples:  cnnlab featuremaps runs/demo runs/demo/examples/digit-7.png --all-stages"
    "  |  cnnlab featuremaps runs/demo runs/demo/examples/digit-7.png --layer features.c1 --layer features.c3"
)
def featuremaps(
    target: TargetArg,
    image: Annotated[Path, typer.Argument(help="An image file.")],
    layer: Annotated[list[str] | None, typer.Option("--layer", help="Layer to show (repeatable).")] = None,
    all_stages: Annotated[bool, typer.Option("--all-stages", help="The output of every stage.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="PNG to write.")] = None,
) -> None:
    """The activations of chosen layers for one image, as grids beside the input."""
    from cnnlab.tasks.explain import featuremaps as plot_feature_maps

    result = plot_feature_maps(target, image, layer, all_stages, out)
    for name, shape in result.shapes.items():
        console.print(f"{name}: {' x '.join(map(str, shape))}")
    console.print(f"wrote {result.path}")


@app.command(
    epilog="Examples:  cnnlab explain runs/lite0-xray ../shared/data/chest-xray/test --faithfulness"
    f"  |  cnnlab explain runs/demo runs/demo/examples/digit-7.png --method gradcam++ --class 7  |  {EXIT_CODES}"
)
def explain(
    run: Annotated[Path, typer.Argument(help="A run bundle directory.")],
    path: Annotated[Path, typer.Argument(help="An image file or a folder of images.")],
    method: Annotated[
        str, typer.Option(metavar=choice_metavar(CAM_METHODS), help=f"{one_of(CAM_METHODS)}.")
    ] = "gradcam",
    class_: Annotated[str | None, typer.Option("--class", help="Class to explain (default: predicted).")] = None,
    layer: Annotated[str | None, typer.Option("--layer", help="Layer to explain (default: the card's).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 16,
    faithful: Annotated[
        bool, typer.Option("--faithfulness", help="Score the maps by deletion/insertion against random maps.")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for the overlays.")] = None,
    device: DeviceOpt = None,
) -> None:
    """Heat-map overlays with the predicted label and calibrated probability; per-file errors.

    When the output is not a terminal, a progress line with the rate and the time left is printed
    (to stderr) every tenth of the images or 30 s."""
    from cnnlab.tasks.explain import explain_folder

    report = explain_folder(run, path, method, class_, layer, batch_size, faithful, out, console=err, device=device)
    files = len(report.results)
    table = Table("file", "class", "probability", "overlay / error", title=f"{method} on {run.name}")
    for r in report.results:
        if files <= 50 or r.error:
            table.add_row(
                r.path, r.label, "" if r.error else f"{r.probability:.3f}", r.overlay or f"[red]{r.error}[/red]"
            )
    if table.rows:
        console.print(table)
    explained = files - report.failed
    console.print(
        f"{explained} explained, {report.failed} unreadable in {report.seconds:.1f} s "
        f"({explained / max(report.seconds, 1e-9):.1f} images/s); overlays in {report.folder}"
    )
    score = report.faithfulness
    if score is not None:
        result = Table(
            "map", "deletion AUC (lower is better)", "insertion AUC (higher is better)", "insertion - deletion"
        )
        result.add_row(method, f"{score.deletion:.3f}", f"{score.insertion:.3f}", f"{score.score:+.3f}")
        result.add_row(
            "random", f"{score.random_deletion:.3f}", f"{score.random_insertion:.3f}", f"{score.random_score:+.3f}"
        )
        console.print(result)
        verdict = "beats" if score.score > score.random_score else "does NOT beat"
        console.print(f"{method} {verdict} random maps on {score.images} images")
        console.print(f"wrote {report.faithfulness_file}")
    exit_for(explained, report.failed, "read")


@app.command(
    epilog="Examples:  cnnlab summary vgg16  |  cnnlab summary resnet50 --input 3x224x224"
    "  |  cnnlab summary runs/demo --compare-dense"
)
def summary(
    target: Annotated[str, typer.Argument(help="A model name (`cnnlab models`, timm:NAME) or a run bundle.")],
    input: Annotated[str | None, typer.Option("--input", help="C x H x W (default: the model's).")] = None,
    compare_dense: Annotated[
        bool, typer.Option("--compare-dense", help="Parameters of a dense network with the same widths.")
    ] = False,
) -> None:
    """Every layer: kernel, stride, padding, output shape, parameters, multiply-adds, receptive field."""
    from cnnlab.tasks.explain import summary as summarise

    result = summarise(target, input, compare_dense)
    tab = result.table
    table = Table(
        "layer", "type", "kernel", "stride", "pad", "dil", "output", "params", "MACs", "RF", "jump",
        title=f"{result.title} at {'x'.join(map(str, result.input_shape))}",
    )  # fmt: skip
    for r in tab.rows:
        table.add_row(r.name, r.type, r.kernel, r.stride, r.padding, r.dilation, "x".join(map(str, r.output)),
                      f"{r.parameters:,}" if r.parameters else "", f"{r.macs:,}" if r.macs else "",
                      r.receptive_field, r.jump)  # fmt: skip
    console.print(table)
    console.print(
        f"[bold]total[/bold]: {tab.parameters:,} parameters ({tab.trainable:,} trainable), "
        f"{tab.macs:,} multiply-adds per image, {len(tab.rows)} layers"
    )
    if tab.unused_parameters:
        console.print(f"{tab.unused_parameters:,} parameters are in modules inference never calls (auxiliary heads)")
    console.print("RF: receptive field in input pixels; jump: input pixels between neighbouring units")
    if result.dense_parameters is not None:
        widths, dense = result.dense_widths, result.dense_parameters
        console.print(
            f"a fully connected network with the same widths ({' -> '.join(f'{w:,}' for w in widths)}) "
            f"needs {dense:,} parameters: {dense / max(tab.parameters, 1):,.0f}x this network's"
        )


@app.command(
    epilog="Examples:  cnnlab calc conv --input 32 --kernel 5 --in 1 --out 6"
    "  |  cnnlab calc conv --input 224 --kernel 3 --stride 2 --padding same"
    "  |  cnnlab calc pool --input 28 --kernel 2"
)
def calc(
    kind: Annotated[str, typer.Argument(help="conv or pool.")],
    input: Annotated[int, typer.Option("--input", help="Input height (= width).")],
    kernel: Annotated[int, typer.Option("--kernel", help="Kernel side.")],
    stride: Annotated[
        int | None,
        typer.Option(
            "--stride", help="Stride (default: 1 for conv, the kernel size for pool, as in PyTorch and Keras)."
        ),
    ] = None,
    padding: Annotated[
        str, typer.Option("--padding", metavar="N|same|valid", help="Pixels on each side, same or valid.")
    ] = "0",
    dilation: Annotated[int, typer.Option("--dilation", help="Dilation.")] = 1,
    in_channels: Annotated[int | None, typer.Option("--in", help="Input channels.")] = None,
    out_channels: Annotated[int | None, typer.Option("--out", help="Output channels (filters).")] = None,
) -> None:
    """Output size with the formula written out, parameters and multiply-adds of one layer."""
    from cnnlab.explain.calc import layer_calc

    c = layer_calc(kind, input, kernel, stride, padding, dilation, in_channels, out_channels)
    console.print(f"output size: {c.formula}")
    console.print(f"padding: {c.padding[0]} before, {c.padding[1]} after")
    if in_channels is not None and (out_channels is not None or kind == "pool"):
        chans = out_channels if out_channels is not None else in_channels
        console.print(f"output shape: {chans} x {c.output} x {c.output}")
    if c.parameters is not None:
        detail = (f" = {c.out_channels} x ({c.in_channels} x {kernel} x {kernel}) + {c.out_channels} bias"
                  if kind == "conv" else "")  # fmt: skip
        console.print(f"parameters: {c.parameters:,}{detail}")
        console.print(f"multiply-adds: {c.macs:,}")
    elif kind == "conv":
        console.print("give --in and --out for parameters and multiply-adds")
    console.print(f"receptive field grows by {c.receptive_growth} x the input's jump")
