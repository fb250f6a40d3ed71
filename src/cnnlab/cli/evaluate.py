"""`cnnlab evaluate`, `calibrate`, `compare-models` and `compare`: how good a bundle is, and how
networks and runs compare."""

# Tasks are imported inside the commands: that keeps `cnnlab --help` fast and free of torch.
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnnlab.choices import CALIBRATION_METHODS, SPLITS
from cnnlab.cli.common import DataDirOpt, DeviceOpt, choice_metavar, console, one_of

app = typer.Typer()


@app.command(
    epilog="Examples:  cnnlab evaluate runs/lite0-xray  |  cnnlab evaluate runs/demo --split val --bootstrap 0  |  "
    "cnnlab evaluate runs/lite0-xray --data-dir ~/xrays-other-hospital"
)
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run bundle directory.")],
    split: Annotated[
        str | None,
        typer.Option(
            metavar=choice_metavar((*SPLITS, "all")),
            help=f"{one_of(SPLITS)} (default: test); all: every image of a --data-dir folder (its default "
            "when the folder has no train/val/test).",
        ),
    ] = None,
    data_dir: Annotated[
        str | None,
        typer.Option(
            "--data-dir",
            help="Score on this class folder (FOLDER/CLASS/*, optional metadata.csv with patient_id and source) "
            "instead of the bundle's data: its classes must be among the model's. The bundle's own data moved "
            "elsewhere is recognised and split as in training.",
        ),
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals (0: none).")] = 1000,
    out: Annotated[
        Path | None, typer.Option("--out", help="Report folder (default: RUN/eval; external data: RUN/eval-FOLDER).")
    ] = None,
    device: DeviceOpt = None,
) -> None:
    """Clinical metrics with 95% intervals, calibration, the operating point and a self-contained report.

    Writes metrics.json, report.md and report.html (figures embedded, opens offline) with the
    confusion matrices, per-class sensitivity/specificity/PPV/NPV/F1, ROC and PR curves, the
    reliability diagram and the most confidently wrong images."""
    from cnnlab.evaluation.report import fmt, with_interval
    from cnnlab.tasks.evaluate import evaluate as run_evaluation

    result = run_evaluation(run, split=split, data_dir=data_dir, out=out, resamples=bootstrap, device=device)
    m, split = result.metrics, result.split
    ci = m["intervals"] or {}
    console.print(
        f"[bold]{split} accuracy {with_interval(m['accuracy'], ci.get('accuracy'))}[/bold]  "
        f"({m['images']:,} images, cross-entropy of the raw logits {result.loss:.4f}, "
        f"{result.seconds:.2f} s)"
    )
    # Two losses on adjacent lines: the first scores the raw logits (the plain cross-entropy that
    # validation also reports, whatever the training objective); the second scores the probabilities
    # a user gets, after calibration (equal up to clipping without one).
    served = "calibrated" if "calibrated" in m["calibration"] else "uncalibrated"
    console.print(
        f"balanced accuracy {fmt(m['balanced_accuracy'])}; macro ROC AUC "
        f"{with_interval(m['averages']['macro']['roc_auc'], ci.get('macro_roc_auc'))}; macro F1 "
        f"{fmt(m['averages']['macro']['f1'])}; log loss (of the probabilities as served, {served}) "
        f"{fmt(m['log_loss'])}; Brier {fmt(m['brier'])}"
        + (f"  (95% CI: {ci['resamples']} resamples by {ci['unit']})" if ci else "")
    )
    if result.external:
        console.print(
            f"[yellow]external data: not the data this model was trained on ({m['external_data']['folder']})[/yellow]"
        )
    elif not result.data_matches:
        console.print("[yellow]warning: the data differs from what the model card recorded (sha256)[/yellow]")
    per_ci = ci.get("per_class") or {}
    table = Table("class", "support", "sensitivity", "specificity", "PPV", "NPV", "F1", "ROC AUC", title="per class")
    for cls in result.classes:
        row, c = m["per_class"][cls], per_ci.get(cls, {})
        table.add_row(
            cls, f"{row['support']:,}", with_interval(row["recall"], c.get("recall")),
            with_interval(row["specificity"], c.get("specificity")), fmt(row["precision"]), fmt(row["npv"]),
            fmt(row["f1"]), with_interval(row["roc_auc"], c.get("roc_auc")),
        )  # fmt: skip
    console.print(table)
    if len(result.classes) <= 12:
        cm = Table("true \\ predicted", *[c[:8] for c in result.classes], title="confusion matrix")
        for cls, row in zip(result.classes, result.confusion, strict=True):
            cm.add_row(cls, *[str(v) for v in row])
        console.print(cm)
    cal = m["calibration"]
    if "calibrated" in cal:
        console.print(f"calibration: ECE {cal['raw']['ece']:.2%} raw -> {cal['calibrated']['ece']:.2%} as served")
    else:
        console.print(f"calibration: ECE {cal['raw']['ece']:.2%} (not calibrated; see `cnnlab calibrate`)")
    op = m["operating_point"]
    if op:
        rates = op[split]
        console.print(
            f"operating point: {', '.join(op['point']['positive'])} when P >= {op['point']['value']:.4f}: "
            + ", ".join(f"{k} {fmt(rates[k])}" for k in ("sensitivity", "specificity", "ppv", "npv"))
        )
    if m.get("by_source"):
        table = Table("source", "images", "accuracy", "within-source macro ROC AUC", title="by source")
        for name, row in m["by_source"]["sources"].items():
            table.add_row(name, f"{row['images']:,}", fmt(row["accuracy"]), fmt(row["within_source_auc"]))
        console.print(table)
    console.print(f"wrote {result.out_dir / 'report.html'}, {result.out_dir / 'report.md'} and metrics.json")


@app.command(
    epilog="Examples:  cnnlab calibrate runs/lite0-xray  |  cnnlab calibrate runs/lite0-xray --positive 'not normal' "
    "--target-sensitivity 0.95  |  cnnlab calibrate runs/demo --method vector"
)
def calibrate(
    run: Annotated[Path, typer.Argument(help="A run bundle directory.")],
    method: Annotated[
        str,
        typer.Option(
            metavar=choice_metavar((*CALIBRATION_METHODS, "none", "auto")),
            help="auto: whichever of none, temperature and vector (Platt-style) scaling has the lowest held-out "
            "log loss under 5-fold cross-fitting on the validation split (by patient when known). "
            f"{one_of(CALIBRATION_METHODS)}: that one, refused if it would make held-out log loss worse. "
            "none: keep the card's calibration and choose an operating point only.",
        ),
    ] = "auto",
    positive: Annotated[
        str | None, typer.Option(help="Operating point for this class: 'pneumonia', 'a,b' or 'not normal'.")
    ] = None,
    target_sensitivity: Annotated[
        float | None, typer.Option(help="Highest threshold reaching this sensitivity (default: Youden's J).")
    ] = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Calibrate probabilities on the validation split and store them (and an operating point) in the card.

    Candidates are compared by cross-fitting: each is fitted on all parts of the validation split but
    one and scored on that one. Every later prediction (predict, export, serve) applies what this writes."""
    from cnnlab.evaluation.report import fmt, with_interval
    from cnnlab.tasks.calibrate import calibrate as run_calibration

    result = run_calibration(run, method, positive, target_sensitivity, data_dir, device=device)
    fit_name = "validation" if result.fitted_on == "val" else result.fitted_on
    if result.choice is not None:
        cal, choice = result.calibration, result.choice
        what = {
            "none": "kept the network's own probabilities (no calibration)",
            "temperature": f"fitted temperature T = {cal.temperature or 1.0:.4f}",
            "vector": "fitted vector scaling (per-class scale and bias)",
        }[choice.method]
        console.print(f"[bold]calibration: {what}[/bold] on the {fit_name} images; {choice.reason}")
        if choice.folds:
            nll = ", ".join(f"{name} {fmt(value)}" for name, value in choice.heldout_nll.items())
            console.print(f"held-out log loss ({choice.folds} parts by {choice.unit}): {nll}")

        def ece(s: dict) -> str:
            low, high = s.get("ece_ci") or (None, None)
            return f"{s['ece']:.2%}" + (f" [{low:.2%}, {high:.2%}]" if low is not None else "")

        table = Table("split", "", "ECE [95% CI]", "MCE", "NLL", "Brier", "accuracy", title="calibration")
        for split, scores in result.scores.items():
            for when in ("before", "after"):
                s = scores[when]
                table.add_row(split, when, ece(s), f"{s['mce']:.2%}", f"{s['nll']:.4f}",
                              f"{s['brier']:.4f}", f"{s['accuracy']:.4f}")  # fmt: skip
        console.print(table)
    point = result.operating_point
    if point is not None:
        console.print(
            f"operating point: positive = {', '.join(point.positive)} when P >= {point.value:.4f} ({point.method}"
            + (f" {point.target_sensitivity}" if point.target_sensitivity else "")
            + f", chosen on the {fit_name} images)"
        )
        table = Table("", f"{fit_name} [95% CI]", "test [95% CI]", title="at the operating point")
        for key in ("sensitivity", "specificity", "ppv", "npv"):
            test = with_interval(point.test[key], point.test_intervals[key]) if point.test else "n/a"
            table.add_row(key, with_interval(point.val[key], (point.fit_intervals or {}).get(key)), test)
        console.print(table)
    console.print(f"updated {run / 'model.json'}; wrote {result.figure}")


@app.command("compare-models", epilog="Example:  cnnlab compare-models lenet5 alexnet vgg16 --input 3x224x224")
def compare_models(
    names: Annotated[list[str], typer.Argument(help="Model names (`cnnlab models`, or timm:NAME).")],
    input: Annotated[str, typer.Option("--input", help="C x H x W of one input image.")] = "3x224x224",
    classes: Annotated[
        int | None, typer.Option(help="Output classes (default: 1000 for ImageNet models, else 10).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="PNG chart to write.")] = None,
) -> None:
    """Parameters, multiply-adds, depth and largest kernel of architectures, side by side."""
    from cnnlab.tasks.compare import compare_architectures

    result = compare_architectures(names, input, classes, out)
    # The parameter count depends on the head: every row says how many classes it was built for.
    heads = f"{classes} classes" if classes else "1000 classes for ImageNet models, else 10"
    table = Table(
        "model", "classes", "parameters", "multiply-adds", "depth", "largest kernel", title=f"input {input}, {heads}",
        caption="`cnnlab models --classes N` counts every model at its default input the same way",
    )  # fmt: skip
    for r in result.rows:
        table.add_row(
            r.name, f"{r.classes:,}", f"{r.stats.parameters:,}", f"{r.stats.macs:,}", str(r.stats.depth),
            r.stats.largest_kernel,
        )  # fmt: skip
    console.print(table)
    console.print(f"wrote {result.chart}")


@app.command(epilog="Example:  cnnlab compare runs/lite0-flowers runs/lite0-flowers-scratch")
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run bundle directories.")],
    out: Annotated[Path | None, typer.Option("--out", help="PNG chart to write.")] = None,
) -> None:
    """Accuracy and training time of runs beside their size and cost."""
    from cnnlab.tasks.compare import compare_bundles

    result = compare_bundles(runs, out)
    table = Table("run", "model", "weights", "test acc", "train time", "epochs", "parameters", "multiply-adds")
    for r in result.rows:
        table.add_row(
            r.run or "",
            r.name,
            r.weights or "none",
            f"{r.test_accuracy:.4f}",
            f"{r.train_seconds:.1f} s",
            str(r.epochs),
            f"{r.stats.parameters:,}",
            f"{r.stats.macs:,}",
        )
    console.print(table)
    console.print(f"wrote {result.chart}")
