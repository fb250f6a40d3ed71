"""`cnnlab data inspect` and `cnnlab data preview`: look at a data set before training on it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cnnlab.choices import SPLITS
from cnnlab.config import DataConfig
from cnnlab.data.augment import build_augment
from cnnlab.data.cache import ManifestStore
from cnnlab.data.folder import Manifest, bad_share_problem, class_problem, no_files_problem, scan_folder
from cnnlab.data.sources import FOLDER_PREFIX, ArrayDataset, get_source, load_folder, load_source, locate
from cnnlab.errors import DataError
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
    """samples.png; None when training would refuse the classes (nothing to draw from)."""
    manifest_csv: Path | None = None
    files: int = 0
    """Image files found (folder sources), readable or not."""
    refusal: str = ""
    """Why training would refuse this data ('' when it would not): inspecting never refuses."""


def inspect_source(cfg: DataConfig, out_dir: Path, image_size: int = 96, per_class: int = 8) -> InspectReport:
    """Everything about a data set, bad files included, whatever their share: where training
    refuses the data, the report says why (`refusal`) instead of stopping."""
    refusal = ""
    root = _class_folder(cfg)
    if root is not None:
        manifest = scan_folder(root, store=ManifestStore(root.resolve()), check=False)
        if problem := no_files_problem(manifest):
            raise DataError(problem)  # nothing to report on
        # Every reason training would give, not only the first it stops at.
        refusal = "; ".join(
            p for p in (bad_share_problem(manifest, cfg.max_bad_fraction), class_problem(manifest)) if p
        )
        if class_problem(manifest):  # no splits or sample grid to make: report what the scan found
            return _manifest_only_report(cfg.source, manifest, out_dir, refusal)
        cfg = replace(cfg, max_bad_fraction=1.0)  # the scan above judged the share; load the rest
    data = load_source(cfg, image_size)
    counts = {
        cls: {split: int((data.splits[split][1] == i).sum()) for split in SPLITS} for i, cls in enumerate(data.classes)
    }
    report = InspectReport(data.source, data.origin, data.classes, counts, data.channels, refusal=refusal)
    if data.manifest is not None:
        _fill_from_manifest(report, data.manifest, out_dir)
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


def _class_folder(cfg: DataConfig) -> Path | None:
    """The class folder a source is read from (folder:PATH, and named ones like chest-xray), or
    None for sources of another kind or not found here (`load_source` then says so)."""
    if cfg.source.startswith(FOLDER_PREFIX):
        root = Path(cfg.source[len(FOLDER_PREFIX) :]).expanduser()
        if not root.is_dir():
            raise DataError(f"{cfg.source}: no such folder")
        return root
    if get_source(cfg.source).load is load_folder:
        return locate(cfg.source, cfg.data_dir)[0]
    return None


def _manifest_only_report(source: str, manifest: Manifest, out_dir: Path, refusal: str) -> InspectReport:
    """The report of a folder training refuses for its classes: counts per class as the files
    lie (no validation or test split carved), the files' sizes, formats and bad files."""
    counts = {cls: dict.fromkeys(SPLITS, 0) for cls in manifest.classes}
    for e in manifest.ok:
        counts[e.label][e.split or "train"] += 1
    report = InspectReport(source, str(manifest.root), manifest.classes, counts, manifest.channels(), refusal=refusal)
    _fill_from_manifest(report, manifest, out_dir)
    report.notes.append("no validation or test split carved and no samples drawn: training refuses these classes")
    return report


def _fill_from_manifest(report: InspectReport, manifest: Manifest, out_dir: Path) -> None:
    report.files = len(manifest.entries)
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
