"""`cnnlab models`, `datasets` and `data inspect|preview`: what is here, and what a data set holds."""

# Tasks are imported inside the commands: that keeps `cnnlab --help` fast and free of torch.
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnnlab.choices import AUGMENT_PRESETS
from cnnlab.cli.common import DataDirOpt, console, one_of

app = typer.Typer()
data_app = typer.Typer(
    help="Look at a data set before training: counts, bad files, patients, samples.", no_args_is_help=True
)
SourceArg = Annotated[str, typer.Argument(help="A named source (`cnnlab datasets`) or folder:PATH.")]
PRESETS = AUGMENT_PRESETS


@app.command(epilog="Example:  cnnlab models")
def models() -> None:
    """List the registered models with their parameter counts at the default input."""
    from cnnlab.tasks.inspect import model_infos

    table = Table("name", "input", "parameters", "description")
    for m in model_infos():
        table.add_row(m.name, "x".join(map(str, m.input_shape)), f"{m.parameters:,}", m.description)
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
    "inspect", epilog="Example:  cnnlab data inspect folder:../shared/data/chest-xray --out runs/inspect-xray"
)
def data_inspect(
    source: SourceArg,
    data_dir: DataDirOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where to write samples.png and manifest.csv.")] = None,
    max_bad_fraction: Annotated[float, typer.Option(help="Fail above this share of unreadable files.")] = 0.01,
) -> None:
    """Classes x splits, image sizes and modes, bad files with reasons, duplicates, patients per split."""
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
    console.print(f"bad files: {len(r.bad)}")
    for path, reason in r.bad[:20]:
        console.print(f"  {path}: {reason}")
    if len(r.bad) > 20:
        console.print(f"  ... {len(r.bad) - 20} more in {r.manifest_csv}")
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
    console.print(f"wrote {r.grid}" + (f" and {r.manifest_csv}" if r.manifest_csv else ""))


@data_app.command("preview", epilog="Example:  cnnlab data preview flowers --augment standard")
def data_preview(
    source: SourceArg,
    augment: Annotated[str, typer.Option(help=f"{one_of(PRESETS)}.")] = "standard",
    size: Annotated[int, typer.Option(help="Side in pixels for folder sources.")] = 160,
    per_class: Annotated[int, typer.Option(help="Augmented versions per class.")] = 6,
    data_dir: DataDirOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="PNG to write.")] = None,
) -> None:
    """A grid per class: a training image and augmented versions of it."""
    from cnnlab.tasks.inspect import preview

    console.print(f"wrote {preview(source, augment, size, per_class, data_dir, out)}")
