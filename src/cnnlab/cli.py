"""The `cnnlab` command: parse, build a config, call the library. No logic of its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cnnlab import __version__
from cnnlab.errors import CnnlabError
from cnnlab.progress import progress_bar

app = typer.Typer(
    name="cnnlab",
    help="A workbench for convolutional neural networks: train, evaluate and compare image classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# Epoch lines stay one line in logs; tables get room when output is not a terminal (80 columns).
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False)

OutOpt = Annotated[Path | None, typer.Option("--out", help="Output run directory (default: runs/<name>).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing bundle in --out.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any config key, e.g. --set optim.lr=3e-4 (repeatable)."),
]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help="Folder holding the data set's files.")]


@app.command(epilog="Example:  cnnlab demo --out runs/my-first-run")
def demo(
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the recipe's 15).")] = None,
) -> None:
    """Train LeNet-5 on 5,000 real MNIST digits, offline, and show what cnnlab writes."""
    from cnnlab.config import load_config
    from cnnlab.workflow import train as run_training

    values = {"train.epochs": epochs} if epochs is not None else {}
    cfg = load_config("lenet5-mnist-sample", values=values)
    summary = run_training(cfg, out or Path("runs") / "demo", overwrite=overwrite, console=console)
    _print_summary(summary)


@app.command(
    epilog=(
        "Examples:  cnnlab train lenet5-mnist  |  cnnlab train --model simple_cnn --data mnist-sample --epochs 3"
        "  |  cnnlab train lenet5-fashion-mnist --set optim.lr=2e-3 --set train.precision=bf16"
        "  |  cnnlab train lenet5-mnist --out runs/x --resume  |  cnnlab train lenet5-fashion-mnist --nproc 2"
    )
)
def train(
    recipe: Annotated[str | None, typer.Argument(help="A packaged recipe name or a YAML file.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name (`cnnlab models`).")] = None,
    data: Annotated[str | None, typer.Option(help="Data source (`cnnlab datasets`).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    data_dir: DataDirOpt = None,
    download: Annotated[bool, typer.Option("--download", help="Download the data set if it is missing.")] = False,
    augment: Annotated[str | None, typer.Option(help="Augmentation preset (`cnnlab data preview`).")] = None,
    class_weights: Annotated[
        str | None, typer.Option("--class-weights", help="auto: weight classes by inverse frequency.")
    ] = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the unfinished run in --out.")] = False,
    nproc: Annotated[
        int, typer.Option(help="Data-parallel processes on this machine (torchrun, DistributedDataParallel).")
    ] = 1,
) -> None:
    """Train a model from a recipe and/or options; writes a run bundle.

    With --nproc N the run is N processes sharing each global batch (--batch-size stays the
    global batch). Across machines, start `python -m cnnlab.cli train ...` under torchrun
    (see the README); a checkpoint resumes with any number of processes."""
    from cnnlab.config import load_config
    from cnnlab.workflow import train as run_training

    shortcuts: dict[str, Any] = {
        "model.name": model,
        "data.source": data,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "optim.lr": lr,
        "data.data_dir": data_dir,
        "data.augment": augment,
        "optim.class_weights": class_weights,
    }
    values = {k: v for k, v in shortcuts.items() if v is not None}
    if download:
        values["data.download"] = True
    if recipe is None and "name" not in values:
        values["name"] = f"{model or 'lenet5'}-{_slug(data or 'mnist-sample')}"
    cfg = load_config(recipe, overrides=set_ or [], values=values)
    if nproc != 1:
        _launch_processes(cfg, nproc, out or Path("runs") / cfg.name, overwrite, resume)
        return
    try:
        summary = run_training(cfg, out, overwrite=overwrite, resume=resume, console=console)
    except KeyboardInterrupt:
        # Typer turns Ctrl-C into a bare exit; the checkpoints of finished epochs are kept.
        err.print("interrupted; continue the run with the same command and --resume")
        raise typer.Exit(130) from None
    if summary is not None:  # the other ranks of a data-parallel job stay quiet
        _print_summary(summary)


def _launch_processes(cfg: Any, nproc: int, out: Path, overwrite: bool, resume: bool) -> None:
    """Run this training as `nproc` processes through torchrun, from the resolved config."""
    import tempfile

    from cnnlab import bundle
    from cnnlab.engine.distributed import launch

    bundle.check_run_dir(out, overwrite=overwrite, resume=resume)  # fail here, before any process starts
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / f"{cfg.name}.yaml"
        recipe.write_text(cfg.to_yaml())
        args = ["train", str(recipe), "--out", str(out), *(["--overwrite"] if overwrite else []),
                *(["--resume"] if resume else [])]  # fmt: skip
        code = launch(nproc, args)
    if code != 0:
        err.print(f"[red]error:[/red] a training process failed (exit {code}); continue with --resume")
        raise typer.Exit(1)


@app.command(
    epilog="Examples:  cnnlab evaluate runs/lite0-xray  |  cnnlab evaluate runs/demo --split val --bootstrap 0"
)
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run bundle directory.")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    data_dir: DataDirOpt = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals (0: none).")] = 1000,
    out: Annotated[Path | None, typer.Option("--out", help="Report folder (default: RUN/eval).")] = None,
) -> None:
    """Clinical metrics with 95% intervals, calibration, the operating point and a self-contained report.

    Writes metrics.json, report.md and report.html (figures embedded, opens offline) with the
    confusion matrices, per-class sensitivity/specificity/PPV/NPV/F1, ROC and PR curves, the
    reliability diagram and the most confidently wrong images."""
    from cnnlab.evaluation.report import fmt, with_interval
    from cnnlab.workflow import evaluate as run_evaluation

    if bootstrap < 0:
        raise CnnlabError(f"--bootstrap must be 0 or more, not {bootstrap}")
    result = run_evaluation(run, split=split, data_dir=data_dir, out=out, resamples=bootstrap)
    m = result.metrics
    ci = m["intervals"] or {}
    console.print(
        f"[bold]{split} accuracy {with_interval(m['accuracy'], ci.get('accuracy'))}[/bold]  "
        f"({m['images']:,} images, loss {result.loss:.4f}, {result.seconds:.2f} s)"
    )
    console.print(
        f"balanced accuracy {fmt(m['balanced_accuracy'])}; macro ROC AUC "
        f"{with_interval(m['averages']['macro']['roc_auc'], ci.get('macro_roc_auc'))}; macro F1 "
        f"{fmt(m['averages']['macro']['f1'])}; log loss {fmt(m['log_loss'])}; Brier {fmt(m['brier'])}"
        + (f"  (95% CI: {ci['resamples']} resamples by {ci['unit']})" if ci else "")
    )
    if not result.data_matches:
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
    console.print(f"wrote {result.out_dir / 'report.html'}, {result.out_dir / 'report.md'} and metrics.json")


@app.command(
    epilog="Examples:  cnnlab calibrate runs/lite0-xray  |  cnnlab calibrate runs/lite0-xray --positive 'not normal' "
    "--target-sensitivity 0.95  |  cnnlab calibrate runs/demo --method vector"
)
def calibrate(
    run: Annotated[Path, typer.Argument(help="A run bundle directory.")],
    method: Annotated[str, typer.Option(help="temperature, vector (Platt-style) or none.")] = "temperature",
    positive: Annotated[
        str | None, typer.Option(help="Operating point for this class: 'pneumonia', 'a,b' or 'not normal'.")
    ] = None,
    target_sensitivity: Annotated[
        float | None, typer.Option(help="Highest threshold reaching this sensitivity (default: Youden's J).")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Calibrate probabilities on the validation split and store them (and an operating point) in the card.

    Every later prediction (predict, export, serve) applies what this writes."""
    from cnnlab.evaluation.calibration import METHODS
    from cnnlab.evaluation.report import fmt, with_interval
    from cnnlab.workflow import calibrate as run_calibration

    if method not in (*METHODS, "none"):
        raise CnnlabError(f"--method must be one of {', '.join((*METHODS, 'none'))}, not '{method}'")
    result = run_calibration(run, method, positive, target_sensitivity, data_dir)
    if result.calibration is not None:
        cal = result.calibration
        what = (
            f"temperature T = {cal.temperature:.4f}" if cal.temperature else "vector scaling (per-class scale and bias)"
        )
        console.print(f"fitted {what} on the validation split")
        table = Table("split", "", "ECE", "MCE", "NLL", "Brier", "accuracy", title="calibration")
        for split, scores in result.scores.items():
            for when in ("before", "after"):
                s = scores[when]
                table.add_row(split, when, f"{s['ece']:.2%}", f"{s['mce']:.2%}", f"{s['nll']:.4f}",
                              f"{s['brier']:.4f}", f"{s['accuracy']:.4f}")  # fmt: skip
        console.print(table)
    point = result.operating_point
    if point is not None:
        console.print(
            f"operating point: positive = {', '.join(point.positive)} when P >= {point.value:.4f} ({point.method}"
            + (f" {point.target_sensitivity}" if point.target_sensitivity else "")
            + ")"
        )
        table = Table("", "validation", "test [95% CI]", title="at the operating point")
        for key in ("sensitivity", "specificity", "ppv", "npv"):
            test = with_interval(point.test[key], point.test_intervals[key]) if point.test else "n/a"
            table.add_row(key, fmt(point.val[key]), test)
        console.print(table)
    console.print(f"updated {run / 'model.json'}; wrote {result.figure}")


@app.command(
    epilog="Examples:  cnnlab crossval lite0-xray --folds 5 --group-by patient_id  |  "
    "cnnlab crossval lenet5-mnist-sample --folds 3 --set train.epochs=2"
)
def crossval(
    recipe: Annotated[str, typer.Argument(help="A packaged recipe name or a YAML file.")],
    folds: Annotated[int, typer.Option(help="Number of folds.")] = 5,
    group_by: Annotated[
        str | None, typer.Option(help="Require folds by this patient column (they are by patient whenever ids exist).")
    ] = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Stratified (patient-grouped) K-fold cross-validation: one bundle per fold, every metric per fold, mean +/- std.

    Out-of-fold predictions go to oof_predictions.csv. Rerunning continues an interrupted run."""
    from cnnlab.config import load_config
    from cnnlab.evaluation.report import fmt
    from cnnlab.workflow import CROSSVAL_METRICS
    from cnnlab.workflow import crossval as run_crossval

    cfg = load_config(recipe, overrides=set_ or [])
    result = run_crossval(cfg, folds, out, group_by=group_by, overwrite=overwrite, console=console)
    keys = CROSSVAL_METRICS  # per-class figures are in crossval.csv
    table = Table("fold", "images", *(k.replace("_", " ") for k in keys), title=f"{folds}-fold, by {result.unit}")
    for row in result.rows:
        table.add_row(str(row["fold"]), str(row["images"]), *(fmt(row[k]) for k in keys))
    table.add_row("mean +/- std", "", *(f"{fmt(result.mean[k])} +/- {fmt(result.std[k], 3)}" for k in keys))
    console.print(table)
    console.print(f"wrote {result.out_dir / 'crossval.csv'}, crossval.json and oof_predictions.csv")


@app.command("compare-models", epilog="Example:  cnnlab compare-models lenet5 alexnet vgg16 --input 3x224x224")
def compare_models_cmd(
    names: Annotated[list[str], typer.Argument(help="Model names (`cnnlab models`, or timm:NAME).")],
    input: Annotated[str, typer.Option("--input", help="C x H x W of one input image.")] = "3x224x224",
    classes: Annotated[
        int | None, typer.Option(help="Output classes (default: 1000 for ImageNet models, else 10).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="PNG chart to write.")] = None,
) -> None:
    """Parameters, multiply-adds, depth and largest kernel of architectures, side by side."""
    from cnnlab.evaluation.compare import compare_models, parse_input, plot_comparison

    shape = parse_input(input)
    rows = compare_models(names, shape, classes)
    table = Table("model", "parameters", "multiply-adds", "depth", "largest kernel", title=f"input {input}")
    for r in rows:
        table.add_row(
            r.name, f"{r.stats.parameters:,}", f"{r.stats.macs:,}", str(r.stats.depth), r.stats.largest_kernel
        )
    console.print(table)
    path = out or Path("runs") / "compare-models.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_comparison(rows, path, f"architectures at input {input}")
    console.print(f"wrote {path}")


@app.command(epilog="Example:  cnnlab compare runs/lite0-flowers runs/lite0-flowers-scratch")
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run bundle directories.")],
    out: Annotated[Path | None, typer.Option("--out", help="PNG chart to write.")] = None,
) -> None:
    """Accuracy and training time of runs beside their size and cost."""
    from cnnlab.evaluation.compare import compare_runs, plot_comparison

    rows = compare_runs(runs)
    table = Table("run", "model", "weights", "test acc", "train time", "epochs", "parameters", "multiply-adds")
    for r in rows:
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
    path = out or Path("runs") / "compare.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_comparison(rows, path, "runs compared")
    console.print(f"wrote {path}")


@app.command(epilog="Example:  cnnlab export runs/lite0-xray --format onnx --embed-preprocessing")
def export(
    run: Annotated[Path, typer.Argument(help="A run bundle directory.")],
    format: Annotated[str, typer.Option("--format", help="onnx, torchscript or exported-program.")] = "onnx",
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch/--static-batch", help="Any batch size.")] = True,
    embed_preprocessing: Annotated[
        bool, typer.Option("--embed-preprocessing", help="Bake normalisation in: the model takes uint8 pixels.")
    ] = False,
    samples: Annotated[int, typer.Option(help="Test images for the parity check.")] = 256,
    data_dir: DataDirOpt = None,
) -> None:
    """Export for fast inference, with the preprocessing contract and a parity check on test images."""
    from cnnlab.export.onnx import FILENAMES, export_model

    if format not in FILENAMES:
        raise CnnlabError(f"--format must be one of {', '.join(FILENAMES)}, not '{format}'")
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


@app.command(
    epilog="Examples:  cnnlab predict runs/lite0-flowers ../shared/data/flowers/test --backend onnx --format csv"
    "  |  cnnlab predict runs/demo digit.png --topk 3 --explain"
)
def predict(
    run: Annotated[Path, typer.Argument(help="A run bundle directory.")],
    paths: Annotated[list[str], typer.Argument(help="Image files, folders or globs.")],
    backend: Annotated[str, typer.Option(help="torch, compile or onnx (after `cnnlab export`).")] = "torch",
    topk: Annotated[int, typer.Option(help="Classes to show per image.")] = 1,
    format: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    explain: Annotated[bool, typer.Option("--explain", help="Write Grad-CAM overlays.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for --explain overlays.")] = None,
) -> None:
    """Predict image files; unreadable files are reported one by one and the rest still run."""
    import csv
    import json

    from cnnlab.export.predictor import expand_inputs, load, predict_files

    if format not in ("table", "json", "csv"):
        raise CnnlabError(f"--format must be table, json or csv, not '{format}'")
    clf = load(run, backend)
    files = expand_inputs(paths)
    if not files:
        raise CnnlabError("no image files found in " + ", ".join(paths))
    with progress_bar(err, "predicting", len(files)) as advance:
        results, timing = predict_files(clf, files, advance=advance)
    k = max(1, min(topk, len(clf.classes)))
    rows = []
    for r in results:
        top = sorted(r.prediction.probs.items(), key=lambda kv: -kv[1])[:k] if r.prediction else []
        rows.append({"file": r.path, "label": r.prediction.label if r.prediction else "", "confidence":
                     r.prediction.confidence if r.prediction else None, "top": top, "error": r.error,
                     "decision": r.prediction.decision if r.prediction else None})  # fmt: skip
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
    failed = sum(1 for r in results if r.error)
    share = timing.model_seconds / timing.total_seconds if timing.total_seconds else 0.0
    err.print(
        f"{len(results) - failed} predicted, {failed} unreadable; {timing.total_seconds:.2f} s: model {share:.0%}, "
        f"decoding {timing.decode_seconds / max(timing.total_seconds, 1e-9):.0%} ({backend} backend)"
    )
    if explain:
        _write_overlays(clf, [r for r in results if r.prediction], out or run / "explain" / "predict")


def _write_overlays(clf: Any, results: list[Any], folder: Path) -> None:
    from PIL import Image

    from cnnlab.data.decode import decode_image
    from cnnlab.explain.cam import overlay

    folder.mkdir(parents=True, exist_ok=True)
    for r in results:
        image = decode_image(r.path, 3)
        heat = clf.explain(r.path, class_index=r.prediction.index)
        target = folder / f"{Path(r.path).stem}.{r.prediction.label}.png"
        Image.fromarray(overlay(image, heat)).save(target)
    err.print(f"wrote {len(results)} Grad-CAM overlays to {folder}")


@app.command(epilog="Example:  cnnlab models")
def models() -> None:
    """List the registered models with their parameter counts at the default input."""
    from cnnlab.models import create_model, get_spec, list_models

    table = Table("name", "input", "parameters", "description")
    for name in list_models():
        spec = get_spec(name)
        params = sum(p.numel() for p in create_model(name).parameters())
        table.add_row(name, f"{spec.in_chans}x{spec.input_size}x{spec.input_size}", f"{params:,}", spec.description)
    console.print(table)


@app.command(epilog="Example:  cnnlab datasets --data-dir ~/data/mnist")
def datasets(data_dir: DataDirOpt = None) -> None:
    """Which data sources are available offline here, where, and how to get the others."""
    from cnnlab.data.sources import get_source, locate, source_names

    table = Table("source", "available", "where / how to get it", "description")
    for name in source_names():
        source = get_source(name)
        folder, searched = locate(name, data_dir)
        if folder is not None:
            table.add_row(name, "[green]yes[/green]", str(folder), source.description)
        else:
            how = f"place {source.expected} in {searched[0] if searched else '--data-dir'}"
            if source.download:
                how += ", or train with --download"
            table.add_row(name, "[red]no[/red]", how, source.description)
    console.print(table)


data_app = typer.Typer(
    help="Look at a data set before training: counts, bad files, patients, samples.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
SourceArg = Annotated[str, typer.Argument(help="A named source (`cnnlab datasets`) or folder:PATH.")]


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
    from cnnlab.config import DataConfig
    from cnnlab.data.inspect import inspect_source

    cfg = DataConfig(source=source, data_dir=data_dir, max_bad_fraction=max_bad_fraction)
    out = out or Path("runs") / f"inspect-{_slug(source)}"
    r = inspect_source(cfg, out)
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
    augment: Annotated[str, typer.Option(help="none, light, standard, strong or xray.")] = "standard",
    size: Annotated[int, typer.Option(help="Side in pixels for folder sources.")] = 160,
    per_class: Annotated[int, typer.Option(help="Augmented versions per class.")] = 6,
    data_dir: DataDirOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="PNG to write.")] = None,
) -> None:
    """A grid per class: a training image and augmented versions of it."""
    from cnnlab.config import DataConfig
    from cnnlab.data.augment import PRESETS
    from cnnlab.data.inspect import preview_augmentation

    if augment not in PRESETS:
        raise CnnlabError(f"unknown augmentation preset '{augment}'; choose one of {', '.join(PRESETS)}")
    path = out or Path("runs") / f"preview-{_slug(source)}-{augment}.png"
    preview_augmentation(DataConfig(source=source, data_dir=data_dir), augment, path, size, per_class)
    console.print(f"wrote {path}")


@app.command(
    epilog="Examples:  cnnlab filters runs/demo  |  cnnlab filters alexnet_small"
    "  |  cnnlab filters runs/demo --layer features.c3"
)
def filters(
    target: Annotated[str, typer.Argument(help="A run bundle, or a model name (random initialisation).")],
    layer: Annotated[str | None, typer.Option("--layer", help="Conv layer (default: the first).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="PNG to write.")] = None,
) -> None:
    """A grid of the learned kernels of a conv layer, each filter normalised on its own."""
    from cnnlab.explain.filters import conv_layer, plot_filters
    from cnnlab.explain.target import load_target

    t = load_target(target)
    name = conv_layer(t.model, layer)[0]
    path = out or _explain_dir(t) / f"filters-{_slug(target)}-{name}.png"
    grid = plot_filters(t.model, path, name, title=t.title, untrained=t.untrained)
    state = "random initialisation" if t.untrained else "trained"
    console.print(f"{grid.layer}: {' x '.join(map(str, grid.shape))} ({state}); wrote {path}")


@app.command(
    epilog="Examples:  cnnlab featuremaps runs/demo digit.png --all-stages"
    "  |  cnnlab featuremaps runs/demo digit.png --layer features.c1 --layer features.c3"
)
def featuremaps(
    target: Annotated[str, typer.Argument(help="A run bundle, or a model name (random initialisation).")],
    image: Annotated[Path, typer.Argument(help="An image file.")],
    layer: Annotated[list[str] | None, typer.Option("--layer", help="Layer to show (repeatable).")] = None,
    all_stages: Annotated[bool, typer.Option("--all-stages", help="The output of every stage.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="PNG to write.")] = None,
) -> None:
    """The activations of chosen layers for one image, as grids beside the input."""
    from cnnlab.explain.activations import feature_maps, plot_feature_maps, stage_layers
    from cnnlab.explain.filters import conv_layer
    from cnnlab.explain.target import input_pixels, load_target

    t = load_target(target)
    pixels, normalised = input_pixels(t, image)
    names = stage_layers(t.model, t.input_shape) if all_stages else (layer or [conv_layer(t.model, None)[0]])
    maps = feature_maps(t.model, names, normalised)
    path = out or _explain_dir(t) / f"featuremaps-{image.stem}.png"
    plot_feature_maps(pixels, maps, path, f"{t.title}: {image.name}" + (" (untrained)" if t.untrained else ""))
    for name, fmap in maps.items():
        console.print(f"{name}: {' x '.join(map(str, fmap.shape))}")
    console.print(f"wrote {path}")


@app.command(
    epilog="Examples:  cnnlab explain runs/lite0-xray ../shared/data/chest-xray/test --faithfulness"
    "  |  cnnlab explain runs/demo digit.png --method gradcam++ --class 7"
)
def explain(
    run: Annotated[Path, typer.Argument(help="A run bundle directory.")],
    path: Annotated[Path, typer.Argument(help="An image file or a folder of images.")],
    method: Annotated[str, typer.Option(help="gradcam, gradcam++, scorecam, eigencam or layercam.")] = "gradcam",
    class_: Annotated[str | None, typer.Option("--class", help="Class to explain (default: predicted).")] = None,
    layer: Annotated[str | None, typer.Option("--layer", help="Layer to explain (default: the card's).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 16,
    faithful: Annotated[
        bool, typer.Option("--faithfulness", help="Score the maps by deletion/insertion against random maps.")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for the overlays.")] = None,
) -> None:
    """Heat-map overlays with the predicted label and calibrated probability; per-file errors."""
    import json
    import time

    from cnnlab.explain.folder import explain_files, faithfulness
    from cnnlab.export.predictor import expand_inputs, load

    clf = load(run)
    files = expand_inputs([str(path)])
    if not files:
        raise CnnlabError(f"no image files found in {path}")
    folder = out or run / "explain" / method
    start = time.perf_counter()
    table = Table("file", "class", "probability", "overlay / error", title=f"{method} on {run.name}")
    failed = 0
    with progress_bar(err, f"explaining ({method})", len(files)) as advance:
        for r in explain_files(clf, files, folder, method, class_, layer, batch_size, advance):
            failed += bool(r.error)
            if len(files) <= 50 or r.error:
                table.add_row(
                    r.path, r.label, "" if r.error else f"{r.probability:.3f}", r.overlay or f"[red]{r.error}[/red]"
                )
    seconds = time.perf_counter() - start
    if table.rows:
        console.print(table)
    console.print(
        f"{len(files) - failed} explained, {failed} unreadable in {seconds:.1f} s "
        f"({(len(files) - failed) / max(seconds, 1e-9):.1f} images/s); overlays in {folder}"
    )
    if faithful:
        with progress_bar(err, "faithfulness", len(files)) as advance:
            score = faithfulness(clf, files, method, layer, batch_size=batch_size, advance=advance)
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
        report = folder / "faithfulness.json"
        report.write_text(json.dumps({k: v for k, v in vars(score).items()} | {"score": score.score,
                                      "random_score": score.random_score}, indent=1))  # fmt: skip
        console.print(f"wrote {report}")


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
    from cnnlab.explain.calc import dense_parameters
    from cnnlab.explain.summary import dense_widths, layer_table
    from cnnlab.explain.target import load_target

    t = load_target(target, input)
    tab = layer_table(t.model, t.input_shape)
    shape_text = "x".join(map(str, t.input_shape))
    table = Table(
        "layer", "type", "kernel", "stride", "pad", "dil", "output", "params", "MACs", "RF", "jump",
        title=f"{t.title} at {shape_text}",
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
    if compare_dense:
        widths = dense_widths(tab)
        dense = dense_parameters(widths)
        console.print(
            f"a fully connected network with the same widths ({' -> '.join(f'{w:,}' for w in widths)}) "
            f"needs {dense:,} parameters: {dense / max(tab.parameters, 1):,.0f}x this network's"
        )


@app.command(
    epilog="Examples:  cnnlab calc conv --input 32 --kernel 5 --in 1 --out 6"
    "  |  cnnlab calc conv --input 224 --kernel 3 --stride 2 --padding same"
    "  |  cnnlab calc pool --input 28 --kernel 2 --stride 2"
)
def calc(
    kind: Annotated[str, typer.Argument(help="conv or pool.")],
    input: Annotated[int, typer.Option("--input", help="Input height (= width).")],
    kernel: Annotated[int, typer.Option("--kernel", help="Kernel side.")],
    stride: Annotated[int, typer.Option("--stride", help="Stride.")] = 1,
    padding: Annotated[str, typer.Option("--padding", help="Pixels on each side, same or valid.")] = "0",
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


# ------------------------------------------------------------------ the triage service (cnnlab serve)
StateDirOpt = Annotated[
    Path, typer.Option("--state-dir", help="The service's state: its SQLite database and kept images.")
]
DbOpt = Annotated[
    str | None, typer.Option("--db", help="A SQLAlchemy URL, e.g. postgresql://... (default: SQLite in --state-dir).")
]
DEFAULT_STATE_DIR = Path("serve-state")


def _serve_settings(state_dir: Path, db: str | None, **more: Any) -> Any:
    from pydantic import ValidationError

    from cnnlab.serve.settings import ServeSettings

    try:
        return ServeSettings(state_dir=state_dir, db_url=db, **more)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CnnlabError(f"--{'-'.join(str(p) for p in first['loc']).replace('_', '-')}: {first['msg']}") from None


def _service_store(state_dir: Path, db: str | None, create: bool = False) -> Any:
    """The service's database; only `keys create` may start a new one."""
    from cnnlab.serve.settings import DB_FILE
    from cnnlab.serve.store import Store

    settings = _serve_settings(state_dir, db)
    if db is None and not create and not (state_dir / DB_FILE).is_file():
        raise CnnlabError(f"no service database in {state_dir}; pass the --state-dir or --db that `cnnlab serve` uses")
    state_dir.mkdir(parents=True, exist_ok=True)
    return Store(settings.database_url())


@app.command(
    epilog="Examples:  cnnlab serve runs/lite0-xray  |  cnnlab serve runs/xray-v1 runs/xray-v2 --port 8443 "
    "--ssl-certfile cert.pem --ssl-keyfile key.pem"
)
def serve(
    runs: Annotated[list[Path], typer.Argument(help="Bundles to serve; the newest per model name starts active.")],
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    db: DbOpt = None,
    review_threshold: Annotated[
        float, typer.Option(help="Calibrated confidence under which a case goes to the review queue.")
    ] = 0.8,
    ssl_certfile: Annotated[Path | None, typer.Option("--ssl-certfile", help="TLS certificate (PEM).")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option("--ssl-keyfile", help="TLS private key (PEM).")] = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes sharing the database (use PostgreSQL, --db, across machines).")
    ] = 1,
) -> None:
    """Serve bundles over HTTP: predictions, Grad-CAM overlays, feedback and a review queue (API keys needed)."""
    import os

    import uvicorn

    from cnnlab.serve.app import create_app, settings_environment

    if workers < 1:
        raise CnnlabError(f"--workers must be at least 1, not {workers}")
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise CnnlabError("--ssl-certfile and --ssl-keyfile go together")
    for path in (ssl_certfile, ssl_keyfile):
        if path is not None and not path.is_file():
            raise CnnlabError(f"{path}: no such file")
    settings = _serve_settings(state_dir, db, runs=runs, host=host, port=port, review_threshold=review_threshold)
    application = create_app(settings)
    scheme = "https" if ssl_certfile else "http"
    names = ", ".join(f"{m.name}@{m.version}" for m in application.state.models.all())
    err.print(f"serving {names} on {scheme}://{host}:{port} (state in {state_dir}); create a key: cnnlab keys create")
    if workers > 1:  # each worker builds its own app from the same settings, passed by environment
        os.environ.update(settings_environment(settings))
    uvicorn.run(
        "cnnlab.serve.app:create_app_from_environment" if workers > 1 else application,
        factory=workers > 1,
        workers=workers if workers > 1 else None,
        host=host,
        port=port,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        log_level="info",
    )


@app.command(epilog="Example:  cnnlab ui --api http://127.0.0.1:8000 --port 8501   (then open http://127.0.0.1:8501)")
def ui(
    api: Annotated[str, typer.Option(help="Base URL of `cnnlab serve`, e.g. http://127.0.0.1:8000.")],
    port: Annotated[int, typer.Option(help="TCP port of the page.")] = 8501,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes it to the network.")] = "127.0.0.1",
) -> None:
    """The clinician's web page: sign in with an API key, upload an X-ray, see the prediction and its
    Grad-CAM, give feedback, work the review queue, watch the monitor (a client of the API only)."""
    from cnnlab.ui.launch import run_ui

    run_ui(api, host, port, warn=lambda line: err.print(line, soft_wrap=True))


keys_app = typer.Typer(help="API keys for `cnnlab serve`: roles viewer, clinician, admin.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create", epilog="Example:  cnnlab keys create --role clinician --name dr-smith --expires-in 90")
def keys_create(
    role: Annotated[str, typer.Option(help="viewer, clinician or admin.")],
    name: Annotated[str, typer.Option(help="Who or what holds it.")] = "",
    expires_in: Annotated[
        float | None, typer.Option("--expires-in", help="Refuse the key after this many days (default: never).")
    ] = None,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    db: DbOpt = None,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    from cnnlab.serve.security import create_key, expiry_after, parse_role

    parsed = parse_role(role)
    expires_at = expiry_after(expires_in)
    store = _service_store(state_dir, db, create=True)
    try:
        key_id, key = create_key(store, parsed, name, expires_at)
    finally:
        store.close()
    until = f", valid until {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
    err.print(f"created {parsed.name} key {key_id}{until}; it is shown once, store it now:")
    console.print(key)


@keys_app.command("list", epilog="Example:  cnnlab keys list --state-dir serve-state")
def keys_list(state_dir: StateDirOpt = DEFAULT_STATE_DIR, db: DbOpt = None) -> None:
    """Every key's id, role, name and state (never the key)."""
    store = _service_store(state_dir, db)
    try:
        rows = store.list_keys()
    finally:
        store.close()
    table = Table("key id", "role", "name", "created", "state")
    for row in rows:
        if row.revoked_at:
            state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}"
        elif row.expires_at:
            state = f"{'expired' if row.expired() else 'active, expires'} {row.expires_at:%Y-%m-%d %H:%M}"
        else:
            state = "active"
        table.add_row(row.key_id, row.role, row.name, f"{row.created_at:%Y-%m-%d %H:%M}", state)
    console.print(table)


@keys_app.command("revoke", epilog="Example:  cnnlab keys revoke cnl_1a2b3c4d")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id `cnnlab keys list` shows.")],
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    db: DbOpt = None,
) -> None:
    """Revoke a key: requests with it are refused (401) from now on."""
    store = _service_store(state_dir, db)
    try:
        if not store.revoke_key(key_id):
            raise CnnlabError(f"no active key with id '{key_id}'")
    finally:
        store.close()
    console.print(f"revoked {key_id}")


audit_app = typer.Typer(help="The service's append-only, hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify", epilog="Example:  cnnlab audit verify --state-dir serve-state")
def audit_verify(state_dir: StateDirOpt = DEFAULT_STATE_DIR, db: DbOpt = None) -> None:
    """Recompute the hash chain; exit 1 naming the first edited row or the row after a deleted one."""
    store = _service_store(state_dir, db)
    try:
        count, problem = store.verify_audit()
    finally:
        store.close()
    if problem is not None:
        err.print(f"[red]audit log tampered:[/red] row {problem.row_id} ({problem.reason}); {count} rows read")
        raise typer.Exit(1)
    console.print(f"audit log intact: {count} rows, hash chain verified")


feedback_app = typer.Typer(help="Clinician feedback collected by `cnnlab serve`.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("export", epilog="Example:  cnnlab feedback export --out data/feedback-1")
def feedback_export(
    out: Annotated[Path, typer.Option("--out", help="A new folder for the class-folder data set.")],
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    db: DbOpt = None,
) -> None:
    """Write the reviewed images as OUT/<label>/*.png plus metadata.csv, ready for `--data folder:OUT`."""
    from cnnlab.serve.export import export_feedback

    store = _service_store(state_dir, db)
    try:
        written, missing = export_feedback(store, state_dir / "images", out)
    finally:
        store.close()
    console.print(f"exported {written} reviewed images to {out}" + (f" ({missing} images missing)" if missing else ""))


# ------------------------------------------------------------------ the seeds' exercises (cnnlab recipe)
recipe_app = typer.Typer(
    help="Every exercise of the course documents as one command, answered in a README from the run.",
    no_args_is_help=True,
)
app.add_typer(recipe_app, name="recipe")


@recipe_app.command("list", epilog="Example:  cnnlab recipe list")
def recipe_list() -> None:
    """The recipes, the exercise each answers, and the data it reads."""
    from cnnlab.recipebook import REGISTRY

    table = Table("recipe", "exercise", "answers", "data")
    for r in REGISTRY.values():
        table.add_row(r.name, r.seed, r.title, r.data or "none (measures models)")
    console.print(table)
    console.print("run one: cnnlab recipe run NAME [--quick]; the answer is OUT/README.md")


@recipe_app.command(
    "run",
    epilog="Examples:  cnnlab recipe run lenet5-mnist  |  cnnlab recipe run xray-triage --folds 5"
    "  |  cnnlab recipe run alexnet-filters --quick --out runs/q8",
)
def recipe_run(
    name: Annotated[str, typer.Argument(help="A recipe from `cnnlab recipe list`.")],
    quick: Annotated[
        bool, typer.Option("--quick", help="Fewer epochs and images: about a minute on 2 cores, for a smoke test.")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: runs/recipes/NAME).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the training runs.")] = 0,
    folds: Annotated[int, typer.Option("--folds", help="xray-triage: also k-fold cross-validation by patient.")] = 0,
    data_dir: DataDirOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Run an exercise end to end and write OUT/README.md answering it with this run's numbers and figures."""
    import time

    from cnnlab.recipebook import read_results, run_recipe

    target = out or Path("runs") / "recipes" / name
    started = time.perf_counter()
    readme = run_recipe(
        name, target, quick=quick, seed=seed, data_dir=data_dir, folds=folds, overwrite=overwrite, console=console
    )
    console.print(f"\n{read_results(target)['summary']}")
    console.print(f"answered in {time.perf_counter() - started:.1f} s: {readme} (and README.html beside it)")


def _explain_dir(target: Any) -> Path:
    """Where explain figures go by default: the bundle's explain/, or runs/explain for a bare model."""
    return target.run_dir / "explain" if target.run_dir else Path("runs") / "explain"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.split(":")[-1].rstrip("/").split("/")[-1]).strip("-")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(f"cnnlab {__version__}")
        raise typer.Exit()


def _print_summary(summary: Any) -> None:
    console.print()
    console.print(
        f"[bold green]test accuracy {summary.test_accuracy:.4f}[/bold green]  "
        f"(best validation accuracy {summary.val_accuracy:.4f} at epoch {summary.best_epoch})"
    )
    console.print(
        f"training time {summary.train_seconds:.1f} s over {summary.epochs} epochs; "
        f"evaluation {summary.eval_seconds + summary.test_seconds:.1f} s"
    )
    if len(summary.stages) > 1:
        for stage in summary.stages:
            console.print(
                f"  stage {stage['name']}: {stage['epochs']} epochs, {stage['train_seconds']:.1f} s, "
                f"best validation accuracy {stage['best_val_acc']:.4f}"
            )
    console.print(f"fit: {summary.verdict}")
    if summary.stop_reason != "completed":
        console.print(f"stopped: {summary.stop_reason}")
    console.print(f"run: {summary.run_dir}")
    console.print("next:")
    console.print(f"  cnnlab evaluate {summary.run_dir}                 # per-class accuracy, confusion matrix")
    console.print(f"  cnnlab predict {summary.run_dir} IMAGE... --explain   # predictions and Grad-CAM overlays")
    console.print(f"  cnnlab export {summary.run_dir}                   # ONNX with a parity check")
    console.print(f"  open {summary.run_dir / 'curves.png'}")


def main() -> None:
    # Typer's standalone mode already answers usage errors with exit code 2; what reaches here
    # is cnnlab's own one-line errors and an interrupted run.
    try:
        app()
    except CnnlabError as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        sys.exit(2)
    except OSError as exc:  # a full disk or a vanished folder mid-run: say so in one line
        err.print(f"[red]error:[/red] {exc.strerror or exc}: {exc.filename or ''}", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
