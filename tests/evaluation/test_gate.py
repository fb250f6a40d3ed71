"""The promotion gate's paired bootstrap and its non-inferiority rule, on generated probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cnnlab.errors import DataError
from cnnlab.evaluation.calibration import ece_interval, reliability, weighted_ece
from cnnlab.evaluation.gate import Margins, paired_gate
from cnnlab.evaluation.metrics import resample_weights

CLASSES = ["normal", "pneumonia"]


def binary_set(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from calibrated probabilities of pneumonia: (y, (n, 2) probabilities)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, n)
    y = (rng.uniform(size=n) < p).astype(np.int64)
    return y, np.stack([1 - p, p], axis=1)


def sharpened(proba: np.ndarray, temperature: float) -> np.ndarray:
    """The same ranking and decisions, with the logit divided by `temperature` (< 1: overconfident)."""
    p = np.clip(proba[:, 1], 1e-9, 1 - 1e-9)
    q = 1 / (1 + np.exp(-np.log(p / (1 - p)) / temperature))
    return np.stack([1 - q, q], axis=1)


def noisy(proba: np.ndarray, sd: float, seed: int = 3) -> np.ndarray:
    """Another model: P(pneumonia) with noise added, so its ranking, decisions and calibration differ."""
    q = np.clip(proba[:, 1] + np.random.default_rng(seed).normal(0, sd, len(proba)), 0, 1)
    return np.stack([1 - q, q], axis=1)


def row(result, metric: str):
    return next(r for r in result.metrics if r.metric == metric)


def test_identical_probabilities_pass_with_zero_differences() -> None:
    y, proba = binary_set()
    result = paired_gate(y, proba, proba.copy(), CLASSES, resamples=200)
    assert result.passed and result.reasons == []
    for r in result.metrics:
        assert r.difference == 0 and r.ci_low == 0 and r.ci_high == 0 and r.passed
    assert row(result, "auc").candidate == pytest.approx(roc_auc_score(y, proba[:, 1]))
    assert row(result, "ece").candidate == pytest.approx(reliability(y, proba).ece)
    assert result.positive == ["pneumonia"] and result.unit == "image" and result.groups is None
    json.dumps(result.to_dict())  # JSON-safe


def test_a_shuffled_candidate_fails_on_auc_with_a_reason_naming_it() -> None:
    y, proba = binary_set()
    shuffled = proba[np.random.default_rng(1).permutation(len(y))]
    result = paired_gate(y, shuffled, proba, CLASSES, resamples=300)
    assert not result.passed
    auc = row(result, "auc")
    assert not auc.passed and auc.difference < -0.2 and auc.ci_high < 0
    assert any(
        reason.startswith("AUC is ") and "worse" in reason and "0.02 margin" in reason for reason in result.reasons
    )
    assert auc.reason in result.reasons


def test_an_equally_ranked_but_overconfident_candidate_fails_on_ece_only() -> None:
    y, proba = binary_set(2000)
    result = paired_gate(y, sharpened(proba, 0.25), proba, CLASSES, resamples=300)
    assert row(result, "auc").difference == pytest.approx(0, abs=1e-12)  # same ranking
    assert row(result, "sensitivity").difference == 0  # same decisions at 0.5
    assert row(result, "auc").passed and row(result, "sensitivity").passed
    ece = row(result, "ece")
    assert not ece.passed and ece.difference > 0.05 and ece.ci_low > 0.02
    assert len(result.reasons) == 1 and result.reasons[0].startswith("ECE is ")


def test_margins_decide_a_small_loss() -> None:
    y, proba = binary_set(2000)
    worse = noisy(proba, 0.1)
    strict = paired_gate(y, worse, proba, CLASSES, resamples=300, margins=Margins(auc=0.0, ece=1, sensitivity=1))
    loose = paired_gate(y, worse, proba, CLASSES, resamples=300, margins=Margins(auc=0.2, ece=1, sensitivity=1))
    assert not strict.passed and loose.passed
    assert row(strict, "auc").ci_low == row(loose, "auc").ci_low  # the same resamples: only the margin differs


def test_sensitivity_uses_each_models_own_operating_point() -> None:
    y, proba = binary_set()
    everyone = {"positive": ["pneumonia"], "value": 0.0}  # calls every image positive
    result = paired_gate(y, proba, proba, CLASSES, candidate_point=everyone, resamples=50)
    sens = row(result, "sensitivity")
    assert sens.candidate == 1.0
    assert sens.active == pytest.approx(np.mean(proba[y == 1, 1] >= 0.5))  # argmax without a point
    assert result.operating_points == {"candidate": everyone, "active": None}
    with pytest.raises(DataError, match="different positive classes: candidate pneumonia, active normal"):
        paired_gate(y, proba, proba, CLASSES, candidate_point=everyone,
                    active_point={"positive": ["normal"], "value": 0.5})  # fmt: skip


def test_multiclass_without_operating_points_uses_macro_auc_and_macro_recall() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + 2 * np.eye(3)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    result = paired_gate(y, proba, proba, ["a", "b", "c"], resamples=50)
    assert result.positive is None
    assert [r.label for r in result.metrics] == ["macro AUC", "macro sensitivity", "ECE"]
    macro_auc = np.mean([roc_auc_score(y == c, proba[:, c]) for c in range(3)])
    assert row(result, "auc").candidate == pytest.approx(macro_auc)
    recall = np.mean([np.mean(proba[y == c].argmax(axis=1) == c) for c in range(3)])
    assert row(result, "sensitivity").candidate == pytest.approx(recall)
    # A positive side from an operating point turns it into P(positive) vs rest.
    point = {"positive": ["b", "c"], "value": 0.5}
    binary = paired_gate(y, proba, proba, ["a", "b", "c"], active_point=point, resamples=50)
    assert row(binary, "auc").candidate == pytest.approx(roc_auc_score(y > 0, proba[:, 1:].sum(axis=1)))


def test_grouped_resampling_draws_whole_patients() -> None:
    # Every patient has three identical images: drawing whole patients is then exactly drawing one
    # image per patient, and the intervals must agree with the ungrouped gate on the collapsed set.
    y, proba = binary_set(120, seed=4)
    candidate = noisy(proba, 0.15)
    ids = np.array([f"p{i:03d}" for i in range(len(y))])  # sorted as np.unique numbers the patients
    grouped = paired_gate(np.repeat(y, 3), np.repeat(candidate, 3, axis=0), np.repeat(proba, 3, axis=0), CLASSES,
                          groups=np.repeat(ids, 3), resamples=200, seed=7)  # fmt: skip
    collapsed = paired_gate(y, candidate, proba, CLASSES, resamples=200, seed=7)
    by_image = paired_gate(np.repeat(y, 3), np.repeat(candidate, 3, axis=0), np.repeat(proba, 3, axis=0), CLASSES,
                           resamples=200, seed=7)  # fmt: skip
    assert grouped.unit == "patient" and grouped.groups == 120 and grouped.images == 360
    for a, b, c in zip(grouped.metrics, collapsed.metrics, by_image.metrics, strict=True):
        assert (a.ci_low, a.ci_high) == pytest.approx((b.ci_low, b.ci_high))
        assert c.ci_high - c.ci_low < a.ci_high - a.ci_low  # copies counted as independent: too narrow


def test_weighted_ece_is_the_calibration_modules_ece() -> None:
    y, proba = binary_set(500)
    proba = sharpened(proba, 0.5)
    assert weighted_ece(y, proba, np.ones((1, len(y))))[0] == pytest.approx(reliability(y, proba).ece)
    w = resample_weights(len(y), None, 400, 5)
    draws = weighted_ece(y, proba, w)
    low, high = ece_interval(y, proba, resamples=400, seed=5)
    assert (np.percentile(draws, 2.5), np.percentile(draws, 97.5)) == pytest.approx((low, high))


def test_bad_input_is_refused_in_one_line() -> None:
    y, proba = binary_set(50)
    with pytest.raises(DataError, match="no images"):
        paired_gate(y[:0], proba[:0], proba[:0], CLASSES)
    with pytest.raises(DataError, match="no negative"):
        paired_gate(np.ones(50, dtype=int), proba, proba, CLASSES)
    with pytest.raises(DataError, match="shape"):
        paired_gate(y, proba, proba[:, :1], CLASSES)
    with pytest.raises(DataError, match="--margin-auc"):
        Margins(auc=-0.1)
    with pytest.raises(DataError, match="--resamples"):
        paired_gate(y, proba, proba, CLASSES, resamples=0)
