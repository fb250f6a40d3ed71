"""Fit diagnosis: over-fitting, under-fitting, not converged or a good fit, from the history alone.

The rules, checked in this order (K = number of classes, n = epochs):
1. fewer than 3 epochs: too short to judge.
2. overfitting: the validation loss ended at least 10% above its minimum, the minimum is at
   least two epochs before the end, and the training loss kept falling after it (the rise
   began the epoch after the minimum); or the training accuracy exceeds the validation
   accuracy by more than 10 points while the validation loss has not improved for 2 epochs; or,
   even with a settled validation loss, it exceeds it by more than 5 points and the training
   error is under half the validation error (the training set is memorised: 99.9% against 91.6%).
3. underfitting: the final training loss is still above half the chance-level loss (ln K)
   and flat: it moved less than 5% over the last third of the epochs.
4. not converged: the last epoch is (within 1%) the best validation loss and it fell by more
   than 2% over the last two epochs, so more epochs would still help.
5. otherwise a good fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

OVERFIT_RISE = 0.10
GAP_POINTS = 0.10
SETTLED_GAP_POINTS = 0.05
FLAT_CHANGE = 0.05
STILL_FALLING = 0.02


@dataclass(frozen=True)
class Diagnosis:
    verdict: str
    reason: str
    suggestion: str
    began_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def headline(self) -> str:
        return f"{self.verdict}: {self.reason}"


def diagnose(history: Sequence[dict[str, Any]], num_classes: int) -> Diagnosis:
    n = len(history)
    if n < 3:
        return Diagnosis(
            "too short to judge",
            f"{n} epoch(s); the rules need at least 3",
            "train for more epochs to see the trend",
        )
    epochs = [int(r["epoch"]) for r in history]
    tl = [float(r["train_loss"]) for r in history]
    vl = [float(r["val_loss"]) for r in history]
    ta = [float(r["train_acc"]) for r in history]
    va = [float(r["val_acc"]) for r in history]
    best = min(range(n), key=vl.__getitem__)
    rise = vl[-1] / vl[best] - 1 if vl[best] > 0 else 0.0

    if best <= n - 3 and rise > OVERFIT_RISE and tl[-1] < tl[best]:
        return Diagnosis(
            "overfitting",
            f"validation loss rose {rise:.0%} from its minimum {vl[best]:.4f} at epoch {epochs[best]} "
            f"to {vl[-1]:.4f} while training loss fell from {tl[best]:.4f} to {tl[-1]:.4f}",
            f"add augmentation or regularisation (dropout, weight decay), get more data, or stop at "
            f"epoch {epochs[best]} (train.early_stopping)",
            began_epoch=epochs[best] + 1,
        )
    gap = ta[-1] - va[-1]
    if gap > GAP_POINTS and best <= n - 3:
        return Diagnosis(
            "overfitting",
            f"training accuracy {ta[-1]:.3f} exceeds validation accuracy {va[-1]:.3f} by {gap * 100:.1f} "
            f"points and validation loss has not improved since epoch {epochs[best]}",
            "add augmentation or regularisation, or get more data",
            began_epoch=epochs[best] + 1,
        )
    if gap > SETTLED_GAP_POINTS and (1 - ta[-1]) < 0.5 * (1 - va[-1]):
        return Diagnosis(
            "overfitting",
            f"training accuracy {ta[-1]:.3f} exceeds validation accuracy {va[-1]:.3f} by {gap * 100:.1f} points: "
            f"the training error ({1 - ta[-1]:.1%}) is under half the validation error ({1 - va[-1]:.1%}), so the "
            f"network fits its training images far better than new ones, although the validation loss settled "
            f"(best {vl[best]:.4f} at epoch {epochs[best]})",
            "add augmentation or regularisation (dropout, weight decay, label smoothing) or get more data; the kept "
            "weights are the best validation epoch's, so more epochs will not hurt but will not help",
        )
    chance = math.log(max(num_classes, 2))
    k = max(2, n // 3)
    change = abs(tl[-1] - tl[-1 - k]) / max(tl[-1 - k], 1e-12) if n > k else 1.0
    if tl[-1] > 0.5 * chance and change < FLAT_CHANGE:
        return Diagnosis(
            "underfitting",
            f"training loss {tl[-1]:.4f} is still above half the chance level ({0.5 * chance:.3f}) and "
            f"moved only {change:.1%} over the last {k} epochs",
            "use a larger model, a higher learning rate, less regularisation, or more epochs",
        )
    falling = (vl[-3] - vl[-1]) / vl[-3] if vl[-3] > 0 else 0.0
    if vl[-1] <= vl[best] * 1.01 and falling > STILL_FALLING:
        return Diagnosis(
            "not converged",
            f"validation loss is still falling ({falling:.1%} over the last two epochs, best at the last epoch)",
            "train for more epochs",
        )
    return Diagnosis(
        "good fit",
        f"validation loss settled at {vl[best]:.4f} (epoch {epochs[best]}) and ended at {vl[-1]:.4f}; "
        f"train/val accuracy gap {gap * 100:.1f} points",
        "nothing to change; more data or a larger model may still raise the ceiling",
    )
