"""`cnnlab models`, `datasets`, `data inspect` and `data preview`: what is available here, and what a
data set holds, before anything trains on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnlab.config import DataConfig
from cnnlab.data.augment import PRESETS
from cnnlab.data.inspect import InspectReport, inspect_source, preview_augmentation
from cnnlab.data.sources import get_source, locate, source_names
from cnnlab.errors import DataError
from cnnlab.models import get_spec, list_models
from cnnlab.models.factory import count_parameters


def slug(text: str) -> str:
    """A file-name-safe short name of a source, model or run: `folder:../data/chest-xray` -> `chest-xray`."""
    return "".join(c if c.isalnum() else "-" for c in text.split(":")[-1].rstrip("/").split("/")[-1]).strip("-")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_shape: tuple[int, int, int]
    """C, H, W of the model's default input."""
    parameters: int
    """With a `classes`-way head, at the default input."""
    description: str
    classes: int = 10


def model_infos(classes: int = 10) -> list[ModelInfo]:
    """Every registered model's parameters with a `classes`-way head (binary models: 2) at its
    default input, counted without allocating a single weight (`count_parameters`)."""
    infos = []
    for name in list_models():
        spec = get_spec(name)
        n = 2 if spec.binary else classes
        shape = (spec.in_chans, spec.input_size, spec.input_size)
        infos.append(ModelInfo(name, shape, count_parameters(name, n), spec.description, n))
    return infos


@dataclass(frozen=True)
class SourceInfo:
    name: str
    description: str
    folder: Path | None
    """Where its files are; None when they are not here."""
    searched: list[Path]
    expected: str
    """What files to place where, for a source that is missing."""
    downloadable: bool


def source_infos(data_dir: str | None = None) -> list[SourceInfo]:
    """Every named data source: found offline here (and where), or what it needs."""
    infos = []
    for name in source_names():
        source = get_source(name)
        folder, searched = locate(name, data_dir)
        infos.append(SourceInfo(name, source.description, folder, searched, source.expected, bool(source.download)))
    return infos


def inspect_data(
    source: str, data_dir: str | None = None, out: Path | None = None, max_bad_fraction: float = 0.01
) -> InspectReport:
    """Counts per class and split, sizes, bad files, duplicates and patients; samples.png and
    manifest.csv in `out` (default runs/inspect-SOURCE)."""
    cfg = DataConfig(source=source, data_dir=data_dir, max_bad_fraction=max_bad_fraction)
    return inspect_source(cfg, out or Path("runs") / f"inspect-{slug(source)}")


def preview(
    source: str,
    augment: str = "standard",
    size: int = 160,
    per_class: int = 6,
    data_dir: str | None = None,
    out: Path | None = None,
) -> Path:
    """A grid per class of a training image and augmented versions of it; returns the PNG written
    (default runs/preview-SOURCE-AUGMENT.png)."""
    if augment not in PRESETS:
        raise DataError(f"unknown augmentation preset '{augment}'; choose one of {', '.join(PRESETS)}")
    path = out or Path("runs") / f"preview-{slug(source)}-{augment}.png"
    preview_augmentation(DataConfig(source=source, data_dir=data_dir), augment, path, size, per_class)
    return path
