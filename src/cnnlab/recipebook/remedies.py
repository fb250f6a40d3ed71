"""A training answer with a remedy tried and measured: the same run again with one change (more
augmentation, none at all), both runs' curves on one figure and a table of what the change did."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cnnlab import bundle
from cnnlab.evaluation.figures import plot_curves_compared
from cnnlab.evaluation.report import Figure, Section, Table
from cnnlab.recipebook.core import Context, pct


def run_summary(run_dir: Path) -> dict[str, Any]:
    """What the comparison reads from a finished bundle: accuracies, the last epoch's train/val gap,
    the fit verdict and the training time."""
    card = bundle.read_card(run_dir)
    last = bundle.read_history(run_dir / bundle.HISTORY)[-1]
    return {
        "test_accuracy": card.metrics["test_accuracy"],
        "val_accuracy": card.metrics["val_accuracy"],
        "best_epoch": card.metrics["best_epoch"],
        "final_train_accuracy": last["train_acc"],
        "final_val_accuracy": last["val_acc"],
        "gap": last["train_acc"] - last["val_acc"],
        "verdict": card.training["fit"]["verdict"],
        "train_seconds": card.training["train_seconds"],
    }


def remedy_section(
    ctx: Context, runs: dict[str, Path], title: str, question: str
) -> tuple[Section, dict[str, dict[str, Any]]]:
    """`runs`: label -> finished bundle, the baseline first. The section holds the table, the
    overlaid curves, and a reading of what changed, from the numbers."""
    found = {label: run_summary(run_dir) for label, run_dir in runs.items()}
    histories = {label: bundle.read_history(run_dir / bundle.HISTORY) for label, run_dir in runs.items()}
    figure = ctx.path(re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") + "-curves.png")
    plot_curves_compared(histories, figure, question)
    rows = [
        [label, pct(r["test_accuracy"]), f"{pct(r['val_accuracy'])} (epoch {r['best_epoch']})",
         f"{pct(r['final_train_accuracy'])} / {pct(r['final_val_accuracy'])}", f"{100 * r['gap']:.1f}",
         r["verdict"], f"{r['train_seconds']:.1f} s"]
        for label, r in found.items()
    ]  # fmt: skip
    (base_label, base), (other_label, other) = list(found.items())[:2]
    gap_change = 100 * (other["gap"] - base["gap"])
    acc_change = 100 * (other["test_accuracy"] - base["test_accuracy"])
    reading = (
        f"{other_label[:1].upper()}{other_label[1:]}, compared with {base_label}: the final train/validation gap "
        f"went from {100 * base['gap']:.1f} to "
        f"{100 * other['gap']:.1f} points ({gap_change:+.1f}) and test accuracy from {pct(base['test_accuracy'])} "
        f"to {pct(other['test_accuracy'])} ({acc_change:+.2f} points); the verdict went from '{base['verdict']}' "
        f"to '{other['verdict']}'."
    )
    blocks: list[Any] = [
        Table(
            [
                "run",
                "test accuracy",
                "best validation accuracy",
                "final train / validation accuracy",
                "gap (points)",
                "verdict",
                "training time",
            ],
            rows,
        ),
        Figure(figure, f"{question} (dashed: training, solid: validation)"),
        reading,
    ]
    return Section(title, blocks), found
