"""Deterministic splits: the same seed gives the same split on every machine."""

from __future__ import annotations

import numpy as np


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
