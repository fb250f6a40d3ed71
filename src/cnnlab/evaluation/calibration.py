"""Calibration: do the probabilities mean what they say? Measure it (ECE, MCE, NLL, Brier) and fix
it on the validation split with temperature scaling or vector (Platt-style) scaling.

Temperature scaling (Guo et al. 2017) divides every logit by one T > 0 fitted by LBFGS on the
validation NLL: it cannot change any prediction, only how confident it is. Vector scaling fits
a per-class scale and bias (for a one-logit binary model this is Platt scaling); it can move the
decision boundary and so the accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cnnlab.choices import CALIBRATION_METHODS
from cnnlab.engine.losses import make_loss
from cnnlab.errors import DataError
from cnnlab.evaluation.metrics import brier, log_loss
from cnnlab.models.outputs import probabilities

BINS = 15
METHODS = CALIBRATION_METHODS


@dataclass(frozen=True)
class Reliability:
    """Equal-width confidence bins of the top-1 prediction."""

    edges: np.ndarray
    confidence: np.ndarray
    """Mean confidence per bin (NaN when empty)."""
    accuracy: np.ndarray
    counts: np.ndarray
    ece: float
    """Expected calibration error: sum over bins of |accuracy - confidence| weighted by share."""
    mce: float
    """Maximum calibration error over non-empty bins."""


def reliability(y: np.ndarray, proba: np.ndarray, bins: int = BINS) -> Reliability:
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bins are (lo, hi]; a confidence of exactly 0 cannot happen with argmax of a distribution.
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, bins) / counts
        mean_acc = np.bincount(which, correct, bins) / counts
    gaps = np.abs(mean_acc - mean_conf)
    full = counts > 0
    ece = float(np.sum(gaps[full] * counts[full]) / max(len(y), 1))
    mce = float(gaps[full].max()) if full.any() else float("nan")
    return Reliability(edges, mean_conf, mean_acc, counts, ece, mce)


def calibration_scores(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    rel = reliability(y, proba)
    return {
        "ece": rel.ece,
        "mce": rel.mce,
        "nll": log_loss(y, proba),
        "brier": brier(y, proba),
        "accuracy": float(np.mean(proba.argmax(axis=1) == y)) if len(y) else float("nan"),
    }


@dataclass(frozen=True)
class Calibration:
    """What the model card stores and every prediction applies to the raw logits."""

    method: str
    temperature: float | None = None
    scale: list[float] | None = None
    bias: list[float] | None = None

    def probabilities(self, logits: torch.Tensor, binary: bool) -> torch.Tensor:
        return probabilities(logits, binary, self.temperature or 1.0, self.scale, self.bias)

    def to_card(self) -> dict[str, Any]:
        return {"method": self.method, "temperature": self.temperature, "scale": self.scale, "bias": self.bias}


def fit_calibration(logits: torch.Tensor, y: torch.Tensor, binary: bool, method: str = "temperature") -> Calibration:
    """Fit on (N, K) logits (N, 1 for a binary model) and labels by LBFGS on the NLL."""
    if method not in METHODS:
        raise DataError(f"calibration method must be one of {', '.join(METHODS)}, not '{method}'")
    if len(y) < 2 or len(torch.unique(y)) < 2:
        raise DataError(f"cannot calibrate on {len(y)} validation image(s) of {len(torch.unique(y))} class(es)")
    logits = logits.detach().double()
    nll = make_loss(binary)
    width = logits.shape[1]
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    scale = torch.ones(width, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(width, dtype=torch.float64, requires_grad=True)
    params = [log_t] if method == "temperature" else [scale, bias]

    def scaled() -> torch.Tensor:
        return logits / log_t.exp() if method == "temperature" else logits * scale + bias

    optimizer = torch.optim.LBFGS(params, lr=0.5, max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nll(scaled(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    if method == "temperature":
        return Calibration("temperature", temperature=float(log_t.detach().exp()))
    return Calibration("vector", scale=scale.detach().tolist(), bias=bias.detach().tolist())
