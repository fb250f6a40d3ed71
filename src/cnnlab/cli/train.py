"""`cnnlab demo`, `train` and `crossval`: runs that write bundles."""

# Tasks are imported inside the commands: that keeps `cnnlab --help` fast and free of torch.
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cnnlab.choices import AUGMENT_PRESETS
from cnnlab.cli.common import DataDirOpt, DeviceOpt, OutOpt, OverwriteOpt, SetOpt, choice_metavar, console, err
from cnnlab.errors import CnnlabError, ConfigError

app = typer.Typer()


def complete_training_recipe(incomplete: str) -> list[str]:
    """Tab-completion of a recipe name (the shell asks on every tab: config is quick and free of torch)."""
    from cnnlab.config import recipe_names

    return [name for name in recipe_names() if name.startswith(incomplete)]


@app.command(epilog="Example:  cnnlab demo --out runs/my-first-run")
def demo(
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the recipe's 15).")] = None,
) -> None:
    """Train LeNet-5 on 5,000 real MNIST digits, offline, and show what cnnlab writes.

    It also leaves one test digit per class in RUN/examples (digit-0.png ... digit-9.png) to try
    predict, featuremaps and explain on."""
    from cnnlab.tasks.demo import demo as run_demo

    result = run_demo(out, epochs=epochs, overwrite=overwrite, console=console)
    print_summary(result.summary, examples=result.examples)


@app.command(
    epilog=(
        "Examples:  cnnlab train lenet5-mnist  |  cnnlab train --model simple_cnn --data mnist-sample --epochs 3"
        "  |  cnnlab train lenet5-fashion-mnist --set optim.lr=2e-3 --set train.precision=bf16"
        "  |  cnnlab train lenet5-mnist --out runs/x --resume  |  cnnlab train lenet5-fashion-mnist --nproc 2"
        "  |  cnnlab train lenet5-fashion-mnist --find-lr  |  cnnlab train --list"
        "  |  cnnlab train lite0-xray --extra-data feedback/2025-06 --out runs/xray-feedback"
    )
)
def train(
    recipe: Annotated[
        str | None,
        typer.Argument(
            help="A training recipe (`cnnlab train --list`) or a YAML file.", autocompletion=complete_training_recipe
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name (`cnnlab models`).")] = None,
    data: Annotated[str | None, typer.Option(help="Data source (`cnnlab datasets`).")] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs; for a recipe with stages, every stage trains this many.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Learning rate; for a recipe with stages, every stage's rate scales by it over the recipe's."
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    download: Annotated[bool, typer.Option("--download", help="Download the data set if it is missing.")] = False,
    augment: Annotated[
        str | None,
        typer.Option(metavar=choice_metavar(AUGMENT_PRESETS), help="Augmentation preset (`cnnlab data preview`)."),
    ] = None,
    extra_data: Annotated[
        list[Path] | None,
        typer.Option(
            "--extra-data",
            metavar="DIR",
            help="A class folder (e.g. `cnnlab feedback export`'s) whose images all join the training split only; "
            "images of patients in the validation or test split are left out. Repeatable; replaces the recipe's "
            "data.extra.",
        ),
    ] = None,
    class_weights: Annotated[
        str | None,
        typer.Option("--class-weights", metavar="auto", help="auto: weight classes by inverse frequency."),
    ] = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the unfinished run in --out.")] = False,
    nproc: Annotated[
        int, typer.Option(help="Data-parallel processes on this machine (torchrun, DistributedDataParallel).")
    ] = 1,
    list_: Annotated[bool, typer.Option("--list", help="List the packaged training recipes and exit.")] = False,
    find_lr: Annotated[
        bool,
        typer.Option(
            "--find-lr",
            help="Instead of training, run the learning-rate range test (fastai's lr_find) and suggest --lr; "
            "writes lr_find.png and lr_find.json to --out (default runs/NAME-lr-find), no bundle.",
        ),
    ] = False,
    device: DeviceOpt = None,
) -> None:
    """Train a model from a training recipe and/or options; writes a run bundle.

    Training recipes (`cnnlab train --list`) configure one run; the course's exercises are another
    kind of recipe, run with `cnnlab recipe run NAME` (`cnnlab recipe list`).

    With --nproc N the run is N processes sharing each global batch (--batch-size stays the
    global batch). Across machines, start `python -m cnnlab.cli train ...` under torchrun
    (see the README); a checkpoint resumes with any number of processes."""
    if list_:
        print_training_recipes()
        return
    from cnnlab.tasks.inspect import slug
    from cnnlab.tasks.train import train as run_training

    shortcuts: dict[str, Any] = {
        "model.name": model,
        "data.source": data,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "optim.lr": lr,
        "data.data_dir": data_dir,
        "data.augment": augment,
        "optim.class_weights": class_weights,
        "train.device": device,
    }
    values = {k: v for k, v in shortcuts.items() if v is not None}
    if download:
        values["data.download"] = True
    if extra_data:
        values["data.extra"] = [str(folder) for folder in extra_data]
    if recipe is None and "name" not in values:
        values["name"] = f"{model or 'lenet5'}-{slug(data or 'mnist-sample')}"
    cfg = load_training_recipe(recipe, overrides=set_ or [], values=values)
    if find_lr:
        if resume or nproc != 1:
            raise CnnlabError("--find-lr runs in one process and writes no checkpoint: drop --resume and --nproc")
        _find_lr(cfg, out, overwrite)
        return
    if nproc != 1:
        from cnnlab.engine.device import resolve_device

        resolve_device(cfg.train.device)  # a GPU that is not there fails here, before any process starts
        _launch_processes(cfg, nproc, out or Path("runs") / cfg.name, overwrite, resume)
        return
    try:
        summary = run_training(cfg, out, overwrite=overwrite, resume=resume, console=console)
    except KeyboardInterrupt:
        # Typer turns Ctrl-C into a bare exit; the checkpoints of finished epochs are kept.
        err.print("interrupted; continue the run with the same command and --resume")
        raise typer.Exit(130) from None
    if summary is not None:  # the other ranks of a data-parallel job stay quiet
        print_summary(summary)


def _find_lr(cfg: Any, out: Path | None, overwrite: bool) -> None:
    """`--find-lr`: run the range test and print the suggestion, the command that uses it and the figure."""
    import shlex
    import sys

    from cnnlab.tasks.lr_find import find_lr

    result = find_lr(cfg, out, console, overwrite=overwrite)
    curve = result.curve
    console.print(f"{curve.steps} steps in {curve.seconds:.1f} s; {curve.stop_reason}")
    console.print(
        f"[bold green]suggested learning rate {result.lr_option:.2g}[/bold green] "
        f"(fastai's {curve.method}: half-way down the longest fall of the smoothed loss; "
        f"the lr at its minimum / 10 is {curve.min_lr_over_10 * result.lr_option / curve.suggestion:.2g})"
    )
    if result.lr_option != curve.suggestion:
        console.print(
            f"  stage '{result.stage}' ({result.trainable}) runs at {curve.suggestion:.2g}; --lr scales every stage"
        )
    argv = sys.argv[1:]
    argv = argv[argv.index("train") + 1 :] if "train" in argv else []
    console.print(f"train with it:  {shlex.join(_train_args(argv))} --lr {result.lr_option:.2g}")
    console.print(f"figure: {result.figure}  (curve: {result.json})")


def _train_args(args: list[str]) -> list[str]:
    """This command line as `cnnlab train ...` without --find-lr, --out, --overwrite and --lr."""
    kept: list[str] = ["cnnlab", "train"]
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--find-lr", "--overwrite") or arg.startswith(("--out=", "--lr=")):
            continue
        elif arg in ("--out", "--lr"):
            skip = True
        else:
            kept.append(arg)
    return kept


def _launch_processes(cfg: Any, nproc: int, out: Path, overwrite: bool, resume: bool) -> None:
    """Run this training as `nproc` processes through torchrun: this same command, from the resolved config."""
    import tempfile

    from cnnlab.bundle.layout import check_run_dir
    from cnnlab.engine.distributed import launch

    check_run_dir(out, overwrite=overwrite, resume=resume)  # fail here, before any process starts
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
    epilog="Examples:  cnnlab crossval lite0-xray --folds 5 --group-by patient_id  |  "
    "cnnlab crossval lite0-xray --folds 5 --ensemble --ensemble-oof  |  cnnlab crossval lite0-xray --by-source  |  "
    "cnnlab crossval lenet5-mnist-sample --folds 3 --set train.epochs=2"
)
def crossval(
    recipe: Annotated[
        str,
        typer.Argument(
            help="A training recipe (`cnnlab train --list`) or a YAML file.", autocompletion=complete_training_recipe
        ),
    ],
    folds: Annotated[int, typer.Option(help="Number of folds (ignored by --by-source).")] = 5,
    group_by: Annotated[
        str | None, typer.Option(help="Require folds by this patient column (they are by patient whenever ids exist).")
    ] = None,
    ensemble: Annotated[
        bool,
        typer.Option(
            "--ensemble",
            help="Also write OUT/ensemble: one bundle averaging the fold models' logits. The data's test split "
            "then stays out of every fold and scores the ensemble.",
        ),
    ] = False,
    ensemble_oof: Annotated[
        bool,
        typer.Option(
            "--ensemble-oof",
            help="With --ensemble and 3+ folds: also train the K(K-1)/2 models that leave two folds out, so every "
            "image gets a prediction from an ensemble of K-1 models that never saw it (ensemble_oof_logits."
            "safetensors); `cnnlab calibrate` then fits the ensemble's calibration and operating point on those.",
        ),
    ] = False,
    by_source: Annotated[
        bool,
        typer.Option(
            "--by-source",
            help="Leave one source out instead of K folds (--folds is ignored): per source in metadata.csv, "
            "train on the others and test on all of its images; writes by_source.json and by_source.csv.",
        ),
    ] = False,
    set_: SetOpt = None,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = None,
) -> None:
    """Stratified (patient-grouped) K-fold cross-validation: one bundle per fold, every metric per fold, mean +/- std.

    Out-of-fold predictions go to oof_predictions.csv, their raw logits to oof_logits.safetensors
    (groups in oof_groups.csv). Rerunning continues an interrupted run."""
    cfg = load_training_recipe(recipe, overrides=set_ or [], values={"train.device": device} if device else None)
    if by_source:
        if ensemble or ensemble_oof or group_by is not None:
            raise CnnlabError(
                "--by-source holds out whole sources: it takes no --ensemble, --ensemble-oof or --group-by"
            )
        _by_source(cfg, out, overwrite)
        return
    from cnnlab.evaluation.report import fmt
    from cnnlab.tasks.crossval import CROSSVAL_METRICS
    from cnnlab.tasks.crossval import crossval as run_crossval

    result = run_crossval(
        cfg, folds, out, group_by=group_by, ensemble=ensemble, ensemble_oof=ensemble_oof, overwrite=overwrite,
        console=console,
    )  # fmt: skip
    keys = CROSSVAL_METRICS  # per-class figures are in crossval.csv
    table = Table("fold", "images", *(k.replace("_", " ") for k in keys), title=f"{folds}-fold, by {result.unit}")
    for row in result.rows:
        table.add_row(str(row["fold"]), str(row["images"]), *(fmt(row[k]) for k in keys))
    table.add_row("mean +/- std", "", *(f"{fmt(result.mean[k])} +/- {fmt(result.std[k], 3)}" for k in keys))
    if result.ensemble is not None:
        scored = result.ensemble
        table.add_row("ensemble, test split", str(scored["images"]), *(fmt(scored[k]) for k in keys))
    console.print(table)
    console.print(
        f"wrote {result.out_dir / 'crossval.csv'}, crossval.json, oof_predictions.csv and oof_logits.safetensors"
    )
    if result.ensemble is not None:
        console.print(f"ensemble bundle: {result.ensemble['dir']} (test split held out of every fold)")
    if result.ensemble_oof is not None:
        shown = result.ensemble_oof["uncalibrated"]
        console.print(
            "out-of-fold, uncalibrated: "
            + "; ".join(
                f"{name} accuracy {fmt(v['accuracy'])}, log loss {fmt(v['log_loss'])}, mean confidence "
                f"{fmt(v['mean_confidence'])}"
                for name, v in shown.items()
            )
            + f" (ensemble_oof_logits.safetensors, from {result.ensemble_oof['models']} models in pairs/)"
        )


def _by_source(cfg: Any, out: Path | None, overwrite: bool) -> None:
    from cnnlab.evaluation.report import fmt
    from cnnlab.tasks.by_source import leave_one_source_out

    result = leave_one_source_out(cfg, out, overwrite=overwrite, console=console)
    per_class = [f"{m} {c}" for m in ("roc_auc", "sensitivity") for c in result.classes]
    table = Table(
        "held out", "images", "trained on", "accuracy", "macro roc auc", *per_class, "val macro roc auc",
        title="leave one source out (ROC AUC within the held-out source; val: other sources, same classes)",
    )  # fmt: skip
    for row in result.rows:
        table.add_row(
            row["source"], str(row["images"]), row["trained_on"], fmt(row["accuracy"]), fmt(row["macro_roc_auc"]),
            *(fmt(row[k]) for k in per_class), fmt(row["val_macro_roc_auc"]),
        )  # fmt: skip
    console.print(table)
    for skip in result.skipped:
        console.print(f"skipped {skip['source']} ({skip['images']} images): {skip['reason']}")
    console.print(f"wrote {result.out_dir / 'by_source.csv'} and by_source.json")


def load_training_recipe(recipe: str | None, **kwargs: Any) -> Any:
    """`load_config`, but a name that is an exercise (`cnnlab recipe list`) says to run it with
    `cnnlab recipe run`: the two kinds of recipe share a word, not a command."""
    from cnnlab.config import load_config, recipe_names

    try:
        return load_config(recipe, **kwargs)
    except ConfigError:
        if recipe is None or recipe in recipe_names() or Path(recipe).suffix in (".yaml", ".yml"):
            raise
        from cnnlab.recipebook import REGISTRY  # only on this error path: it loads torch

        if recipe in REGISTRY:
            raise CnnlabError(
                f"'{recipe}' is an exercise recipe, not a training recipe: run it with `cnnlab recipe run {recipe}`"
                " (training recipes: `cnnlab train --list`)"
            ) from None
        raise


def print_training_recipes() -> None:
    from cnnlab.config import load_config, recipe_description, recipe_names

    table = Table("recipe", "model", "data", "epochs", "what it trains", title="training recipes: cnnlab train NAME")
    for name in recipe_names():
        cfg = load_config(name)
        epochs = "+".join(str(st.epochs) for st in cfg.train.stages) if cfg.train.stages else str(cfg.train.epochs)
        table.add_row(name, cfg.model.name, cfg.data.source, epochs, recipe_description(name))
    console.print(table)
    console.print("the course's exercises are recipes of another kind: cnnlab recipe list, cnnlab recipe run NAME")


def print_summary(summary: Any, examples: list[Path] | None = None) -> None:
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
    image = "IMAGE..."
    if examples:
        image = str(examples[min(7, len(examples) - 1)])  # digit-7: the README's example
        console.print(f"examples: {len(examples)} test images to try, {examples[0]} ... {examples[-1].name}")
    console.print("next:")
    console.print(f"  cnnlab evaluate {summary.run_dir}                 # per-class accuracy, confusion matrix")
    console.print(f"  cnnlab predict {summary.run_dir} {image} --explain   # predictions and Grad-CAM overlays")
    console.print(f"  cnnlab export {summary.run_dir}                   # ONNX with a parity check")
    console.print(f"  open {summary.run_dir / 'curves.png'}")
