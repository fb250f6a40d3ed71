"""Every PNG cnnlab writes: training curves with the fit verdict, confusion matrices, image grids."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import itertools

import matplotlib.pyplot as plt
import numpy as np

from cnnlab.evaluation.diagnosis import Diagnosis
from cnnlab.fileio import atomic_write_bytes

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
        _wrap(f"{diagnosis.reason}. {diagnosis.suggestion}.", 150),
        ha="center",
        fontsize=8.5,
        color="#333333",
    )
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    save_figure(fig, path)


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    k = len(classes)
    size = min(4 + 0.55 * k, 16)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def save_figure(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_image_grid(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]], path: Path, title: str, cell: float = 1.3
) -> None:
    """One labelled row per entry of `rows`, each a sequence of HxW[xC] uint8 images."""
    n_rows = max(1, len(rows))
    n_cols = max([len(images) for _, images in rows] + [1])
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols + 1.2, cell * n_rows + 0.6), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                image = images[c]
                grey = image.ndim == 2 or image.shape[-1] == 1
                ax.imshow(
                    image.squeeze(-1) if image.ndim == 3 and grey else image,
                    cmap="gray" if grey else None,
                    vmin=0,
                    vmax=255,
                )
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
