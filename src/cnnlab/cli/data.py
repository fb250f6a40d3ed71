"""`cnnlab models`, `datasets` and `data inspect|preview`: what is here, and what a data set holds."""

# Tasks are imported inside the commands: that keeps `cnnlab --help` fast and free of torch.
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from cnnlab.choices import AUGMENT_PRESETS
from cnnlab.cli.common import SOME_FAILED, DataDirOpt, choice_metavar, console, one_of

app = typer.Typer()
data_app = typer.Typer(
    help="Look at a data set before training: counts, bad files, patients, samples.", no_args_is_help=True
)
SourceArg = Annotated[str, typer.Argument(help="A named source (`cnnlab datasets`) or folder:PATH.")]
PRESETS = AUGMENT_PRESETS


@app.command(epilog="Examples:  cnnlab models  |  cnnlab models --classes 1000")
def models(
    classes: Annotated[
        int, typer.Option(help="Output classes of the head the parameters are counted with (binary models: 2).")
    ] = 10,
) -> None:
    """List the registered models with their parameter counts at their default input."""
    from cnnlab.tasks.inspect import model_infos

    # The count depends on the head: say which one, so it can be checked against compare-models.
    table = Table(
        "name", "input", f"parameters ({classes} classes)", "description",
        caption=f"parameters with a {classes}-class head (binary models: 2) at each model's default input; "
        f"`cnnlab compare-models NAME --classes {classes} --input INPUT` gives the same count",
    )  # fmt: skip
    for m in model_infos(classes):
        count = f"{m.parameters:,}" + (f" ({m.classes} classes)" if m.classes != classes else "")
        table.add_row(m.name, "x".join(map(str, m.input_shape)), count, m.description)
    console.print(table)


@app.command(epilog="Example:  cnnlab datasets --data-dir ~/data/mnist")
def datasets(data_dir: DataDirOpt = None) -> None:
    """Which data sources are available offline here, where, and how to get the others."""
    from cnnlab.tasks.inspect import source_infos

    table = Table("source", "available", "where / how to get it", "description")
    for s in source_infos(data_dir):
        if s.folder is not None:
            table.add_row(s.name, "[green]yes[/green]", str(s.folder), s.description)
        else:
            how = f"place {s.expected} in {s.searched[0] if s.searched else '--data-dir'}"
            if s.downloadable:
                how += ", or train with --download"
            table.add_row(s.name, "[red]no[/red]", how, s.description)
    console.print(table)


@data_app.command(
    "inspect",
    epilog="Example:  cnnlab data inspect folder:../shared/data/chest-xray --out runs/inspect-xray"
    f"  |  Exit codes: 0 training would take this data, {SOME_FAILED} training would refuse it (the reason is "
    "printed; every bad file is still listed), 2 bad input.",
)
def data_inspect(
    source: SourceArg,
    data_dir: DataDirOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where to write samples.png and manifest.csv.")] = None,
    max_bad_fraction: Annotated[
        float,
        typer.Option(
            help=f"Training's limit on unreadable files: above this share, exit {SOME_FAILED} (still listing them)."
        ),
    ] = 0.01,
) -> None:
    """Classes x splits, image sizes and modes, bad files with reasons, duplicates, patients per split.

    It always reports, whatever the share of bad files: only training refuses data."""
    from cnnlab.tasks.inspect import inspect_data

    r = inspect_data(source, data_dir, out, max_bad_fraction)
    console.print(
        f"[bold]{r.source}[/bold] from {r.origin}: {len(r.classes)} classes, "
        f"{'grey (1 channel)' if r.channels == 1 else 'colour (3 channels)'}"
    )
    table = Table("class", "train", "val", "test", "total", title="images per class and split")
    for cls, row in r.counts.items():
        table.add_row(cls, *[f"{row[s]:,}" for s in ("train", "val", "test")], f"{sum(row.values()):,}")
    totals = {s: sum(row[s] for row in r.counts.values()) for s in ("train", "val", "test")}
    table.add_row("[bold]all[/bold]", *[f"{v:,}" for v in totals.values()], f"{sum(totals.values()):,}")
    console.print(table)
    console.print(
        "sizes: "
        + ", ".join(f"{k} ({v:,})" for k, v in r.sizes.most_common(5))
        + (f" and {len(r.sizes) - 5} more" if len(r.sizes) > 5 else "")
    )
    console.print("formats: " + ", ".join(f"{k} ({v:,})" for k, v in r.modes.most_common()))
    console.print(f"bad files: {len(r.bad)}" + (f" of {r.files:,}" if r.files else ""))
    for path, reason in r.bad:  # every one: this listing is what a refused training run points to
        console.print(f"  {path}: {reason}", markup=False)
    if r.ignored:
        console.print(
            f"ignored: {len(r.ignored)} ({', '.join(f'{p}: {why}' for p, why in r.ignored[:3])}"
            + (", ..." if len(r.ignored) > 3 else "")
            + ")"
        )
    console.print(f"duplicate groups: {r.duplicates}; across splits: {len(r.cross_split_duplicates)}")
    for group in r.cross_split_duplicates[:10]:
        console.print("  [yellow]same image in[/yellow] " + " = ".join(group))
    if r.patients is not None:
        console.print(
            "patients per split: "
            + ", ".join(f"{k} {v:,}" for k, v in r.patients.items())
            + f"; shared between splits: {r.shared_patients}"
        )
    for note in r.notes:
        console.print(f"note: {note}")
    written = [str(p) for p in (r.grid, r.manifest_csv) if p is not None]
    console.print(f"wrote {' and '.join(written)}")
    if r.refusal:
        console.print(Text.assemble(("training would refuse this data: ", "yellow"), r.refusal))
        if r.bad:
            console.print(
                "fix or remove the bad files listed above, or raise data.max_bad_fraction to train on the rest"
            )
        raise typer.Exit(SOME_FAILED)


@data_app.command("preview", epilog="Example:  cnnlab data preview flowers --augment standard")
def data_preview(
    source: SourceArg,
    augment: Annotated[str, typer.Option(metavar=choice_metavar(PRESETS), help=f"{one_of(PRESETS)}.")] = "standard",
    size: Annotated[int, typer.Option(help="Side in pixels for folder sources.")] = 160,
    per_class: Annotated[int, typer.Option(help="Augmented versions per class.")] = 6,
    data_dir: DataDirOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="PNG to write.")] = None,
) -> None:
    """A grid per class: a training image and augmented versions of it."""
    from cnnlab.tasks.inspect import preview

    console.print(f"wrote {preview(source, augment, size, per_class, data_dir, out)}")
