"""Builders of small class folders for tests (real PNG/JPEG files, made on the fly)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, size: tuple[int, int] = (24, 20), mode: str = "RGB", fmt: str = "PNG") -> Path:
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def make_folder(root: Path, counts: dict[str, int], split: str | None = None, seed: int = 0, mode: str = "RGB") -> Path:
    """`root/[split/]class/NNN.png` with `counts[class]` distinct random images each."""
    base = root / split if split else root
    k = seed * 10_000
    for cls, n in counts.items():
        for i in range(n):
            k += 1
            write_image(base / cls / f"{i:03d}.png", k, mode=mode)
    return root


def write_metadata(root: Path, rows: list[dict[str, str]]) -> None:
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
