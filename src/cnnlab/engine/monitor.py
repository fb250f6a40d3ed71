"""Which epoch's weights a run keeps, and when early stopping gives up: the monitored validation
figure (`train.monitor`). The validation loss by default; a clinical model is better chosen by its
validation ROC AUC, which does not reward confident probabilities for their own sake."""

from __future__ import annotations

import math

import numpy as np
import torch

from cnnlab.engine.loop import EpochStats
from cnnlab.models.outputs import probabilities

MONITORS = ("val_loss", "val_acc", "val_auc")
DESCRIPTIONS = {"val_loss": "validation loss", "val_acc": "validation accuracy", "val_auc": "validation ROC AUC"}


def macro_auc(logits: torch.Tensor, labels: torch.Tensor, binary: bool) -> float:
    """Macro one-vs-rest ROC AUC over the classes that have both positives and negatives (NaN if none)."""
    from sklearn.metrics import roc_auc_score

    proba = probabilities(logits.float(), binary).numpy()
    y = labels.numpy()
    scores = [roc_auc_score(y == k, proba[:, k]) for k in range(proba.shape[1]) if 0 < int((y == k).sum()) < len(y)]
    return float(np.mean(scores)) if scores else math.nan


def selection_key(monitor: str, evaluation: EpochStats, auc: float) -> tuple[float, float]:
    """Lower is better: the monitored figure (negated when higher is better), then the validation
    loss to break ties (a small validation split often gives two epochs the same AUC or accuracy).
    `auc`: the epoch's `macro_auc`, computed once by the caller (history.csv records it too)."""
    if monitor == "val_loss":
        return (evaluation.loss, evaluation.loss)
    if monitor == "val_acc":
        return (-evaluation.accuracy, evaluation.loss)
    if monitor == "val_auc":
        # A split where AUC is undefined (one class) falls back to the loss rather than stalling.
        return (-auc if math.isfinite(auc) else evaluation.loss, evaluation.loss)
    raise ValueError(f"unknown train.monitor '{monitor}'; choose one of {', '.join(MONITORS)}")
