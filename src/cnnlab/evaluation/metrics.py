"""Classification metrics from labels and probabilities (no plotting, no I/O).

Conventions, chosen to match scikit-learn (tests compare every number with it):
- one-vs-rest per class: precision (= PPV), recall (= sensitivity), specificity, F1, NPV, support;
- a ratio whose denominator is zero (recall of a class absent from the labels, precision of a
  class never predicted) is undefined: NaN here, `None` in JSON, "n/a" in tables, and left out
  of macro and weighted averages (scikit-learn's `zero_division=np.nan`);
- ROC AUC is the Mann-Whitney statistic with ties counted half (scikit-learn's trapezoidal AUC);
  PR AUC is average precision; log loss clips probabilities to float64's eps; the Brier score is
  the multi-class one, the mean over images of sum_k (p_k - [y = k])^2, in [0, 2].

Bootstrap confidence intervals resample images, or whole patients when groups are given: a
resample is a vector of integer weights (how often each image was drawn), so one weighted
formula serves the point estimate (all weights 1) and every resample.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LOG_LOSS_EPS = float(np.finfo(np.float64).eps)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts: rows are the true class, columns the predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def row_normalised(cm: np.ndarray) -> np.ndarray:
    """Each true class's row as shares of its images (rows of absent classes stay 0)."""
    return cm / np.maximum(cm.sum(axis=-1, keepdims=True), 1)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class (correct / support); NaN for a class absent from the labels."""
    return _ratio(np.diag(cm), cm.sum(axis=1))


def accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def one_vs_rest(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class rates from confusion matrices (K, K) or a stack of them (B, K, K)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    fp = cm.sum(axis=-2) - tp
    fn = cm.sum(axis=-1) - tp
    tn = cm.sum(axis=(-2, -1))[..., None] - tp - fp - fn
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "support": tp + fn,
    }


def nan_average(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean over the defined (non-NaN) entries; NaN when none is defined."""
    values = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(values)
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    if not ok.any() or w[ok].sum() == 0:
        return float("nan")
    return float(np.sum(values[ok] * w[ok]) / w[ok].sum())


def roc_auc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """ROC AUC of `score` for the boolean labels `positive`, for each row of `weights` (B, n)
    (how often each image counts); NaN where one side has no weight. One row when weights is None."""
    w = np.ones((1, len(score))) if weights is None else np.atleast_2d(weights).astype(np.float64)
    order = np.argsort(score, kind="mergesort")
    s, pos = np.asarray(score)[order], np.asarray(positive, dtype=bool)[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # runs of tied scores
    ws = w[:, order]
    pos_w = np.add.reduceat(ws * pos, starts, axis=1)
    neg_w = np.add.reduceat(ws * ~pos, starts, axis=1)
    below = np.cumsum(neg_w, axis=1) - neg_w  # negative weight strictly below each score
    wins = np.sum(pos_w * (below + 0.5 * neg_w), axis=1)
    return _ratio(wins, pos_w.sum(axis=1) * neg_w.sum(axis=1))


def average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve as scikit-learn's average_precision_score:
    sum over thresholds of (R_n - R_{n-1}) P_n. NaN without positives."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = positive.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-np.asarray(score), kind="mergesort")
    s, pos = np.asarray(score)[order], positive[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last image of each run of tied scores
    tp = np.cumsum(pos)[last]
    predicted = (np.flatnonzero(last) + 1).astype(np.float64)
    precision, recall = tp / predicted, tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    p = np.clip(proba[np.arange(len(y)), y], LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return float(-np.mean(np.log(p)))


def brier(y: np.ndarray, proba: np.ndarray) -> float:
    onehot = np.eye(proba.shape[1])[y]
    return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))


def classification_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Every number of the per-class table and the summary, for one set of predictions."""
    y = np.asarray(y, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(classes)
    cm = confusion_matrix(y, proba.argmax(axis=1), k)
    rates = one_vs_rest(cm)
    support = rates["support"]
    auc = np.array([roc_auc(y == c, proba[:, c])[0] for c in range(k)])
    ap = np.array([average_precision(y == c, proba[:, c]) for c in range(k)])
    per_class = {
        name: {
            "support": int(support[c]),
            "precision": rates["precision"][c],
            "recall": rates["recall"][c],
            "specificity": rates["specificity"][c],
            "f1": rates["f1"][c],
            "npv": rates["npv"][c],
            "roc_auc": auc[c],
            "pr_auc": ap[c],
        }
        for c, name in enumerate(classes)
    }
    averages = {
        avg: {
            key: nan_average(rates[key], support if avg == "weighted" else None)
            for key in ("precision", "recall", "specificity", "f1", "npv")
        }
        for avg in ("macro", "weighted")
    }
    for avg in averages:
        averages[avg]["roc_auc"] = nan_average(auc, support if avg == "weighted" else None)
        averages[avg]["pr_auc"] = nan_average(ap, support if avg == "weighted" else None)
    return {
        "images": len(y),
        "accuracy": accuracy(cm),
        "balanced_accuracy": nan_average(rates["recall"]),
        "log_loss": log_loss(y, proba),
        "brier": brier(y, proba),
        "confusion_matrix": cm,
        "per_class": per_class,
        "averages": averages,
    }


@dataclass
class Interval:
    low: float
    high: float

    def to_list(self) -> list[float | None]:
        return [clean(self.low), clean(self.high)]


@dataclass
class BootstrapResult:
    resamples: int
    unit: str
    """What was resampled: "image" or "patient"."""
    accuracy: Interval
    macro_roc_auc: Interval
    per_class: dict[str, dict[str, Interval]] = field(default_factory=dict)
    level: float = 0.95

    def to_json(self) -> dict[str, Any]:
        return clean({"level": self.level, "resamples": self.resamples, "unit": self.unit, "accuracy": self.accuracy,
                      "macro_roc_auc": self.macro_roc_auc, "per_class": self.per_class})  # fmt: skip


def percentile_interval(values: np.ndarray, level: float = 0.95) -> Interval:
    """The central `level` share of the finite resampled values (NaN bounds when none is finite)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return Interval(float("nan"), float("nan"))
    lo, hi = np.percentile(values, ((1 - level) / 2 * 100, (1 + level) / 2 * 100))
    return Interval(float(lo), float(hi))


def resample_weights(n: int, groups: np.ndarray | None, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) integer weights: each row draws len(units) units with replacement, where a
    unit is an image, or a patient with all of its images."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    _, unit = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    g = unit.max() + 1
    counts = rng.multinomial(g, np.full(g, 1.0 / g), size=resamples)
    return counts[:, unit].astype(np.float64)


def bootstrap(
    y: np.ndarray,
    proba: np.ndarray,
    classes: list[str],
    groups: np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapResult:
    """Percentile bootstrap intervals for accuracy, per-class sensitivity, specificity and ROC
    AUC, and macro ROC AUC. A resample in which a statistic is undefined (no positives drawn)
    is left out of that statistic's interval."""
    y = np.asarray(y, dtype=np.int64)
    k = len(classes)
    w = resample_weights(len(y), groups, resamples, seed)
    pred = np.asarray(proba).argmax(axis=1)
    cells = np.eye(k * k)[y * k + pred]  # (n, K*K): each image's confusion-matrix cell
    cms = (w @ cells).reshape(-1, k, k)
    rates = one_vs_rest(cms)
    acc = np.trace(cms, axis1=1, axis2=2) / w.sum(axis=1)
    aucs = np.stack([roc_auc(y == c, proba[:, c], w) for c in range(k)], axis=1)  # (B, K)
    present = [c for c in range(k) if 0 < np.sum(y == c) < len(y)]
    with warnings.catch_warnings():  # all-NaN rows (no positives drawn) are expected here
        warnings.simplefilter("ignore", RuntimeWarning)
        macro = np.nanmean(aucs[:, present], axis=1) if present else np.full(len(w), np.nan)

    def interval(values: np.ndarray) -> Interval:
        return percentile_interval(values, level)

    return BootstrapResult(
        level=level,
        resamples=resamples,
        unit="image" if groups is None else "patient",
        accuracy=interval(acc),
        macro_roc_auc=interval(macro),
        per_class={
            name: {
                "recall": interval(rates["recall"][:, c]),
                "specificity": interval(rates["specificity"][:, c]),
                "roc_auc": interval(aucs[:, c]),
            }
            for c, name in enumerate(classes)
        },
    )


def clean(value: Any) -> Any:
    """JSON-ready: NaN -> None, numpy scalars and arrays -> Python, recursively."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, Interval):
        return value.to_list()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if np.isnan(value) else float(value)
    return value


def wilson_interval(successes: int, n: int, level: float = 0.95) -> Interval:
    """Wilson's score interval of a proportion: honest at small n and at 0 or n successes, where the
    normal approximation collapses to a point (NaN bounds when n is 0)."""
    if n <= 0:
        return Interval(float("nan"), float("nan"))
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1 + level) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(float(max(0.0, centre - half)), float(min(1.0, centre + half)))
