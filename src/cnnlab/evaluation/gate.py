"""A promotion gate: is a candidate model no worse than the active one on the same labelled images?

Both models' calibrated probabilities for the same images are compared by a paired bootstrap: each
resample draws images (or whole patients, when groups are given) once, and both models are scored
on that same draw, so the interval is of the difference itself and the images' shared difficulty
cancels out. Three metrics, each candidate - active:

- AUC: of P(positive) (the positive classes' summed probability) against the rest when there is a
  positive side, else macro one-vs-rest;
- sensitivity: at each model's own operating point (`{"positive": [...], "value": t}`: positive when
  P(positive) >= t); a model without one calls positive when its top class is a positive class;
  with no positive side, macro recall;
- ECE (15 equal-width bins of the top-1 confidence, as `cnnlab.evaluation.calibration` measures it).

Non-inferiority: the gate passes only when, for every metric, the bound of the difference's interval
on the bad side is within its margin (AUC and sensitivity may be at most the margin lower, ECE at most
the margin higher). A point estimate that looks fine is not enough: too few images to tell refuses.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnlab.errors import DataError
from cnnlab.evaluation.calibration import weighted_ece
from cnnlab.evaluation.metrics import clean, one_vs_rest, percentile_interval, resample_weights, roc_auc
from cnnlab.evaluation.operating import positive_score


@dataclass(frozen=True)
class Margins:
    """How much worse the candidate may be: AUC and sensitivity lower, ECE higher."""

    auc: float = 0.02
    sensitivity: float = 0.05
    ece: float = 0.02

    def __post_init__(self) -> None:
        for name, value in (("auc", self.auc), ("sensitivity", self.sensitivity), ("ece", self.ece)):
            if not value >= 0:
                raise DataError(f"--margin-{name} must be 0 or more, not {value}")


@dataclass(frozen=True)
class MetricRow:
    metric: str
    """auc, sensitivity or ece."""
    label: str
    """What a reader calls it: `AUC`, `macro AUC`, `sensitivity`, `macro sensitivity`, `ECE`."""
    candidate: float
    active: float
    difference: float
    """candidate - active."""
    ci_low: float
    ci_high: float
    margin: float
    higher_is_better: bool
    passed: bool
    reason: str | None = None
    """One sentence when it failed."""

    def to_dict(self) -> dict[str, Any]:
        return clean(
            {
                "metric": self.metric,
                "label": self.label,
                "candidate": self.candidate,
                "active": self.active,
                "difference": self.difference,
                "ci": [self.ci_low, self.ci_high],
                "margin": self.margin,
                "higher_is_better": self.higher_is_better,
                "passed": self.passed,
                "reason": self.reason,
            }
        )


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]
    """One sentence per failed metric."""
    metrics: list[MetricRow]
    margins: Margins
    images: int
    groups: int | None
    """Patients resampled (None: images were resampled one by one)."""
    resamples: int
    seed: int
    level: float
    positive: list[str] | None
    """The positive classes (None: multiclass, macro averages)."""
    operating_points: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """Each model's ("candidate", "active") operating point as its card holds it (None: by top class)."""

    @property
    def unit(self) -> str:
        return "image" if self.groups is None else "patient"

    def to_dict(self) -> dict[str, Any]:
        return clean(
            {
                "passed": self.passed,
                "reasons": self.reasons,
                "metrics": [row.to_dict() for row in self.metrics],
                "margins": {"auc": self.margins.auc, "sensitivity": self.margins.sensitivity, "ece": self.margins.ece},
                "images": self.images,
                "groups": self.groups,
                "unit": self.unit,
                "resamples": self.resamples,
                "seed": self.seed,
                "level": self.level,
                "positive": self.positive,
                "operating_points": self.operating_points,
            }
        )


def paired_gate(
    y: np.ndarray,
    candidate: np.ndarray,
    active: np.ndarray,
    classes: list[str],
    *,
    candidate_point: dict[str, Any] | None = None,
    active_point: dict[str, Any] | None = None,
    groups: np.ndarray | None = None,
    margins: Margins = Margins(),
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> GateResult:
    """Compare the (N, K) probabilities `candidate` and `active` of the same N images with labels
    `y` (indices into `classes`) by a paired bootstrap, and apply the non-inferiority rule.
    Operating points are the cards' `threshold` dicts; `groups` (one id per image) makes each
    resample draw whole patients."""
    y = np.asarray(y, dtype=np.int64)
    candidate, active = np.asarray(candidate, dtype=np.float64), np.asarray(active, dtype=np.float64)
    _check(y, candidate, active, classes, groups, resamples, level)
    positive = _positive_classes(classes, candidate_point, active_point)
    is_pos = np.isin(y, [classes.index(c) for c in positive]) if positive else None
    if is_pos is not None and (is_pos.all() or not is_pos.any()):
        side = "negative" if is_pos.all() else "positive"
        raise DataError(f"the images hold no {side} ones ({', '.join(positive or [])} vs rest): AUC is undefined")
    if is_pos is None and len(np.unique(y)) < 2:
        raise DataError(f"the images hold one class ({classes[y[0]]}): AUC is undefined")
    # Row 0 weighs every image once (the point estimates); the others are the paired resamples.
    w = np.vstack([np.ones(len(y)), resample_weights(len(y), groups, resamples, seed)])

    def auc(proba: np.ndarray) -> np.ndarray:
        if positive:
            return roc_auc(is_pos, positive_score(proba, classes, positive), w)
        present = [c for c in range(len(classes)) if 0 < np.sum(y == c) < len(y)]
        return _nanmean(np.stack([roc_auc(y == c, proba[:, c], w) for c in present], axis=1))

    def sensitivity(proba: np.ndarray, point: dict[str, Any] | None) -> np.ndarray:
        if positive:
            if point:
                called = positive_score(proba, classes, positive) >= float(point["value"])
            else:
                called = np.isin(proba.argmax(axis=1), [classes.index(c) for c in positive])
            return _weighted_share(w, called & is_pos, is_pos)
        k = len(classes)
        cells = np.eye(k * k)[y * k + proba.argmax(axis=1)]  # each image's confusion-matrix cell
        return _nanmean(one_vs_rest((w @ cells).reshape(-1, k, k))["recall"])

    multi = "" if positive else "macro "
    rows = [
        _row("auc", f"{multi}AUC", auc(candidate), auc(active), margins.auc, True, level),
        _row(
            "sensitivity",
            f"{multi}sensitivity",
            sensitivity(candidate, candidate_point),
            sensitivity(active, active_point),
            margins.sensitivity,
            True,
            level,
        ),
        _row("ece", "ECE", weighted_ece(y, candidate, w), weighted_ece(y, active, w), margins.ece, False, level),
    ]
    reasons = [row.reason for row in rows if row.reason]
    return GateResult(
        passed=not reasons,
        reasons=reasons,
        metrics=rows,
        margins=margins,
        images=len(y),
        groups=None if groups is None else len(np.unique(np.asarray(groups).astype(str))),
        resamples=resamples,
        seed=seed,
        level=level,
        positive=positive,
        operating_points={"candidate": candidate_point or None, "active": active_point or None},
    )


def _check(
    y: np.ndarray,
    candidate: np.ndarray,
    active: np.ndarray,
    classes: list[str],
    groups: np.ndarray | None,
    resamples: int,
    level: float,
) -> None:
    if len(y) == 0:
        raise DataError("no images to compare the models on")
    shape = (len(y), len(classes))
    if candidate.shape != shape or active.shape != shape:
        raise DataError(f"probabilities of shape {candidate.shape} and {active.shape}; expected {shape}")
    if y.min() < 0 or y.max() >= len(classes):
        raise DataError(f"labels must be class indices 0..{len(classes) - 1}")
    if groups is not None and len(groups) != len(y):
        raise DataError(f"{len(groups)} patient ids for {len(y)} images")
    check_resamples(resamples)
    if not 0 < level < 1:
        raise DataError(f"the interval's level must be in (0, 1), not {level}")


def check_resamples(resamples: int) -> None:
    """Without a resample there is no interval, and so no verdict."""
    if resamples < 1:
        raise DataError(f"--resamples must be at least 1, not {resamples}")


def _positive_classes(
    classes: list[str], candidate_point: dict[str, Any] | None, active_point: dict[str, Any] | None
) -> list[str] | None:
    """The operating points' positive classes (both must name the same), else a binary model's
    second class, else None (multiclass: macro averages)."""
    named = [list(p["positive"]) for p in (candidate_point, active_point) if p]
    for side in named:
        unknown = [c for c in side if c not in classes]
        if unknown:
            raise DataError(
                f"the operating point names {', '.join(unknown)}, not among the classes ({', '.join(classes)})"
            )
    if len(named) == 2 and set(named[0]) != set(named[1]):
        raise DataError(
            f"the operating points name different positive classes: candidate {', '.join(named[0])}, "
            f"active {', '.join(named[1])}"
        )
    if named:
        return [c for c in classes if c in named[0]]
    return [classes[1]] if len(classes) == 2 else None


def _weighted_share(w: np.ndarray, hit: np.ndarray, of: np.ndarray) -> np.ndarray:
    """sum(w * hit) / sum(w * of) per row of weights; NaN where nothing of `of` was drawn."""
    num, den = w @ hit.astype(np.float64), w @ of.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _nanmean(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # a resample that drew no image of a class leaves it NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=1)


def _row(
    metric: str,
    label: str,
    candidate: np.ndarray,
    active: np.ndarray,
    margin: float,
    higher_is_better: bool,
    level: float,
) -> MetricRow:
    diff = candidate - active
    ci = percentile_interval(diff[1:], level)
    bound = ci.low if higher_is_better else ci.high
    worse = -diff[0] if higher_is_better else diff[0]
    interval = f"{level:.0%} CI of the difference {ci.low:.3f} to {ci.high:.3f}"
    if not np.isfinite(bound):
        passed, reason = False, f"{label} could not be compared: it is undefined on these images"
    else:
        passed = bool(-bound <= margin) if higher_is_better else bool(bound <= margin)
        reason = None
        if not passed:
            how = f"is {worse:.3f} worse" if worse > 0 else f"could be up to {abs(bound):.3f} worse"
            reason = f"{label} {how} ({interval}), beyond the {margin:g} margin"
    return MetricRow(
        metric=metric,
        label=label,
        candidate=float(candidate[0]),
        active=float(active[0]),
        difference=float(diff[0]),
        ci_low=ci.low,
        ci_high=ci.high,
        margin=margin,
        higher_is_better=higher_is_better,
        passed=passed,
        reason=reason,
    )
