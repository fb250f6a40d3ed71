"""Every metric against scikit-learn (to 1e-9), edge cases, and the bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from cnnlab.evaluation.metrics import (
    accuracy,
    bootstrap,
    classification_metrics,
    clean,
    confusion_matrix,
    per_class_accuracy,
    resample_weights,
    roc_auc,
    row_normalised,
)

TOL = 1e-9


def random_predictions(seed: int, n: int = 300, k: int = 4, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]  # better than chance, not perfect
    if ties:  # coarse probabilities: many tied scores, the hard case for AUC and AP
        logits = np.round(logits)
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


@pytest.mark.parametrize("seed,ties", [(0, False), (1, False), (2, True), (3, True)])
def test_every_number_matches_scikit_learn(seed: int, ties: bool) -> None:
    k = 4
    y, proba = random_predictions(seed, k=k, ties=ties)
    pred = proba.argmax(axis=1)
    labels = list(range(k))
    m = classification_metrics(y, proba, list("abcd"))

    assert np.array_equal(m["confusion_matrix"], sk.confusion_matrix(y, pred, labels=labels))
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=TOL)
    assert m["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred), abs=TOL)
    assert m["log_loss"] == pytest.approx(sk.log_loss(y, proba, labels=labels), abs=TOL)
    assert m["brier"] == pytest.approx(sk.brier_score_loss(y, proba, labels=labels, scale_by_half=False), abs=TOL)
    precision, recall, f1, support = sk.precision_recall_fscore_support(y, pred, labels=labels, zero_division=np.nan)
    for c, name in enumerate("abcd"):
        row = m["per_class"][name]
        not_c_true, not_c_pred = y != c, pred != c
        assert row["precision"] == pytest.approx(precision[c], abs=TOL)
        assert row["recall"] == pytest.approx(recall[c], abs=TOL)
        assert row["f1"] == pytest.approx(f1[c], abs=TOL)
        assert row["support"] == support[c]
        assert row["specificity"] == pytest.approx(sk.recall_score(not_c_true, not_c_pred), abs=TOL)
        assert row["npv"] == pytest.approx(sk.precision_score(not_c_true, not_c_pred), abs=TOL)
        assert row["roc_auc"] == pytest.approx(sk.roc_auc_score(y == c, proba[:, c]), abs=TOL)
        assert row["pr_auc"] == pytest.approx(sk.average_precision_score(y == c, proba[:, c]), abs=TOL)
    for avg in ("macro", "weighted"):
        a = m["averages"][avg]
        assert a["precision"] == pytest.approx(sk.precision_score(y, pred, average=avg), abs=TOL)
        assert a["recall"] == pytest.approx(sk.recall_score(y, pred, average=avg), abs=TOL)
        assert a["f1"] == pytest.approx(sk.f1_score(y, pred, average=avg), abs=TOL)
        assert a["roc_auc"] == pytest.approx(sk.roc_auc_score(y, proba, multi_class="ovr", average=avg), abs=TOL)
        assert a["pr_auc"] == pytest.approx(sk.average_precision_score(np.eye(k)[y], proba, average=avg), abs=TOL)


def test_weighted_auc_equals_auc_of_the_repeated_sample() -> None:
    """A bootstrap resample is integer weights: the AUC with weights w must equal the AUC of the
    data with each image repeated w times."""
    y, proba = random_predictions(7, n=80, ties=True)
    w = resample_weights(len(y), None, 5, seed=3)
    for row in w:
        idx = np.repeat(np.arange(len(y)), row.astype(int))
        expected = sk.roc_auc_score(y[idx] == 1, proba[idx, 1])
        assert roc_auc(y == 1, proba[:, 1], row[None])[0] == pytest.approx(expected, abs=TOL)


def test_a_class_absent_from_the_split_is_undefined_not_a_crash() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    proba = np.array(
        [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.5, 0.1, 0.4], [0.1, 0.8, 0.1]]
    )
    m = classification_metrics(y, proba, ["a", "b", "c"])
    c = m["per_class"]["c"]
    assert np.isnan(c["recall"]) and np.isnan(c["roc_auc"]) and np.isnan(c["pr_auc"]) and c["support"] == 0
    assert c["specificity"] == pytest.approx(5 / 6)  # one image wrongly called c
    # Averages leave undefined classes out, as scikit-learn does with zero_division=nan.
    assert m["averages"]["macro"]["recall"] == pytest.approx(
        sk.recall_score(y, proba.argmax(1), labels=[0, 1, 2], average="macro", zero_division=np.nan)
    )
    assert m["averages"]["macro"]["roc_auc"] == pytest.approx(
        np.mean([sk.roc_auc_score(y == k, proba[:, k]) for k in (0, 1)])
    )
    assert m["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, proba.argmax(1)))
    js = clean(m)
    assert js["per_class"]["c"]["recall"] is None and isinstance(js["accuracy"], float)
    ci = bootstrap(y, proba, ["a", "b", "c"], resamples=50)
    assert np.isnan(ci.per_class["c"]["roc_auc"].low) and ci.accuracy.low <= m["accuracy"] <= ci.accuracy.high


def test_a_single_predicted_class_gives_defined_numbers() -> None:
    y = np.array([0, 1, 2, 1, 0, 2, 1])
    proba = np.tile([0.2, 0.5, 0.3], (len(y), 1))  # always class 1, every score tied
    m = classification_metrics(y, proba, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 7)
    assert np.isnan(m["per_class"]["a"]["precision"])  # never predicted: undefined
    assert m["per_class"]["a"]["recall"] == 0.0
    assert m["per_class"]["b"]["roc_auc"] == pytest.approx(0.5)  # all ties: chance
    assert np.isfinite(m["log_loss"]) and np.isfinite(m["brier"])


def test_confusion_helpers() -> None:
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 3)
    assert per_class_accuracy(cm)[0] == 0.5 and np.isnan(per_class_accuracy(cm)[2])
    assert accuracy(cm) == pytest.approx(2 / 3)
    assert np.allclose(row_normalised(cm).sum(axis=1), [1, 1, 0])


def test_bootstrap_intervals_cover_the_estimate_and_narrow_with_more_data() -> None:
    y, proba = random_predictions(11, n=200)
    small = bootstrap(y[:50], proba[:50], list("abcd"), resamples=400, seed=0)
    large = bootstrap(y, proba, list("abcd"), resamples=400, seed=0)
    acc = float(np.mean(proba.argmax(1) == y))
    assert large.accuracy.low <= acc <= large.accuracy.high
    assert (large.accuracy.high - large.accuracy.low) < (small.accuracy.high - small.accuracy.low)
    assert large.unit == "image"


def test_patient_bootstrap_resamples_whole_patients() -> None:
    groups = np.repeat(np.arange(10), 3)  # 10 patients, 3 images each
    w = resample_weights(30, groups, 200, seed=1)
    assert np.all(w.sum(axis=1) == 30)
    # Every image of a patient is drawn the same number of times.
    assert np.all(w.reshape(200, 10, 3).std(axis=2) == 0)
    y, proba = random_predictions(5, n=30)
    assert bootstrap(y, proba, list("abcd"), groups=groups, resamples=100).unit == "patient"
