"""`cnnlab data inspect` and `cnnlab data preview`: look at a data set before training on it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnlab.choices import SPLITS
from cnnlab.config import DataConfig
from cnnlab.data.augment import build_augment
from cnnlab.data.sources import ArrayDataset, load_source
from cnnlab.figures import plot_image_grid
from cnnlab.fileio import atomic_write_text


@dataclass
class InspectReport:
    source: str
    origin: str
    classes: list[str]
    counts: dict[str, dict[str, int]]
    """class -> split -> images"""
    channels: int
    sizes: Counter = field(default_factory=Counter)
    modes: Counter = field(default_factory=Counter)
    bad: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    duplicates: int = 0
    cross_split_duplicates: list[list[str]] = field(default_factory=list)
    patients: dict[str, int] | None = None
    shared_patients: int = 0
    notes: list[str] = field(default_factory=list)
    grid: Path | None = None
    manifest_csv: Path | None = None


def inspect_source(cfg: DataConfig, out_dir: Path, image_size: int = 96, per_class: int = 8) -> InspectReport:
    data = load_source(cfg, image_size)
    counts = {
        cls: {split: int((data.splits[split][1] == i).sum()) for split in SPLITS} for i, cls in enumerate(data.classes)
    }
    report = InspectReport(data.source, data.origin, data.classes, counts, data.channels)
    manifest = data.manifest
    if manifest is not None:
        report.sizes = Counter(f"{e.width}x{e.height}" for e in manifest.ok)
        report.modes = Counter(f"{e.format} {e.mode}" for e in manifest.ok)
        report.bad = [(e.path, e.reason) for e in manifest.bad]
        report.ignored = list(manifest.ignored)
        report.duplicates = len(manifest.duplicates())
        report.cross_split_duplicates = [[f"{e.split}/{e.path}" for e in g] for g in manifest.cross_split_duplicates()]
        report.notes = list(manifest.notes)
        out_dir.mkdir(parents=True, exist_ok=True)
        report.manifest_csv = out_dir / "manifest.csv"
        atomic_write_text(report.manifest_csv, manifest.to_csv())
    else:
        h, w = data.image_size
        report.sizes = Counter({f"{w}x{h}": sum(data.sizes().values())})
        report.modes = Counter({"grey" if data.channels == 1 else "colour": sum(data.sizes().values())})
    if data.groups is not None:
        report.patients = {split: len(set(g.tolist())) for split, g in data.groups.items()}
        sets = [set(g.tolist()) for g in data.groups.values()]
        report.shared_patients = len(set.union(*[a & b for i, a in enumerate(sets) for b in sets[i + 1 :]] or [set()]))
    out_dir.mkdir(parents=True, exist_ok=True)
    report.grid = out_dir / "samples.png"
    plot_image_grid(
        _samples_per_class(data, per_class), report.grid, f"{data.source}: {per_class} training images per class"
    )
    return report


def _samples_per_class(data: ArrayDataset, per_class: int, seed: int = 0) -> list[tuple[str, list[np.ndarray]]]:
    x, y = data.splits["train"]
    rng = np.random.default_rng(seed)
    rows = []
    for i, cls in enumerate(data.classes):
        idx = np.flatnonzero(y.numpy() == i)
        chosen = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        rows.append((cls, [x[j].permute(1, 2, 0).numpy() for j in chosen]))
    return rows


def preview_augmentation(
    cfg: DataConfig, preset: str, out: Path, image_size: int, per_class: int = 6, seed: int = 0
) -> Path:
    """A grid per class: one training image, then `per_class` augmented versions of it."""
    data = load_source(cfg, image_size)
    x, y = data.splits["train"]
    side = int(x.shape[-1])
    augment = build_augment(preset, side)
    torch.manual_seed(seed)
    rows = []
    for i, cls in enumerate(data.classes):
        idx = np.flatnonzero(y.numpy() == i)
        if not len(idx):
            continue
        image = x[int(idx[0])]
        variants = augment(image.expand(per_class, *image.shape).contiguous()) if augment else image[None]
        rows.append((cls, [image.permute(1, 2, 0).numpy()] + [v.permute(1, 2, 0).numpy() for v in variants]))
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_image_grid(rows, out, f"{data.source}: augmentation '{preset}' (first column: original)")
    return out
