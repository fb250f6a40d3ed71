"""Deterministic splits: the same seed gives the same split on every machine."""

from __future__ import annotations

import numpy as np

from cnnlab.errors import DataError


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, held out) with `fraction` of each class held out.

    Every class with at least two samples keeps one and holds out at least one, so a small
    class is never missing from validation or test.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), not {fraction}")
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_held = round(fraction * len(idx))
        if fraction > 0 and len(idx) >= 2:
            n_held = min(max(n_held, 1), len(idx) - 1)
        held.append(idx[:n_held])
        kept.append(idx[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def seeded_subset(n: int, size: int, seed: int) -> np.ndarray:
    """`size` indices out of `n`, chosen by seed, in ascending order."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


def grouped_holdout(
    labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Like `stratified_holdout`, but every group (patient) lands wholly on one side."""
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), not {fraction}")
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise DataError(f"cannot hold out {fraction:.0%} by patient: only {n_groups} patient/group")
    # Fewer folds than requested when patients or class members are few (scikit-learn's limits).
    n_splits = max(2, min(round(1 / fraction), n_groups, int(np.bincount(labels).max())))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    kept, held = next(folds.split(np.zeros(len(labels)), labels, groups))
    return np.sort(kept), np.sort(held)


def holdout(labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grouped when groups are given, stratified otherwise; fraction 0 holds out nothing."""
    if fraction == 0:
        return np.arange(len(labels)), np.arange(0)
    if groups is not None:
        return grouped_holdout(labels, groups, fraction, seed)
    return stratified_holdout(labels, fraction, seed)


def kfold(
    labels: np.ndarray, k: int, seed: int, groups: np.ndarray | None = None, stratified: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs of K folds: StratifiedGroupKFold, StratifiedKFold or KFold."""
    from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

    x = np.zeros(len(labels))
    if groups is not None:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return [(np.sort(a), np.sort(b)) for a, b in splitter.split(x, labels, groups)]
    if stratified:
        return [
            (np.sort(a), np.sort(b)) for a, b in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, labels)
        ]
    return [(np.sort(a), np.sort(b)) for a, b in KFold(k, shuffle=True, random_state=seed).split(x)]


def check_no_group_leak(splits: dict[str, np.ndarray], groups: np.ndarray) -> None:
    """Raise when a group (patient) appears in more than one split."""
    seen: dict[str, str] = {}
    for name, idx in splits.items():
        for g in set(groups[idx].tolist()):
            if g in seen and seen[g] != name:
                raise DataError(
                    f"patient/group '{g}' appears in both {seen[g]} and {name}: patient-level leakage; "
                    "fix the split in metadata.csv, or remove the split column and let cnnlab split by patient"
                )
            seen[g] = name


def fold_splits(
    labels: np.ndarray,
    groups: np.ndarray | None,
    folds: int,
    fold: int,
    val_fraction: float,
    seed: int,
    second: int | None = None,
) -> dict[str, np.ndarray]:
    """Indices of one cross-validation fold over pooled data: `test` is fold `fold` of `folds`
    (stratified, and grouped by patient when groups are given), joined by fold `second` when given
    (the models that leave two folds out); `val` is held out of the rest the same way, so no
    patient is in two parts."""
    if not 0 <= fold < folds:
        raise DataError(f"data.fold must be in 0..{folds - 1}, not {fold}")
    if second is not None and (not 0 <= second < folds or second == fold or folds < 3):
        raise DataError(f"data.second_fold must be another fold in 0..{folds - 1} (and folds >= 3), not {second}")
    if val_fraction <= 0:
        raise DataError(
            "cross-validation carves validation out of each fold's training part: data.val_fraction must be > 0"
        )
    units = len(np.unique(groups)) if groups is not None else len(labels)
    if units < folds:
        what = "patients" if groups is not None else "images"
        raise DataError(f"cannot cut {units} {what} into {folds} folds")
    cuts = kfold(labels, folds, seed, groups)
    test = cuts[fold][1] if second is None else np.union1d(cuts[fold][1], cuts[second][1])
    rest = np.setdiff1d(np.arange(len(labels)), test)
    keep, val = holdout(labels[rest], groups[rest] if groups is not None else None, val_fraction, seed)
    return {"train": rest[keep], "val": rest[val], "test": test}
