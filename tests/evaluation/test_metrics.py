from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import recall_score

from cnnlab.evaluation.metrics import accuracy, confusion_matrix, per_class_accuracy


@pytest.mark.parametrize("seed", range(5))
def test_matches_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true, y_pred = rng.integers(0, 6, 300), rng.integers(0, 6, 300)
    cm = confusion_matrix(y_true, y_pred, 6)
    assert np.array_equal(cm, sk_confusion_matrix(y_true, y_pred, labels=range(6)))
    assert np.allclose(per_class_accuracy(cm), recall_score(y_true, y_pred, average=None, labels=range(6)), atol=1e-12)
    assert accuracy(cm) == pytest.approx(np.mean(y_true == y_pred), abs=1e-12)


def test_absent_class_is_nan_not_a_crash() -> None:
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 3)
    per_class = per_class_accuracy(cm)
    assert per_class[0] == 0.5 and per_class[1] == 1.0 and np.isnan(per_class[2])
