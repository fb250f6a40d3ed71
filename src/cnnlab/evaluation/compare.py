"""Side-by-side comparisons: architectures by what they cost, runs by what they achieved."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from cnnlab import bundle
from cnnlab.errors import ModelError
from cnnlab.explain.summary import ModelStats, measure
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


def parse_input(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ModelError(f"--input must look like 3x224x224, not '{text}'") from None
    return c, h, w


def compare_models(names: list[str], input_shape: tuple[int, int, int], classes: int | None = None) -> list[ModelRow]:
    rows = []
    for name in names:
        spec = get_spec(name)
        n_classes = classes or (1000 if spec.pretrained else 10)
        if spec.binary:
            n_classes = 2
        model = create_model(name, n_classes, input_shape[0], input_shape[1])
        rows.append(ModelRow(name, input_shape, measure(model, input_shape)))
    return rows


def compare_runs(run_dirs: list[Path]) -> list[ModelRow]:
    rows = []
    for run in run_dirs:
        card = bundle.read_card(run)
        model = bundle.load_model(run, card)
        shape = (card["in_chans"], *card["input_size"])
        rows.append(
            ModelRow(
                name=card["architecture"],
                input=shape,
                stats=measure(model, shape),
                test_accuracy=card["metrics"]["test_accuracy"],
                train_seconds=card["training"]["train_seconds"],
                epochs=card["training"]["epochs_run"],
                weights=card.get("weights", "none"),
                run=str(run),
            )
        )
    return rows


def plot_comparison(rows: list[ModelRow], path: Path, title: str) -> None:
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
