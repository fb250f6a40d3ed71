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
from cnnlab.cli.common import console, err, one_of
from cnnlab.errors import CnnlabError

app = typer.Typer()
FORMATS = ("table", "json", "csv")
"""How this command prints its results."""


@app.command(
    epilog="Examples:  cnnlab predict runs/lite0-flowers ../shared/data/flowers/test --backend onnx --format csv"
    "  |  cnnlab predict runs/demo digit.png --topk 3 --explain"
)
def predict(
    run: Annotated[Path, typer.Argument(help="A run bundle directory.")],
    paths: Annotated[list[str], typer.Argument(help="Image files, folders or globs.")],
    backend: Annotated[str, typer.Option(help=f"{one_of(BACKENDS)} (after `cnnlab export`).")] = "torch",
    topk: Annotated[int, typer.Option(help="Classes to show per image.")] = 1,
    format: Annotated[str, typer.Option("--format", help=f"{one_of(FORMATS)}.")] = "table",
    explain: Annotated[bool, typer.Option("--explain", help="Write Grad-CAM overlays.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for --explain overlays.")] = None,
) -> None:
    """Predict image files; unreadable files are reported one by one and the rest still run."""
    from cnnlab.tasks.predict import predict as run_prediction

    if format not in FORMATS:
        raise CnnlabError(f"--format must be {one_of(FORMATS)}, not '{format}'")
    result = run_prediction(run, paths, backend, explain=explain, out=out, console=err)
    k = max(1, min(topk, len(result.classes)))
    rows = [_row(r, k) for r in result.results]
    if format == "json":
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    elif format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["file", "label", "confidence", "top", "error"])
        for row in rows:
            top = ";".join(f"{c}:{p:.4f}" for c, p in row["top"])
            conf = "" if row["confidence"] is None else f"{row['confidence']:.6f}"
            writer.writerow([row["file"], row["label"], conf, top, row["error"]])
    else:
        table = Table("file", "prediction", "confidence", *(["top"] if k > 1 else []), "error")
        for row in rows:
            conf = "" if row["confidence"] is None else f"{row['confidence']:.4f}"
            top = [", ".join(f"{c} {p:.3f}" for c, p in row["top"])] if k > 1 else []
            table.add_row(row["file"], row["label"], conf, *top, f"[red]{row['error']}[/red]" if row["error"] else "")
        console.print(table)
    timing = result.timing
    failed = sum(1 for r in result.results if r.error)
    share = timing.model_seconds / timing.total_seconds if timing.total_seconds else 0.0
    err.print(
        f"{len(result.results) - failed} predicted, {failed} unreadable; {timing.total_seconds:.2f} s: model "
        f"{share:.0%}, decoding {timing.decode_seconds / max(timing.total_seconds, 1e-9):.0%} ({backend} backend)"
    )
    if result.overlay_dir is not None:
        err.print(f"wrote {result.overlays} Grad-CAM overlays to {result.overlay_dir}")


def _row(r: Any, k: int) -> dict[str, Any]:
    """One file's result as printed: its top-k classes, or its error."""
    p = r.prediction
    top = sorted(p.probs.items(), key=lambda kv: -kv[1])[:k] if p else []
    return {"file": r.path, "label": p.label if p else "", "confidence": p.confidence if p else None, "top": top,
            "error": r.error, "decision": p.decision if p else None}  # fmt: skip
