"""Re-cutting a loaded data set's splits: leave one source out (`data.holdout_source`), and the
test split set apart from cross-validation's folds (`data.folds_exclude_test`).

`load_source` applies both; they work on any `ArrayDataset` (imported for typing only: the
loader imports this module)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from cnnlab.choices import SPLITS
from cnnlab.config import DataConfig
from cnnlab.data.splits import check_no_group_leak, holdout
from cnnlab.errors import DataError

if TYPE_CHECKING:
    from cnnlab.data.sources import ArrayDataset


def pooled(data: ArrayDataset) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None]:
    """Every split's images, labels and groups, concatenated in SPLITS order."""
    x = torch.cat([data.splits[name][0] for name in SPLITS])
    y = torch.cat([data.splits[name][1] for name in SPLITS])
    return x, y, pooled_per_image(data.groups)


def pooled_per_image(values: dict[str, np.ndarray] | None) -> np.ndarray | None:
    """A per-image attribute (groups, sources) of every split, in `pooled`'s order."""
    return np.concatenate([values[name] for name in SPLITS]) if values is not None else None


def source_names(data: ArrayDataset) -> list[str]:
    """The sources images of `data` name (sorted; images without one are never held out)."""
    if data.sources is None:
        return []
    return sorted({s for values in data.sources.values() for s in values.tolist() if s})


def source_holdout_splits(
    labels: np.ndarray, groups: np.ndarray | None, origins: np.ndarray, held_out: str, val_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Indices of leave-one-source-out over pooled data: `test` = every image of `held_out`, `val`
    held out of the other images (by patient when groups are given), `train` the rest."""
    test = np.flatnonzero(origins == held_out)
    rest = np.flatnonzero(origins != held_out)
    if not len(rest):
        raise DataError(f"data.holdout_source {held_out}: every image is from {held_out}, nothing is left to train on")
    if val_fraction <= 0:
        raise DataError(
            "leave-one-source-out carves validation out of the other sources: data.val_fraction must be > 0"
        )
    keep, val = holdout(labels[rest], None if groups is None else groups[rest], val_fraction, seed)
    parts = {"train": rest[keep], "val": rest[val], "test": test}
    if groups is not None:  # a patient seen at two sources would leak across the cut
        check_no_group_leak(parts, groups)
    return parts


def apply_source_holdout(data: ArrayDataset, cfg: DataConfig) -> ArrayDataset:
    """With `data.holdout_source`, the leave-one-source-out splits of the pooled data (see
    `source_holdout_splits`); else `data` as it is."""
    held_out = cfg.holdout_source
    if held_out is None:
        return data
    if cfg.folds:
        raise DataError("data.holdout_source and data.folds cannot be combined: the held-out source is the test part")
    names = source_names(data)
    if held_out not in names:
        known = ", ".join(names) if names else "none (metadata.csv has no source column)"
        raise DataError(f"data.holdout_source {held_out}: no image comes from it; the data's sources: {known}")
    x, y, groups = pooled(data)
    origins = pooled_per_image(data.sources)
    assert origins is not None
    parts = source_holdout_splits(y.numpy(), groups, origins, held_out, cfg.val_fraction, cfg.split_seed)
    return replace(
        data,
        splits={name: (x[idx], y[idx]) for name, idx in parts.items()},
        groups={name: groups[idx] for name, idx in parts.items()} if groups is not None else None,
        sources={name: origins[idx] for name, idx in parts.items()},
        origin=f"{data.origin}, source {held_out} held out",
    )


def without_test(data: ArrayDataset, cfg: DataConfig) -> ArrayDataset:
    """With `data.folds` and `data.folds_exclude_test`, `data` with an empty test split (the folds
    are then cut from train + val only); else `data` as it is."""
    if not (cfg.folds and cfg.folds_exclude_test):
        return data
    x, y = data.splits["test"]

    def empty(values: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
        return None if values is None else {**values, "test": values["test"][:0]}

    return replace(
        data,
        splits={**data.splits, "test": (x[:0], y[:0])},
        groups=empty(data.groups),
        sources=empty(data.sources),
        origin=f"{data.origin}, test split set apart",
    )
