"""Figures written into bundles: training curves with the fit verdict, confusion matrices."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
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
    _save(fig, path)


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
    _save(fig, path)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
