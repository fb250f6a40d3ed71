"""What every exercise recipe shares: the registry, the run context, and the README writer.

A recipe runs the steps its exercise asks for with the library's own functions (train, evaluate,
calibrate, explain, export, summary), collects what they measured in `results.json`, and writes a
`README.md` answering the exercise from those measurements: every number and every verdict in it
comes from this run."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from cnnlab import bundle
from cnnlab.config import Config, did_you_mean, load_config, recipe_names
from cnnlab.engine.monitor import DESCRIPTIONS as MONITOR_TEXT
from cnnlab.errors import CnnlabError
from cnnlab.evaluation.report import Figure, Section, Table, data_table, fmt, training_table, write_html, write_markdown
from cnnlab.fileio import atomic_write_json
from cnnlab.tasks.train import train


@dataclass(frozen=True)
class Recipe:
    name: str
    seed: str
    """Where the exercise is in the user's documents, e.g. "000 Q6"."""
    title: str
    exercise: str
    """The exercise as the document asks it (shortened)."""
    run: Callable[[Context], Answer]
    data: str = ""
    """The data sources it reads (for `recipe list`)."""
    takes_folds: bool = False


@dataclass
class Context:
    out: Path
    quick: bool
    seed: int = 0
    data_dir: str | None = None
    folds: int = 0
    console: Console = field(default_factory=lambda: Console(quiet=True))

    def path(self, name: str) -> Path:
        """A file of this recipe's output (its folder created)."""
        target = self.out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def config(self, recipe: str | None, quick: dict[str, Any], **values: Any) -> Config:
        """A packaged training recipe (or none: `values` alone) with this run's seed and data folder;
        `quick` shrinks it (its `train.epochs` reaches every stage of a staged recipe)."""
        settings: dict[str, Any] = {"train.seed": self.seed, **values}
        if self.data_dir:
            settings["data.data_dir"] = self.data_dir
        if self.quick:
            settings.update(quick)
        return load_config(recipe, values=settings)

    def step(self, label: str) -> None:
        self.console.print(f"[bold]{label}[/bold]")


@dataclass
class Answer:
    """The answer to one exercise: a short summary, sections, and the measurements behind them."""

    summary: str
    sections: list[Section]
    results: dict[str, Any]


REGISTRY: dict[str, Recipe] = {}


def recipe(name: str, seed: str, title: str, exercise: str, data: str = "", takes_folds: bool = False):
    """Register the decorated function as the recipe `name`."""

    def register(fn: Callable[[Context], Answer]) -> Callable[[Context], Answer]:
        if name in REGISTRY:
            raise ValueError(f"recipe '{name}' is registered twice")
        REGISTRY[name] = Recipe(name, seed, title, exercise, fn, data, takes_folds)
        return fn

    return register


def questions(recipe_: Recipe) -> list[tuple[str, int]]:
    """The seed questions a recipe answers as (document, number): "000 Q3 / 002 Q5" -> [("000", 3),
    ("002", 5)]. The documents number their questions Q1.. and their coded answers A6.."""
    return [(doc, int(number)) for doc, number in re.findall(r"(\d{3}) [QA](\d+)", recipe_.seed)]


def in_document_order() -> list[Recipe]:
    """Every recipe, in the order of the questions it answers (first document, then question)."""
    return sorted(REGISTRY.values(), key=lambda r: (questions(r)[:1] or [("999", 0)], r.name))


def get_recipe(name: str) -> Recipe:
    if name in REGISTRY:
        return REGISTRY[name]
    if name in recipe_names():  # the other kind of recipe: one training run, not an exercise
        raise CnnlabError(
            f"'{name}' is a training recipe, not an exercise recipe: train it with `cnnlab train {name}`"
            " (exercise recipes: `cnnlab recipe list`)"
        )
    raise CnnlabError(f"unknown recipe '{name}'{did_you_mean(name, list(REGISTRY))}; see `cnnlab recipe list`")


def write_answer(recipe_: Recipe, ctx: Context, answer: Answer, seconds: float) -> Path:
    """README.md (figures beside it), README.html (self-contained) and results.json."""
    mode = "a quick run: --quick, fewer epochs and images" if ctx.quick else "a full run"
    header = Section(
        "The exercise",
        [
            f"{recipe_.seed}: {recipe_.exercise}",
            f"Answered by `cnnlab recipe run {recipe_.name}` ({mode}, seed {ctx.seed}) in {seconds:.1f} s. "
            "Every number and figure below was measured in this run.",
            answer.summary,
        ],
    )
    sections = [header, *answer.sections]
    results = {
        "recipe": recipe_.name,
        "quick": ctx.quick,
        "seed": ctx.seed,
        "seconds": round(seconds, 2),
        "summary": answer.summary,
        **answer.results,
    }
    atomic_write_json(ctx.out / "results.json", results)
    readme = ctx.out / "README.md"
    write_markdown(recipe_.title, sections, readme)
    write_html(recipe_.title, sections, ctx.out / "README.html")
    return readme


def run_recipe(
    name: str,
    out: Path,
    *,
    quick: bool = False,
    seed: int = 0,
    data_dir: str | None = None,
    folds: int = 0,
    overwrite: bool = False,
    console: Console | None = None,
) -> Path:
    """Run the recipe into `out` and return its README."""
    recipe_ = get_recipe(name)
    if folds == 1 or folds < 0:  # checked before training: k-fold is the recipe's last step
        raise CnnlabError(f"--folds must be 0 (none) or at least 2, not {folds}")
    if folds and not recipe_.takes_folds:
        raise CnnlabError(f"recipe '{name}' has no k-fold step; --folds applies to xray-triage")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CnnlabError(f"{out} already exists and is not empty; pass --overwrite or another --out")
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out, quick, seed, data_dir, folds, console or Console(quiet=True))
    started = time.perf_counter()
    answer = recipe_.run(ctx)
    return write_answer(recipe_, ctx, answer, time.perf_counter() - started)


def read_results(out: Path) -> dict[str, Any]:
    return json.loads((out / "results.json").read_text())


# ------------------------------------------------------------------ blocks several recipes use


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def training_sections(run_dir: Path, what: str) -> tuple[list[Section], dict[str, Any], bundle.ModelCard]:
    """Accuracy, training time per stage, the curves and the fit verdict of a finished bundle;
    with the measurements and the bundle's model card."""
    card = bundle.read_card(run_dir)
    training, metrics = card.training, card.metrics
    fit = training["fit"]
    results = {
        "test_accuracy": metrics["test_accuracy"],
        "val_accuracy": metrics["val_accuracy"],
        "best_epoch": metrics["best_epoch"],
        "train_seconds": training["train_seconds"],
        "epochs": training["epochs_run"],
        "stages": [{k: s[k] for k in ("name", "epochs", "train_seconds", "best_val_acc")} for s in training["stages"]],
        "verdict": fit["verdict"],
        "parameters": card.parameters,
        "weights": card.weights,
        "data": {k: card.data.get(k) for k in ("source", "splits")},
    }
    stage_text = "; ".join(
        f"{s['name']} {s['train_seconds']:.1f} s over {s['epochs']} epoch{'s' if s['epochs'] != 1 else ''}"
        for s in training["stages"]
    )
    sections = [
        Section(
            "Result",
            [
                f"{what}: test accuracy {pct(metrics['test_accuracy'])} on {card.data['splits'].get('test', 0):,} "
                f"test images (best validation accuracy {pct(metrics['val_accuracy'])} at epoch "
                f"{metrics['best_epoch']}, chosen by {MONITOR_TEXT[metrics.get('monitor', 'val_loss')]}, whose "
                "weights are kept).",
                f"Training time: {training['train_seconds']:.1f} s on {_device_text(training)}"
                f"; per stage: {stage_text}. Evaluating the test split took {training['test_seconds']:.1f} s.",
                f"The model has {card.parameters:,} parameters; the saved model is "
                f"`{run_dir.name}/model.safetensors` with its card `model.json`, the per-epoch history "
                f"`{run_dir.name}/history.csv`.",
            ],
        ),
        Section("Data", [data_table(card.data)]),
        Section("Training time per stage", [training_table(training)]),
        Section(
            "Curves and the fit verdict",
            [
                Figure(run_dir / "curves.png", "training and validation loss and accuracy per epoch"),
                f"Verdict: {fit['verdict']}: {fit['reason']}.",
                f"What to do: {fit['suggestion']}.",
            ],
        ),
        Section("History", [history_table(run_dir)]),
    ]
    return sections, results, card


def _device_text(training: dict[str, Any]) -> str:
    threads = training.get("threads")
    precision = training.get("precision", "fp32")
    device = str(training.get("device", "cpu"))
    if device.startswith("cuda"):  # `cuda:0 (NVIDIA H200)`, as engine.device names it
        return f"the GPU {device} ({precision})"
    return f"the CPU ({threads} threads, {precision})" if threads else "this machine"


def history_table(run_dir: Path) -> Table:
    rows = [
        [
            str(r["stage"]),
            str(r["epoch"]),
            fmt(r["train_loss"]),
            fmt(r["train_acc"]),
            fmt(r["val_loss"]),
            fmt(r["val_acc"]),
            f"{float(r['train_seconds']):.1f}",
        ]
        for r in bundle.read_history(run_dir / bundle.HISTORY)
    ]
    return Table(["stage", "epoch", "train loss", "train acc", "val loss", "val acc", "seconds"], rows)


def train_recipe(ctx: Context, cfg: Config, folder: str = "run") -> Path:
    """Train `cfg` into OUT/<folder> and return the bundle."""
    out = ctx.out / folder
    ctx.step(f"training {cfg.model.name} on {cfg.data.source}")
    train(cfg, out, overwrite=True, console=ctx.console)
    return out
