"""`cnnlab gate`: may a candidate bundle replace the active one? Exit code 0 passed, 1 refused,
2 bad input, so a deployment script can stop on anything but 0."""

# Tasks are imported inside the commands: that keeps `cnnlab --help` fast and free of torch.
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cnnlab.cli.common import DeviceOpt, console, err

app = typer.Typer()

REFUSED = 1
"""The gate ran and said no: not bad input (2), which means it could not run."""


@app.command(
    epilog="Example:  cnnlab gate runs/lite0-xray-v2 --against runs/lite0-xray --data data/xray-gate "
    "--out runs/gate-v2.json  (the folder: labelled patients neither bundle trained on)"
)
def gate(
    candidate: Annotated[Path, typer.Argument(help="The candidate bundle directory.")],
    against: Annotated[Path, typer.Option("--against", help="The active bundle it would replace.")],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            metavar="FOLDER",
            help="A labelled class folder (FOLDER/CLASS/* or folder:FOLDER, optional metadata.csv; with patient_id "
            "whole patients are resampled). Every readable image is used, whatever its split.",
        ),
    ],
    margin_auc: Annotated[float, typer.Option(help="How much lower the candidate's AUC may be.")] = 0.02,
    margin_sensitivity: Annotated[
        float, typer.Option(help="How much lower its sensitivity (at its own operating point) may be.")
    ] = 0.05,
    margin_ece: Annotated[float, typer.Option(help="How much higher its expected calibration error may be.")] = 0.02,
    resamples: Annotated[int, typer.Option(help="Paired bootstrap resamples (fixed seed).")] = 1000,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the report as this JSON file.")] = None,
    device: DeviceOpt = None,
) -> None:
    """Gate a candidate model against the active one on the same labelled images.

    Both bundles score every image with their calibrated probabilities, as served. A paired bootstrap
    gives a 95% interval of each difference (candidate - active) in AUC, sensitivity and ECE; the gate
    passes only when every interval's bad end is within its margin (non-inferiority). Exit code 0
    passed, 1 refused, 2 bad input."""
    from cnnlab.evaluation.gate import Margins
    from cnnlab.tasks.gate import gate as run_gate

    margins = Margins(auc=margin_auc, sensitivity=margin_sensitivity, ece=margin_ece)
    report = run_gate(candidate, against, data, margins, resamples, out=out, console=err, device=device)
    result = report.result
    unit = f"{result.groups:,} patients" if result.groups is not None else "images"
    console.print(
        f"candidate {_who(report.candidate)} against active {_who(report.active)} on {report.images:,} images of "
        f"{escape(report.folder)}" + (f" ({report.unreadable} unreadable, left out)" if report.unreadable else "")
    )
    rules = (
        "macro recall by top class"
        if result.positive is None
        else f"candidate {_rule(report.candidate, result)}, active {_rule(report.active, result)}"
    )
    console.print(f"{result.resamples:,} paired resamples of {unit}; sensitivity: {rules}")
    table = Table("metric", "candidate", "active", "difference", f"{result.level:.0%} CI", "margin", "verdict")
    for row in result.metrics:
        sign = "-" if row.higher_is_better else "+"
        table.add_row(
            row.label, f"{row.candidate:.4f}", f"{row.active:.4f}", f"{row.difference:+.4f}",
            f"{row.ci_low:+.4f} to {row.ci_high:+.4f}", f"{sign}{row.margin:g}",
            "[green]within[/green]" if row.passed else "[red]beyond[/red]",
        )  # fmt: skip
    console.print(table)
    if report.out is not None:
        console.print(f"wrote {escape(str(report.out))}")
    if result.passed:
        console.print(
            "[bold green]PASSED:[/bold green] the candidate is no worse than the active model within every margin"
        )
        return
    console.print(f"[bold red]REFUSED:[/bold red] {escape('; '.join(result.reasons))}")
    raise typer.Exit(REFUSED)


def _who(bundle: dict[str, Any]) -> str:
    return f"{escape(bundle['name'])} ({bundle['weights_sha256'][:12]})"


def _rule(bundle: dict[str, Any], result: Any) -> str:
    point = bundle["operating_point"]
    if point:
        return f"P({'+'.join(result.positive)}) >= {float(point['value']):.4f}"
    return "by top class"
