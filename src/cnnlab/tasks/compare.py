"""`cnnlab compare-models` and `cnnlab compare`: architectures side by side by what they cost, and
run bundles by what they achieved beside their cost."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from cnnlab.bundle.card import read_card
from cnnlab.bundle.weights import load_model
from cnnlab.explain.summary import ModelStats, measure
from cnnlab.explain.target import parse_input
from cnnlab.figures import save_figure
from cnnlab.models import create_model, get_spec


@dataclass
class ModelRow:
    name: str
    input: tuple[int, int, int]
    stats: ModelStats
    test_accuracy: float | None = None
    train_seconds: float | None = None
    epochs: int | None = None
    weights: str | None = None
    run: str | None = None
    classes: int | None = None
    """The class count the model was measured with (its head's size, and so its parameter count,
    depends on it; a binary model has 2 classes and one output)."""


@dataclass
class Comparison:
    rows: list[ModelRow]
    chart: Path


def compare_models(names: list[str], input_shape: tuple[int, int, int], classes: int | None = None) -> list[ModelRow]:
    """Each architecture built for `input_shape` (C, H, W) and measured; `classes` outputs
    (default: 1000 for ImageNet models, else 10; binary models have 2)."""
    rows = []
    for name in names:
        spec = get_spec(name)
        n_classes = classes or (1000 if spec.pretrained else 10)
        if spec.binary:
            n_classes = 2
        model = create_model(name, n_classes, input_shape[0], input_shape[1])
        rows.append(ModelRow(name, input_shape, measure(model, input_shape), classes=n_classes))
    return rows


def compare_runs(run_dirs: list[Path]) -> list[ModelRow]:
    """Each bundle's network measured at its input, with what its card says the run achieved."""
    rows = []
    for run in run_dirs:
        card = read_card(run)
        model = load_model(run, card)
        shape = (card.in_chans, card.input_size[0], card.input_size[1])
        rows.append(
            ModelRow(
                name=card.architecture,
                input=shape,
                stats=measure(model, shape),
                test_accuracy=card.metrics["test_accuracy"],
                train_seconds=card.training["train_seconds"],
                epochs=card.training["epochs_run"],
                weights=card.weights,
                run=str(run),
                classes=len(card.classes),
            )
        )
    return rows


def compare_architectures(
    names: list[str], input_text: str, classes: int | None = None, out: Path | None = None
) -> Comparison:
    """`compare_models` at an `--input` shape (224, 224x224 or 3x224x224), charted in `out`
    (default runs/compare-models.png)."""
    rows = compare_models(names, parse_input(input_text), classes)
    chart = out or Path("runs") / "compare-models.png"
    plot_comparison(rows, chart, f"architectures at input {input_text}")
    return Comparison(rows, chart)


def compare_bundles(run_dirs: list[Path], out: Path | None = None) -> Comparison:
    """`compare_runs`, charted in `out` (default runs/compare.png)."""
    rows = compare_runs(run_dirs)
    chart = out or Path("runs") / "compare.png"
    plot_comparison(rows, chart, "runs compared")
    return Comparison(rows, chart)


def plot_comparison(rows: list[ModelRow], path: Path, title: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = [Path(r.run).name if r.run else r.name for r in rows]
    runs = rows[0].test_accuracy is not None
    panels = [
        ("parameters (millions)", [r.stats.parameters / 1e6 for r in rows]),
        ("multiply-adds (GMACs)", [r.stats.macs / 1e9 for r in rows]),
    ]
    if runs:
        panels = [
            ("test accuracy", [r.test_accuracy or 0 for r in rows]),
            ("training time (s)", [r.train_seconds or 0 for r in rows]),
            *panels,
        ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1, 0.45 * len(rows) + 2.2), squeeze=False)
    for ax, (what, values) in zip(axes[0], panels, strict=True):
        bars = ax.barh(range(len(rows)), values, color="#4c72b0")
        ax.set_yticks(range(len(rows)), labels if ax is axes[0][0] else [""] * len(rows))
        ax.invert_yaxis()
        ax.set_title(what, fontsize=10)
        ax.bar_label(bars, fmt="%.3g", fontsize=8, padding=2)
        ax.margins(x=0.25)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
