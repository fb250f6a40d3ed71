"""The evaluation's figures: training curves with the fit diagnosis, the confusion matrix, ROC and
precision-recall curves, reliability diagrams. Lossless PNGs through `cnnlab.figures.save_figure`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from cnnlab.evaluation.diagnosis import Diagnosis
from cnnlab.evaluation.metrics import row_normalised
from cnnlab.figures import plt, save_figure, wrap_text

_VERDICT_COLOURS = {"overfitting": "#c0392b", "underfitting": "#d35400", "not converged": "#b7950b"}


def plot_curves(history: Sequence[dict[str, Any]], diagnosis: Diagnosis, path: Path, title: str) -> None:
    epochs = [int(r["epoch"]) for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", label="train", color="#1f77b4")
        ax.plot(epochs, [r[f"val_{key}"] for r in history], "s-", label="validation", color="#ff7f0e")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
        if diagnosis.began_epoch is not None:
            ax.axvline(diagnosis.began_epoch - 0.5, color="#c0392b", ls="--", lw=1)
        for prev, row in itertools.pairwise(history):  # where each transfer stage begins
            if row["stage"] != prev["stage"]:
                ax.axvline(int(row["epoch"]) - 0.5, color="#555555", ls=":", lw=1)
                ax.text(
                    int(row["epoch"]) - 0.4,
                    0.02,
                    str(row["stage"]),
                    transform=ax.get_xaxis_transform(),
                    fontsize=8,
                    color="#555555",
                )
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    colour = _VERDICT_COLOURS.get(diagnosis.verdict, "#1e8449")
    fig.suptitle(f"{title} — {diagnosis.verdict}", color=colour, fontsize=13, fontweight="bold")
    fig.text(
        0.5,
        0.015,
        wrap_text(f"{diagnosis.reason}. {diagnosis.suggestion}.", 150),
        ha="center",
        fontsize=8.5,
        color="#333333",
    )
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    save_figure(fig, path)


def plot_curves_compared(histories: dict[str, Sequence[dict[str, Any]]], path: Path, title: str) -> None:
    """Several runs' curves on shared axes (loss, accuracy): training dashed, validation solid, one
    colour per run, so a remedy's effect on the train/validation gap can be read at a glance."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.4))
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for (name, history), colour in zip(histories.items(), itertools.cycle(colours), strict=False):
        epochs = [int(r["epoch"]) for r in history]
        for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
            ax.plot(epochs, [r[f"train_{key}"] for r in history], "--", color=colour, lw=1.2, label=f"{name}: train")
            ax.plot(epochs, [r[f"val_{key}"] for r in history], "o-", color=colour, ms=3, label=f"{name}: validation")
    for ax, label in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    """Counts beside row-normalised shares (each true class's row sums to 100%)."""
    k = len(classes)
    size = min(3.5 + 0.5 * k, 10)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size * 0.9))
    norm = row_normalised(cm)
    for ax, shares in zip(axes, (False, True), strict=True):
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                text = f"{norm[i, j]:.0%}" if shares else str(cm[i, j])
                colour = "white" if norm[i, j] > 0.5 else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=8 if k > 6 else 10, color=colour)
        ax.set_xticks(range(k), classes, rotation=45, ha="right")
        ax.set_yticks(range(k), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("row-normalised (recall on the diagonal)" if shares else "counts", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_roc_pr(y: np.ndarray, proba: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    """One-vs-rest ROC and precision-recall curves of every class present in `y`."""
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 4.6))
    colours = plt.get_cmap("tab10")
    for c, name in enumerate(classes):
        positive = y == c
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, proba[:, c])
        precision, recall, _ = precision_recall_curve(positive, proba[:, c])
        colour = colours(c % 10)
        ax_roc.plot(fpr, tpr, color=colour, lw=1.5, label=name)
        ax_pr.step(recall, precision, where="post", color=colour, lw=1.5, label=name)
        ax_pr.axhline(positive.mean(), color=colour, ls=":", lw=0.8)
    ax_roc.plot([0, 1], [0, 1], color="#999999", ls="--", lw=1, label="chance")
    ax_roc.set_xlabel("1 - specificity (false positive rate)")
    ax_roc.set_ylabel("sensitivity (true positive rate)")
    ax_roc.set_title("ROC, one class vs the rest", fontsize=10)
    ax_pr.set_xlabel("recall (sensitivity)")
    ax_pr.set_ylabel("precision (PPV)")
    ax_pr.set_title("precision-recall (dotted: prevalence)", fontsize=10)
    for ax in (ax_roc, ax_pr):
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a split with one class draws no curve on the PR panel
            ax.legend(fontsize=8, loc="lower right" if ax is ax_roc else "lower left")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_reliability(panels: Sequence[tuple[str, Any]], path: Path, title: str) -> None:
    """Reliability diagrams side by side: (label, `calibration.Reliability`) per panel."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.6), squeeze=False)
    for ax, (label, rel) in zip(axes[0], panels, strict=True):
        centres = (rel.edges[:-1] + rel.edges[1:]) / 2
        width = rel.edges[1] - rel.edges[0]
        full = rel.counts > 0
        ax.bar(centres[full], rel.accuracy[full], width=width * 0.95, color="#4c72b0", label="accuracy")
        gap_low = np.minimum(rel.accuracy[full], rel.confidence[full])
        gap = np.abs(rel.accuracy[full] - rel.confidence[full])
        # The gap is drawn as a hatched outline so that it reads the same above and below the bar.
        ax.bar(centres[full], gap, bottom=gap_low, width=width * 0.95, fill=False, hatch="///",
               edgecolor="#c0392b", linewidth=0.8, label="gap to confidence")  # fmt: skip
        for x, n in zip(centres[full], rel.counts[full], strict=True):  # few images: a noisy bin
            ax.text(x, 0.01, str(n), ha="center", va="bottom", fontsize=6.5, color="white")
        ax.plot([0, 1], [0, 1], color="#555555", ls="--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-1 probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{label}\nECE {rel.ece:.2%}  MCE {rel.mce:.2%}", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
