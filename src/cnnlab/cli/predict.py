"""`cnnlab predict`: classify image files, folders and globs with a bundle."""

# Tasks are imported inside the commands: that keeps `cnnlab --help` fast and free of torch.
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cnnlab.choices import BACKENDS
from cnnlab.cli.common import EXIT_CODES, DeviceOpt, choice_metavar, console, err, exit_for, one_of
from cnnlab.errors import CnnlabError

app = typer.Typer()
FORMATS = ("table", "json", "csv")
"""How this command prints its results."""


@app.command(
    epilog="Examples:  cnnlab predict runs/lite0-flowers ../shared/data/flowers/test --backend onnx --format csv"
    f"  |  cnnlab predict runs/demo runs/demo/examples/digit-7.png --topk 3 --explain  |  {EXIT_CODES}"
)
def predict(
    run: Annotated[Path, typer.Argument(help="A run bundle directory.")],
    paths: Annotated[list[str], typer.Argument(help="Image files, folders or globs.")],
    backend: Annotated[
        str, typer.Option(metavar=choice_metavar(BACKENDS), help=f"{one_of(BACKENDS)} (after `cnnlab export`).")
    ] = "torch",
    topk: Annotated[int, typer.Option(help="Classes to show per image.")] = 1,
    format: Annotated[
        str, typer.Option("--format", metavar=choice_metavar(FORMATS), help=f"{one_of(FORMATS)}.")
    ] = "table",
    explain: Annotated[bool, typer.Option("--explain", help="Write Grad-CAM overlays.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for --explain overlays.")] = None,
    device: DeviceOpt = None,
) -> None:
    """Predict image files; unreadable files are reported one by one and the rest still run.

    With an operating point in the card (`cnnlab calibrate --positive`), every format shows each
    file's decision, P(positive) and the threshold that made it."""
    from cnnlab.tasks.predict import predict as run_prediction

    if format not in FORMATS:
        raise CnnlabError(f"--format must be {one_of(FORMATS)}, not '{format}'")
    result = run_prediction(run, paths, backend, explain=explain, out=out, console=err, device=device)
    k = max(1, min(topk, len(result.classes)))
    point = result.operating_point
    rows = [_row(r, k, point) for r in result.results]
    if format == "json":
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    elif format == "csv":
        writer = csv.writer(sys.stdout)
        # The decision columns are always there (empty without an operating point): one schema for scripts.
        writer.writerow(
            ["file", "label", "confidence", "top", "error", "decision", "p_positive", "positive", "threshold"]
        )
        positive = ";".join(point["positive"]) if point else ""
        threshold = f"{float(point['value']):.6f}" if point else ""
        for row in rows:
            top = ";".join(f"{c}:{p:.4f}" for c, p in row["top"])
            conf = "" if row["confidence"] is None else f"{row['confidence']:.6f}"
            score = "" if row["p_positive"] is None else f"{row['p_positive']:.6f}"
            writer.writerow([row["file"], row["label"], conf, top, row["error"], row["decision"] or "", score,
                             positive if row["decision"] else "", threshold if row["decision"] else ""])  # fmt: skip
    else:
        console.print(_table(rows, k, point))
    timing = result.timing
    failed = result.failed
    share = timing.model_seconds / timing.total_seconds if timing.total_seconds else 0.0
    err.print(
        f"{len(result.results) - failed} predicted, {failed} unreadable; {timing.total_seconds:.2f} s: model "
        f"{share:.0%}, decoding {timing.decode_seconds / max(timing.total_seconds, 1e-9):.0%} ({backend} backend)"
    )
    if result.overlay_dir is not None:
        err.print(f"wrote {result.overlays} Grad-CAM overlays to {result.overlay_dir}")
    exit_for(len(result.results) - failed, failed, "read")


def _table(rows: list[dict[str, Any]], k: int, point: dict[str, Any] | None) -> Table:
    decided = ["decision", "P(positive)"] if point else []
    caption = (
        f"decision: positive when P({', '.join(point['positive'])}) >= {float(point['value']):.4f} "
        "(the card's operating point, from `cnnlab calibrate --positive`)"
        if point
        else None
    )
    table = Table("file", "prediction", "confidence", *(["top"] if k > 1 else []), *decided, "error", caption=caption)
    for row in rows:
        conf = "" if row["confidence"] is None else f"{row['confidence']:.4f}"
        top = [", ".join(f"{c} {p:.3f}" for c, p in row["top"])] if k > 1 else []
        decision = (
            [row["decision"] or "", "" if row["p_positive"] is None else f"{row['p_positive']:.4f}"] if point else []
        )
        table.add_row(row["file"], row["label"], conf, *top, *decision,
                      f"[red]{row['error']}[/red]" if row["error"] else "")  # fmt: skip
    return table


def _row(r: Any, k: int, point: dict[str, Any] | None) -> dict[str, Any]:
    """One file's result as printed: its top-k classes and triage decision, or its error."""
    p = r.prediction
    top = sorted(p.probs.items(), key=lambda kv: -kv[1])[:k] if p else []
    return {"file": r.path, "label": p.label if p else "", "confidence": p.confidence if p else None, "top": top,
            "error": r.error, "decision": p.decision if p else None, "p_positive": r.positive_score,
            "threshold": point if p and point else None}  # fmt: skip
