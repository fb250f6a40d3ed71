"""Calibration: do the probabilities mean what they say? Measure it (ECE with a bootstrap interval,
MCE, NLL, Brier) and fix it with temperature scaling or vector (Platt-style) scaling.

Temperature scaling (Guo et al. 2017) divides every logit by one T > 0 fitted by LBFGS on the
validation NLL: it cannot change any prediction, only how confident it is. Vector scaling fits
a per-class scale and bias (for a one-logit binary model this is Platt scaling); it can move the
decision boundary and so the accuracy.

On small data a fit can make things worse, so `choose_calibration` cross-fits: each candidate
(none, temperature, vector) is fitted on all parts of the fit set but one and scored on that one,
and the held-out log losses, pooled over the parts, decide (`auto`) or veto (an explicit method).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cnnlab.choices import CALIBRATION_METHODS
from cnnlab.engine.losses import make_loss
from cnnlab.errors import DataError
from cnnlab.evaluation.metrics import LOG_LOSS_EPS, brier, log_loss, percentile_interval, resample_weights
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


# ------------------------------------------------------------------ choosing one by held-out NLL

CANDIDATES = ("none", *METHODS)
"""Simplest first: `auto` keeps the first within one standard error of the lowest held-out log loss."""
TIE = 1e-9


def ece_interval(
    y: np.ndarray,
    proba: np.ndarray,
    groups: np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    bins: int = BINS,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the ECE, resampling images, or whole patients when
    `groups` are given. ECE = sum over bins |sum(correct) - sum(confidence)| / N, so every
    resample is one weighted sum. (None, None) without images or resamples.

    The plug-in ECE is biased upward (noise within a bin only ever adds to |gap|) and resampling
    adds more: for a well-calibrated model the interval can lie wholly above the point estimate."""
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0 or resamples == 0:
        return None, None
    draws = weighted_ece(y, proba, resample_weights(len(y), groups, resamples, seed), bins)
    low, high = percentile_interval(draws, level).to_list()
    return low, high


def weighted_ece(y: np.ndarray, proba: np.ndarray, w: np.ndarray, bins: int = BINS) -> np.ndarray:
    """The ECE of `reliability` for each row of image weights `w` (resamples, N): one weighted sum per
    row, so a bootstrap (or a paired one, both models on the same rows) costs one matrix product."""
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    which = np.clip(np.searchsorted(np.linspace(0.0, 1.0, bins + 1), conf, side="left") - 1, 0, bins - 1)
    gap = np.zeros((len(y), bins))
    gap[np.arange(len(y)), which] = correct - conf
    return np.abs(w @ gap).sum(axis=1) / w.sum(axis=1)


@dataclass(frozen=True)
class CalibrationChoice:
    """What `choose_calibration` decided, and why."""

    method: str
    """The chosen method: none, temperature or vector."""
    calibration: Calibration
    """The chosen method fitted on the whole fit set (method "none": the raw probabilities)."""
    requested: str
    heldout_nll: dict[str, float | None]
    """Each candidate's log loss on held-out parts, pooled (None when it could not be cross-fitted)."""
    folds: int
    """Parts of the cross-fitting (0 when the set was too small to cross-fit)."""
    unit: str
    """What the parts keep together: "image" or "patient"."""
    images: int
    reason: str

    def to_card(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "chosen": self.method,
            "heldout_nll": self.heldout_nll,
            "folds": self.folds,
            "unit": self.unit,
            "images": self.images,
            "reason": self.reason,
        }


def cross_fit_parts(y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> list[np.ndarray] | str:
    """Held-out index sets of a stratified (and, with groups, patient-grouped) k-fold split of the
    fit set: `folds` parts, fewer when images or patients are few (at least 2). Every training
    side (all parts but one) must hold two classes. A string says why no split is possible."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    units = len(np.unique(np.asarray(groups).astype(str))) if groups is not None else len(y)
    noun = "patients" if groups is not None else "images"
    if len(np.unique(y)) < 2:
        return f"the fit set holds one class ({len(y)} images)"
    # scikit-learn's limits: no more parts than units, nor than members of the largest class
    largest = int(np.bincount(y).max())
    if min(units, largest) < 2:
        return f"{units} {noun} cannot be split into 2 parts" if units < 2 else "no class has 2 images"
    for k in range(min(folds, units, largest), 1, -1):
        with warnings.catch_warnings():  # a class with fewer members than parts is expected here
            warnings.simplefilter("ignore", UserWarning)
            try:
                if groups is None:
                    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
                    parts = [held for _, held in splitter.split(np.zeros(len(y)), y)]
                else:
                    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
                    ids = np.asarray(groups).astype(str)
                    parts = [held for _, held in splitter.split(np.zeros(len(y)), y, ids)]
            except ValueError:
                continue
        if all(len(held) and len(np.unique(np.delete(y, held))) >= 2 for held in parts):
            return parts
    return f"no split of {units} {noun} into 2 parts leaves two classes on each training side"


def paired_se(diff: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Standard error of the mean of per-image differences, clustered by patient when groups are
    given (sqrt of the summed squared per-patient residual sums, over N; std/sqrt(N) without)."""
    resid = diff - diff.mean()
    if groups is not None:
        _, unit = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        resid = np.bincount(unit, resid)
    return float(np.sqrt(np.sum(resid**2)) / len(diff))


def choose_calibration(
    logits: torch.Tensor,
    y: np.ndarray,
    binary: bool,
    groups: np.ndarray | None = None,
    method: str = "auto",
    folds: int = 5,
    seed: int = 0,
    fit_name: str = "validation",
) -> CalibrationChoice:
    """Cross-fit none, temperature and vector scaling on (logits, y) and keep what held-out log
    loss supports. `auto`: the lowest held-out NLL, where a candidate within one standard error of a
    simpler one counts as a tie and the simpler wins; the choice is then fitted on the whole set;
    a set too small to cross-fit keeps "none". An explicit method whose held-out NLL is worse than
    none's (or that cannot be checked) is refused with a DataError. `fit_name` names the images in
    messages ("validation", "out-of-fold")."""
    if method not in ("auto", *CANDIDATES):
        raise DataError(f"calibration method must be one of auto, {', '.join(CANDIDATES)}, not '{method}'")
    y = np.asarray(y, dtype=np.int64)
    logits = logits.detach().double()
    n = len(y)
    unit = "image" if groups is None else "patient"
    none = Calibration("none")
    parts = cross_fit_parts(y, groups, folds, seed) if n else f"the fit set holds no {fit_name} images"
    if isinstance(parts, str):
        if method not in ("auto", "none"):
            raise DataError(
                f"cannot check {method} scaling on held-out {fit_name} images: {parts}; use --method auto or none"
            )
        return CalibrationChoice("none", none, method, {c: None for c in CANDIDATES}, 0, unit, n,
                                 f"kept uncalibrated: {parts}")  # fmt: skip
    held_proba = {c: np.zeros((n, 2 if binary else logits.shape[1])) for c in CANDIDATES}
    held_proba["none"] = probabilities(logits, binary).numpy()
    targets = torch.from_numpy(y)
    for held in parts:
        train = np.setdiff1d(np.arange(n), held)
        for candidate in METHODS:
            fitted = fit_calibration(logits[train], targets[train], binary, candidate)
            held_proba[candidate][held] = fitted.probabilities(logits[held], binary).numpy()
    losses = {c: -np.log(np.clip(p[np.arange(n), y], LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)) for c, p in held_proba.items()}
    nll = {c: float(losses[c].mean()) for c in CANDIDATES}
    how = f"{len(parts)}-fold cross-fitting{' by patient' if groups is not None else ''} on {n} {fit_name} images"
    if method == "auto":
        # The simplest candidate within one standard error (of the paired difference) of the lowest:
        # a more flexible fit must beat a simpler one by more than the noise.
        lowest = min(CANDIDATES, key=nll.__getitem__)
        best = next(
            c for c in CANDIDATES if nll[c] - nll[lowest] <= paired_se(losses[c] - losses[lowest], groups) + TIE
        )
        reason = (
            f"lowest held-out log loss ({how})"
            if best == lowest
            else f"within one standard error of {lowest}'s lower held-out log loss, and simpler ({how})"
        )
    else:
        best = method
        if method != "none" and nll[method] > nll["none"] + TIE:
            raise DataError(
                f"{method} scaling would make held-out log loss worse ({nll['none']:.4f} -> {nll[method]:.4f}, "
                f"{how}): the card keeps its current calibration; use --method auto or none"
            )
        reason = f"requested; held-out log loss {nll['none']:.4f} -> {nll[method]:.4f} ({how})"
    chosen = none if best == "none" else fit_calibration(logits, targets, binary, best)
    return CalibrationChoice(best, chosen, method, dict(nll), len(parts), unit, n, reason)
