from __future__ import annotations

import pytest

from cnnlab.evaluation.diagnosis import diagnose


def history(train_loss, val_loss, train_acc=None, val_acc=None):
    n = len(train_loss)
    train_acc = train_acc or [0.9] * n
    val_acc = val_acc or [0.9] * n
    return [
        {"epoch": i + 1, "train_loss": tl, "val_loss": vl, "train_acc": ta, "val_acc": va}
        for i, (tl, vl, ta, va) in enumerate(zip(train_loss, val_loss, train_acc, val_acc, strict=True))
    ]


def test_overfitting_names_the_epoch_it_began() -> None:
    d = diagnose(history([1.0, 0.6, 0.4, 0.25, 0.15, 0.08], [0.9, 0.6, 0.5, 0.55, 0.62, 0.7]), 10)
    assert d.verdict == "overfitting" and d.began_epoch == 4
    assert "epoch 3" in d.reason and "augmentation" in d.suggestion


def test_overfitting_by_accuracy_gap() -> None:
    d = diagnose(
        history(
            [0.5, 0.3, 0.2, 0.1, 0.05],
            [0.50, 0.45, 0.47, 0.47, 0.48],
            [0.8, 0.9, 0.95, 0.99, 1.0],
            [0.8, 0.84, 0.84, 0.84, 0.84],
        ),
        10,
    )
    assert d.verdict == "overfitting"


def test_underfitting_high_and_flat() -> None:
    d = diagnose(history([2.30, 2.25, 2.22, 2.21, 2.21, 2.20], [2.3, 2.26, 2.23, 2.22, 2.22, 2.21]), 10)
    assert d.verdict == "underfitting" and "larger model" in d.suggestion


def test_not_converged_when_still_improving() -> None:
    d = diagnose(history([1.0, 0.7, 0.5, 0.4, 0.32], [1.0, 0.75, 0.55, 0.45, 0.38]), 10)
    assert d.verdict == "not converged" and "more epochs" in d.suggestion


def test_good_fit() -> None:
    d = diagnose(history([1.0, 0.5, 0.3, 0.25, 0.24, 0.235], [0.9, 0.5, 0.33, 0.30, 0.298, 0.299]), 10)
    assert d.verdict == "good fit"


@pytest.mark.parametrize("n", [0, 1, 2])
def test_too_short(n: int) -> None:
    assert diagnose(history([1.0] * n, [1.0] * n), 10).verdict == "too short to judge"


def test_low_loss_plateau_is_not_underfitting() -> None:
    # A model that fits fast and then barely moves is not underfitting.
    d = diagnose(history([0.12, 0.08, 0.075, 0.074, 0.074], [0.10, 0.09, 0.088, 0.088, 0.0885]), 10)
    assert d.verdict == "good fit"


def test_a_memorised_training_set_is_overfitting_even_when_validation_loss_settles() -> None:
    # lite0-flowers' shape: train 99.9%, val 91.6%, validation loss flat at its best
    rows = [{"epoch": e + 1, "train_loss": 0.5 / (e + 1), "val_loss": 0.30 if e else 0.5,
             "train_acc": 0.90 + 0.099 * e / 5, "val_acc": 0.916} for e in range(6)]  # fmt: skip
    verdict = diagnose(rows, 5)
    assert verdict.verdict == "overfitting" and "8.3 points" in verdict.reason
    # the same gap with a training error that is not small beside the validation error is not memorising
    rows = [{**r, "train_acc": 0.80, "val_acc": 0.74} for r in rows]
    assert diagnose(rows, 5).verdict != "overfitting"
