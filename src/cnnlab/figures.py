"""Plotting primitives every layer may use: matplotlib without a display, lossless PNGs written
atomically (`save_figure`), image grids. The evaluation's own figures (curves, confusion, ROC,
reliability) are in `cnnlab.evaluation.figures`."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: figures are files
import matplotlib.pyplot as plt
import numpy as np

from cnnlab.fileio import atomic_write_bytes


def plot_labelled_images(images: Sequence[np.ndarray], captions: Sequence[str], path: Path, title: str) -> None:
    """HxW[xC] uint8 images in a grid of at most 6 columns, each with a caption."""
    n = max(1, len(images))
    cols = min(6, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.3 * rows + 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            show_pixels(ax, images[i])
            ax.set_title(captions[i], fontsize=7.5)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def show_pixels(ax: Any, image: np.ndarray) -> None:
    """An HxW[xC] image on the 0-255 scale, uint8 or float (augmented pixels are floats). As uint8:
    matplotlib reads a float colour image as 0-1 and clips it to white, ignoring vmin/vmax."""
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8) if image.dtype != np.uint8 else image
    grey = pixels.ndim == 2 or pixels.shape[-1] == 1
    ax.imshow(pixels.squeeze(-1) if grey and pixels.ndim == 3 else pixels, cmap="gray" if grey else None,
              vmin=0, vmax=255)  # fmt: skip


def wrap_text(text: str, width: int) -> str:
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
                show_pixels(ax, images[c])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
