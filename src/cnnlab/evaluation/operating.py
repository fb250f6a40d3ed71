"""Operating points: one threshold on P(positive) turns probabilities into a clinical decision.

"Positive" is one class or several (`pneumonia`, `pneumonia,covid19`, or `not normal` for every
class but normal); its score is the sum of their probabilities. The threshold is chosen on the
validation split, either as the highest one that still reaches a target sensitivity (the most
specific test that misses no more than allowed) or as the one maximising Youden's J
(sensitivity + specificity - 1), and then reported on the test split. The card stores
`{"positive": [...], "value": t, ...}`; prediction and serving apply it (`operating_decision`).

It may instead be chosen on another fit set (the out-of-fold predictions of a k-fold run): the card's
`chosen_on` names it, `val` holds the rates on it (the key keeps its old name) and `fit_intervals`
their bootstrap intervals, with the threshold held fixed (the variance of choosing it is not in them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnlab.config import did_you_mean
from cnnlab.errors import DataError
from cnnlab.evaluation.metrics import percentile_interval, resample_weights


def parse_positive(text: str, classes: list[str]) -> list[str]:
    """`pneumonia`, `pneumonia,covid19` or `not normal` -> the positive class names."""
    text = text.strip()
    negate = text.lower().startswith("not ")
    names = [n.strip() for n in (text[4:] if negate else text).split(",") if n.strip()]
    for name in names:
        if name not in classes:
            raise DataError(f"unknown class '{name}'{did_you_mean(name, classes)}; classes: {', '.join(classes)}")
    chosen = [c for c in classes if (c in names) != negate]
    if not chosen or len(chosen) == len(classes):
        raise DataError(f"--positive '{text}' must leave at least one class on each side")
    return chosen


def positive_score(proba: np.ndarray, classes: list[str], positive: list[str]) -> np.ndarray:
    """P(positive) of each row of (N, C) probabilities: the sum over the positive classes."""
    return proba[:, [classes.index(c) for c in positive]].sum(axis=1)


def operating_decision(point: dict[str, Any] | None, classes: list[str], row: np.ndarray) -> str | None:
    """The card's operating point, `{"positive": [class, ...], "value": t}`, applied to one row of
    probabilities: `positive` when P(positive) reaches the threshold, else `negative`."""
    if not point:
        return None
    score = float(positive_score(row[None], classes, point["positive"])[0])
    return "positive" if score >= float(point["value"]) else "negative"


def rates_at(score: np.ndarray, is_pos: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, PPV and NPV of the rule `score >= threshold` (NaN if undefined)."""
    called = score >= threshold
    tp = float(np.sum(called & is_pos))
    fp = float(np.sum(called & ~is_pos))
    fn = float(np.sum(~called & is_pos))
    tn = float(np.sum(~called & ~is_pos))

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    return {
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def choose_threshold(score: np.ndarray, is_pos: np.ndarray, target_sensitivity: float | None = None) -> float:
    """The validation threshold: the highest reaching `target_sensitivity`, else Youden's J."""
    if is_pos.all() or not is_pos.any():
        raise DataError("the validation split needs both positive and negative images to choose an operating point")
    candidates = np.unique(score)[::-1]  # high to low: sensitivity only grows
    pos, neg = is_pos.sum(), (~is_pos).sum()
    sens = np.array([np.sum(score[is_pos] >= t) for t in candidates]) / pos
    spec = np.array([np.sum(score[~is_pos] < t) for t in candidates]) / neg
    if target_sensitivity is not None:
        if not 0.0 < target_sensitivity <= 1.0:
            raise DataError(f"--target-sensitivity must be in (0, 1], not {target_sensitivity}")
        return float(candidates[np.flatnonzero(sens >= target_sensitivity)[0]])
    return float(candidates[int(np.argmax(sens + spec - 1))])


@dataclass
class OperatingPoint:
    positive: list[str]
    value: float
    method: str
    target_sensitivity: float | None
    val: dict[str, float]
    """Rates on the set the threshold was chosen on (`chosen_on`; the validation split by default)."""
    test: dict[str, float] | None = None
    test_intervals: dict[str, list[float | None]] | None = None
    chosen_on: str = "val"
    fit_intervals: dict[str, list[float | None]] | None = None
    """Bootstrap intervals of `val`'s rates (by patient when groups were given)."""

    def to_card(self) -> dict[str, Any]:
        card = {
            "positive": self.positive,
            "value": self.value,
            "method": self.method,
            "target_sensitivity": self.target_sensitivity,
            "chosen_on": self.chosen_on,
            "val": self.val,
        }
        if self.fit_intervals is not None:
            card["fit_intervals"] = self.fit_intervals
        return card


def fit_operating_point(
    val_proba: np.ndarray,
    val_y: np.ndarray,
    classes: list[str],
    positive: list[str],
    target_sensitivity: float | None = None,
    groups: np.ndarray | None = None,
    resamples: int = 0,
    seed: int = 0,
    chosen_on: str = "val",
) -> OperatingPoint:
    """Choose the threshold on (val_proba, val_y), the validation split or the set `chosen_on`
    names; with `resamples`, add bootstrap intervals of its rates there (by patient with groups)."""
    is_pos = np.isin(val_y, [classes.index(c) for c in positive])
    score = positive_score(val_proba, classes, positive)
    threshold = choose_threshold(score, is_pos, target_sensitivity)
    method = "target sensitivity" if target_sensitivity is not None else "youden"
    point = OperatingPoint(
        positive, threshold, method, target_sensitivity, rates_at(score, is_pos, threshold), chosen_on=chosen_on
    )
    if resamples:
        _, point.fit_intervals = evaluate_operating_point(
            point.to_card(), val_proba, val_y, classes, groups, resamples, seed
        )
    return point


def evaluate_operating_point(
    point: dict[str, Any],
    proba: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    groups: np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, list[float | None]]]:
    """Rates of a stored operating point on a split, with percentile bootstrap intervals."""
    positive = point["positive"]
    is_pos = np.isin(y, [classes.index(c) for c in positive])
    called = positive_score(proba, classes, positive) >= float(point["value"])
    rates = rates_at(called.astype(float), is_pos, 0.5)
    if resamples == 0:
        return rates, {key: [None, None] for key in ("sensitivity", "specificity", "ppv", "npv")}
    w = resample_weights(len(y), groups, resamples, seed)
    tp, fp = w @ (called & is_pos), w @ (called & ~is_pos)
    fn, tn = w @ (~called & is_pos), w @ (~called & ~is_pos)
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
        }
    return rates, {key: percentile_interval(values).to_list() for key, values in draws.items()}
